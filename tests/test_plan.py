"""plan: the highest sustainable rate per configuration by search, the replicas and money for a load, the cheapest
and the Pareto front, the command line that starts it; the same rows from a process pool, Ray or one process; an
interrupted plan resumes."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from tests.helpers import rows, run_command

PLAN = {
    "name": "plan-test",
    "base": {"profile": "dsocr-standard-v1"},
    "sweep": {"hardware": ["l40s", "a100-40g"], "runtime": ["vllm"], "weights_dtype": ["bf16", "fp8"]},
    "serving": {"cpu_workers": 16, "pages": {"count": 120, "seed": 3},
                "page_mix": {"new_tokens": {"median": 300, "p90": 300, "max": 300}}},
    "target": {"pages_per_day": 400000, "ttft_p99_s": 3.0, "page_latency_p99_s": 20.0},
    "plan": {"engines": ["vllm-v1"], "max_num_seqs": [8, 64], "max_num_batched_tokens": [8192],
             "prices": {"l40s": 1.0, "a100-40g": 1.5}},
}


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plan")
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(PLAN))
    db = str(folder / "r.duckdb")
    result = run_command(["plan", "--scenario", str(path), "--db", db, "--workers", "2", "--format", "json"])
    assert result.exit_code == 0, result.output
    return {"folder": folder, "path": path, "db": db, "output": json.loads(result.output)}


def tasks_of(planned):
    from registry.pricing.whatif import load_scenario
    from registry.store.db import Registry
    from registry.store.plans import candidates, plan_spec

    scenario = load_scenario(planned["path"])
    registry = Registry(planned["db"])
    try:
        return candidates(registry, scenario, plan_spec(scenario))
    finally:
        registry.dispose()


def test_the_rate_found_meets_the_slos_and_1_percent_more_does_not(planned):
    from registry.serving.plan import rate_ceiling, simulate_at

    rows_by_index = {r["candidate_index"]: r for r in planned["output"]["candidates"]}
    checked = 0
    for candidate in tasks_of(planned):
        row = rows_by_index[candidate.index]
        if candidate.task is None:
            assert row["status"] == "unsupported" and candidate.hardware == "a100-40g"
            assert candidate.weights_dtype == "fp8"
            continue
        assert row["status"] == "ok", row
        task, best = candidate.task, row["best_rate_per_s"]
        assert task.slo.met(simulate_at(task, best))
        ceiling = rate_ceiling(task, 300.0)
        if best < ceiling:
            assert not task.slo.met(simulate_at(task, best * 1.01)), row
            checked += 1
        else:
            assert best == pytest.approx(ceiling)
    assert checked >= 2  # the small max_num_seqs configurations are held by their TTFT, not a ceiling


def test_replicas_carry_the_load_and_the_cheapest_meets_every_slo(planned):
    load = PLAN["target"]["pages_per_day"] / 86400
    ok = [r for r in planned["output"]["candidates"] if r["status"] == "ok"]
    assert len(ok) == 6
    for row in ok:
        assert row["replicas"] * row["best_rate_per_s"] >= load
        assert (row["replicas"] - 1) * row["best_rate_per_s"] < load
        price = PLAN["plan"]["prices"][row["hardware"]]
        assert row["monthly_usd"] == pytest.approx(row["replicas"] * price * 730)
        assert row["usd_per_1000_pages"] == pytest.approx(row["replicas"] * price / 3.6 / load)
        assert row["ttft_p99_s"] <= 3.0 and row["page_latency_p99_s"] <= 20.0
    cheapest = planned["output"]["cheapest"]
    assert cheapest["monthly_usd"] == min(r["monthly_usd"] for r in ok) and cheapest["cost_rank"] == 1
    front = planned["output"]["pareto_front"]
    for row in ok:  # nothing off the front beats a front member on both cost and latency
        for member in front:
            assert not (row["monthly_usd"] < member["monthly_usd"]
                        and row["page_latency_p99_s"] < member["page_latency_p99_s"])


def test_the_command_line_carries_the_searched_settings(planned):
    from registry.serving.plan import parse_serve_command

    for row in planned["output"]["candidates"]:
        if row["status"] == "unsupported":
            continue
        parsed = parse_serve_command(row["command"])
        assert parsed == {"engine": "vllm", "max_num_seqs": row["max_num_seqs"],
                          "max_num_batched_tokens": row["max_num_batched_tokens"],
                          "weights_dtype": row["weights_dtype"], "kv_cache_dtype": row["kv_cache_dtype"]}
        assert row["command"].startswith("vllm serve deepseek-ai/DeepSeek-OCR ")
    from registry.serving.plan import serve_command

    line = serve_command("deepseek-ai/DeepSeek-OCR-2", "sglang", 96, 4096, 0.85, "fp8", "fp8")
    assert parse_serve_command(line) == {"engine": "sglang", "max_num_seqs": 96, "max_num_batched_tokens": 4096,
                                         "gpu_memory_utilization": 0.85, "weights_dtype": "fp8",
                                         "kv_cache_dtype": "fp8"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_process_a_pool_and_ray_give_the_same_rows(planned, tmp_path):
    """The searches are the same wherever they run: in this process, in a local pool, as Ray tasks on a local
    cluster started on loopback; and the rows `plan --ray` stores equal the pool's."""
    from registry.serving.plan import run_tasks

    tasks = [c.task for c in tasks_of(planned) if c.task is not None]
    serial = run_tasks(tasks, workers=1)
    pooled = run_tasks(tasks, workers=2)
    assert pooled == serial
    port = _free_port()
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    subprocess.run([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus",
                    "2", "--include-dashboard", "false", "--disable-usage-stats"], check=True, env=env,
                   capture_output=True, timeout=180)
    try:
        address = f"127.0.0.1:{port}"
        assert run_tasks(tasks, ray_address=address) == serial
        copy = str(tmp_path / "r.duckdb")
        shutil.copy(planned["db"], copy)
        result = run_command(["plan", "--scenario", str(planned["path"]), "--db", copy, "--ray", address,
                              "--new-run", "--format", "json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["candidates"] == planned["output"]["candidates"]
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
        import ray as ray_module

        ray_module.shutdown()


def _plan_process(path, db, *extra):
    program = os.path.join(os.path.dirname(sys.executable), "dsocr-registry")
    return subprocess.Popen([program, "plan", "--scenario", str(path),
                             "--db", db, "--progress", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def _stored(db: str) -> int:
    try:
        return rows(db, "SELECT COUNT(*) FROM plan_candidates WHERE plan_id = 2")[0][0]
    except Exception:  # the plan process holds the file
        return -1


@pytest.mark.parametrize("kill", ["the command", "a worker"])
def test_an_interrupted_plan_resumes_and_loses_nothing(planned, tmp_path, kill):
    """Killed mid-search (the whole command, or one of its worker processes), the plan keeps what it stored; run
    again, it searches the rest and ends with the rows of an uninterrupted run."""
    document = dict(PLAN, name="plan-test-interrupted")
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(document))
    db = str(tmp_path / "r.duckdb")
    shutil.copy(planned["db"], db)  # the step costs are there: the searches start at once
    process = _plan_process(path, db, "--workers", "2")
    try:
        deadline = time.time() + 120
        line = b""
        while time.time() < deadline:  # wait for the first stored search (tqdm: "searching: ... 1/6")
            line += process.stderr.read1(4096)
            if b"1/6" in line or b"2/6" in line:
                break
        else:
            pytest.fail("the plan stored no search in 120 s")
        if kill == "the command":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            workers = _children(process.pid)
            assert workers
            os.kill(workers[-1], signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if kill == "a worker":
        assert process.returncode == 2
        assert b"a worker process died" in process.stderr.read() + line
    done = _stored(db)
    assert 1 <= done < 6
    result = run_command(["plan", "--scenario", str(path), "--db", db, "--format", "json"])
    assert result.exit_code == 0, result.output
    resumed = json.loads(result.output)["candidates"]
    assert resumed == planned["output"]["candidates"]


def test_bad_plans_are_refused_in_one_line(tmp_path):
    cases = [
        ({"target": {"ttft_p99_s": 3.0}}, "a plan needs target.pages_per_day or plan.pages_per_s"),
        ({"plan": dict(PLAN["plan"], pages_per_s=4.0)}, "a plan needs target.pages_per_day or plan.pages_per_s"),
        ({"plan": dict(PLAN["plan"], colour="red")}, "plan.colour: unknown key"),
        ({"plan": dict(PLAN["plan"], max_num_seqs=[0])}, "plan.max_num_seqs: each value must be an integer"),
        ({"plan": dict(PLAN["plan"], prices={"l40s": -1})}, "plan.prices.l40s"),
        ({"target": {"pages_per_day": 1000}}, "a plan needs an SLO"),
    ]
    for change, needle in cases:
        path = tmp_path / "plan.yaml"
        path.write_text(yaml.safe_dump({**PLAN, **change}))
        db = tmp_path / "r.duckdb"
        result = run_command(["plan", "--scenario", str(path), "--db", str(db)])
        assert result.exit_code == 2, result.output
        assert needle in result.output and len(result.output.strip().splitlines()) == 1, result.output
        assert not db.exists()
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(PLAN))
    result = run_command(["whatif", "--scenario", str(path), "--db", str(tmp_path / "w.duckdb")])
    assert result.exit_code == 2 and "search it with `dsocr-registry plan --scenario FILE`" in result.output


def test_the_service_answers_a_plan(planned, tmp_path):
    """POST /plans: the same candidates as the command, and a plan over the request limit refused."""
    from starlette.testclient import TestClient

    from registry.interfaces.service import ServiceConfig, create_app

    db = str(tmp_path / "r.duckdb")
    shutil.copy(planned["db"], db)
    with TestClient(create_app(ServiceConfig(allowed_hosts=("testserver",), db=db))) as client:
        answer = client.post("/plans", json=PLAN)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["candidates"] == planned["output"]["candidates"]
        assert body["cheapest"] == planned["output"]["cheapest"]
        big = dict(PLAN, plan=dict(PLAN["plan"], max_num_seqs=list(range(1, 40))))
        refused = client.post("/plans", json=big)
        assert refused.status_code == 422 and "at most 64 per request" in refused.json()["error"]
        refused = client.post("/plans", json=dict(PLAN, target={"ttft_p99_s": 1.0}))
        assert refused.status_code == 400 and "target.pages_per_day" in refused.json()["error"]


def test_gpus_needed_in_python_is_the_views_formula():
    """plan counts replicas with model.gpus_needed, the views with gpus_needed_sql: the same numbers."""
    import duckdb

    from registry.pricing.model import gpus_needed, gpus_needed_sql

    cases = [(1_000_000, 11.68), (1_000_000, 11.5740740740), (400_000, 4.63), (86_400, 1.0), (100, 0.001)]
    for target, rate in cases:
        sql = gpus_needed_sql(repr(float(target)), repr(float(rate)))
        assert duckdb.sql(f"SELECT CAST({sql} AS BIGINT)").fetchall()[0][0] == gpus_needed(target, rate), (target, rate)

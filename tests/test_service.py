"""The HTTP service (registry/interfaces/service.py): the contract fuzzed by Schemathesis, auth, limits, errors, runs that are
joined, stopped and restarted, on DuckDB and PostgreSQL."""

import asyncio
import json
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import httpx
import jsonschema
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from referencing import Registry as SchemaRegistry
from referencing.jsonschema import DRAFT202012
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)
from starlette.testclient import TestClient

from analyzer.schema import SCHEMA_PATH
from registry.interfaces.service import ServiceConfig, create_app
from tests.helpers import HEAD, REPO, rows, run_command

OPENAPI_PATH = REPO / "contracts" / "openapi.yaml"
OPENAPI = yaml.safe_load(OPENAPI_PATH.read_text())
SCHEMAS = SchemaRegistry().with_resource(SCHEMA_PATH.name,
                                         DRAFT202012.create_resource(json.loads(SCHEMA_PATH.read_text())))
BIN = pathlib.Path(sys.executable).parent
RUN = "/analytic/deepseek-ocr/run"
REQUEST = {"model_id": "deepseek-ai/DeepSeek-OCR", "model_variant": "v1", "workload_profile_id": "dsocr-standard-v1"}
TOKEN = "s3cret-token"
TEST_HOSTS = ("testserver", "test")  # the Host names of Starlette's TestClient and of httpx's ASGI transport


def validate_component(instance, name):
    schema = {"$ref": f"#/components/schemas/{name}", "components": OPENAPI["components"]}
    jsonschema.Draft202012Validator(schema, registry=SCHEMAS).validate(instance)


@pytest.fixture
def client(registry_url):
    with TestClient(create_app(ServiceConfig(allowed_hosts=TEST_HOSTS, db=registry_url))) as test_client:
        yield test_client


@pytest.fixture
def stored_report(registry_url, report_files):
    result = run_command(["ingest", str(report_files["standard"]), "--db", registry_url])
    assert result.exit_code == 0, result.output
    return rows(registry_url, "SELECT report_id FROM reports")[0][0]


# -- Schemathesis: every operation of openapi.yaml, generated from the document -------------------------------------

FUZZ_EXAMPLES = 15  # per operation and backend: ~150 requests, well under a minute


def test_contract_fuzzed(registry_url):
    """Every operation of openapi.yaml with requests generated from the document: no 5xx, and every answer (status,
    content type, body) is one the document declares."""
    from hypothesis import given

    app = create_app(ServiceConfig(allowed_hosts=TEST_HOSTS, db=registry_url))
    schema = schemathesis.openapi.from_path(OPENAPI_PATH)  # a file location: the report schema's $ref resolves
    schema.app = app
    calls = {}
    with TestClient(app):  # the app's startup; Schemathesis then calls the same app in process
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                      derandomize=True, database=None)
            def check(case):
                response = case.call_and_validate(checks=[not_a_server_error, status_code_conformance,
                                                          content_type_conformance, response_schema_conformance])
                calls.setdefault(operation.label, []).append(response.status_code)

            check()
    assert len(calls) == len(OPENAPI_OPERATIONS), calls
    assert set(calls["GET /healthz"]) == {200}
    assert 404 in calls["GET /analytic/deepseek-ocr/{report_id}/model"]
    assert 400 in calls["POST /analytic/deepseek-ocr/run"]
    print(f"Schemathesis: {sum(map(len, calls.values()))} requests over {len(calls)} operations")


OPENAPI_OPERATIONS = [(method, path) for path, item in OPENAPI["paths"].items() for method in item]


# -- reads ----------------------------------------------------------------------------------------------------------

def test_summary_and_model_of_a_stored_report(client, registry_url, stored_report):
    summary = client.get(f"/analytic/deepseek-ocr/{stored_report}/summary",
                         params={"hardware": "h100-sxm", "runtime": "hf-eager", "top": 3})
    assert summary.status_code == 200
    validate_component(summary.json(), "DeepSeekOCRAnalyticReportSummary")
    cli = run_command(["summary", stored_report, "--db", registry_url, "--hardware", "h100-sxm",
                       "--runtime", "hf-eager", "--top", "3"])
    assert summary.json() == json.loads(cli.output)  # the same library function answers both
    assert len(summary.json()["top_modules"]) == 3
    model = client.get(f"/analytic/deepseek-ocr/{stored_report}/model")
    assert model.status_code == 200 and model.json()["report_id"] == stored_report
    validate_component(model.json(), "AnalyticModelReport")
    bad = client.get(f"/analytic/deepseek-ocr/{stored_report}/summary", params={"hardware": "h1000"})
    assert bad.status_code == 400 and "h1000" in bad.json()["error"]
    assert client.get(f"/analytic/deepseek-ocr/{stored_report}/summary?top=0").json() == {
        "error": "top must be an integer from 1 to 100, got '0'"}


def test_unknown_ids_are_404(client):
    for path, message in [("/analytic/deepseek-ocr/dsocr-000000000000000000000000/summary",
                           "no report 'dsocr-000000000000000000000000' in the registry"),
                          ("/analytic/deepseek-ocr/dsocr-000000000000000000000000/model",
                           "no report 'dsocr-000000000000000000000000' in the registry"),
                          ("/analytic/deepseek-ocr/runs/run-nope", "no run 'run-nope'"),
                          ("/nowhere", "no endpoint /nowhere")]:
        response = client.get(path)
        assert (response.status_code, response.json()) == (404, {"error": message}), path
    assert client.delete(RUN).json() == {"error": "DELETE is not allowed on /analytic/deepseek-ocr/run"}


def test_spec_docs_and_health(client):
    spec = client.get("/openapi.yaml")
    assert spec.status_code == 200 and yaml.safe_load(spec.text) == OPENAPI
    assert client.get("/analytic-model-report.schema.json").json()["title"] == json.loads(SCHEMA_PATH.read_text())[
        "title"]
    assert "/openapi.yaml" in client.get("/docs").text
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["schema_revision"] == health["code_revision"] == HEAD


def test_an_unexpected_error_is_json_without_a_trace(client, monkeypatch):
    from registry.interfaces.service import Service

    def broken(*args):
        raise ZeroDivisionError("secret internals")

    monkeypatch.setattr(Service, "summary", broken)
    response = client.get("/analytic/deepseek-ocr/dsocr-000000000000000000000000/summary")
    assert (response.status_code, response.json()) == (500, {"error": "internal error (logged by the service)"})
    assert "secret" not in response.text and "Traceback" not in response.text


def test_one_json_log_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger="dsocr_registry.service.access"):
        client.get("/healthz?x=1")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dsocr_registry.service.access"]
    assert len(lines) == 1
    assert {k: lines[0][k] for k in ("method", "path", "query", "status")} == {
        "method": "GET", "path": "/healthz", "query": "x=1", "status": 200}
    assert lines[0]["duration_ms"] > 0


# -- safe to expose -------------------------------------------------------------------------------------------------

def test_write_endpoints_need_the_token(registry_url):
    with TestClient(create_app(ServiceConfig(allowed_hosts=TEST_HOSTS, db=registry_url, token=TOKEN))) as client:
        unknown = dict(REQUEST, workload_profile_id="no-such-profile")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            for path in (RUN, "/whatif/scenarios", "/serving/scenarios"):
                response = client.post(path, json=unknown, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.json() == {"error": "this endpoint needs Authorization: Bearer <token>"}
                assert response.headers["www-authenticate"].startswith("Bearer")
        passed = client.post(RUN, json=unknown, headers={"Authorization": f"Bearer {TOKEN}"})
        assert passed.status_code == 400 and "unknown workload profile 'no-such-profile'" in passed.json()["error"]
        # reads stay open
        assert client.get("/analytic/deepseek-ocr/dsocr-000000000000000000000000/summary").status_code == 404
    assert rows(registry_url, "SELECT COUNT(*) FROM analysis_runs") == [(0,)]


def test_serve_refuses_to_listen_beyond_loopback_without_a_token(tmp_path):
    db = str(tmp_path / "r.duckdb")
    result = run_command(["serve", "--db", db, "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert result.output.strip() == ("dsocr-registry: error: --host 0.0.0.0 listens beyond loopback: set a token for "
                                     "the write endpoints (--token-file FILE or DSOCR_SERVICE_TOKEN)")
    result = run_command(["serve", "--db", db, "--workers", "2"])
    assert result.exit_code == 2 and "--workers 2: a DuckDB file is opened by one process" in result.output
    empty = tmp_path / "token"
    empty.write_text("\n")
    result = run_command(["serve", "--db", db, "--token-file", str(empty)])
    assert result.exit_code == 2 and "the file is empty" in result.output
    assert not (tmp_path / "r.duckdb").exists()


def test_request_bodies_are_limited_and_checked(client, registry_url):
    big = client.post(RUN, content=b"{" + b" " * 70_000 + b"}", headers={"content-type": "application/json"})
    assert (big.status_code, big.json()) == (413, {"error": "request body of 70002 bytes exceeds the limit of 65536 "
                                                            "bytes"})

    def chunks():  # no Content-Length: counted while it streams
        for _ in range(100):
            yield b" " * 1000

    streamed = client.post(RUN, content=chunks(), headers={"content-type": "application/json"})
    assert (streamed.status_code, streamed.json()) == (413, {"error": "request body exceeds the limit of 65536 bytes"})
    for body, message in [
        (b"[1, 2]", "the request body must be a JSON object"),
        (b"{\"model_id\": NaN}", "request body: non-finite number NaN"),
        (b"{" * 40 + b"}" * 40, "request body: malformed JSON"),
        (b"[" * 40 + b"]" * 40, "request body: [0][0][0]"),  # then: nesting deeper than 32 levels
        (b"{\"model_id\": 1, \"model_id\": 2}", "request body: duplicate key 'model_id'"),
        (b"{\"model_id\": \"a\\u0000b\"}", "request body: model_id: 'a\\x00b' holds a NUL character"),
        (b"{\"model_id\": \"\xff\"}", "request body: not UTF-8 text"),
        (json.dumps({"a": [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}).encode(), "request body nests deeper than 16 levels"),
        (b"", "the request body is empty: send a JSON object"),
        (json.dumps({"model_id": "deepseek-ai/DeepSeek-OCR"}).encode(),
         "request: missing field(s): workload_profile_id"),
        (json.dumps(dict(REQUEST, speed=1)).encode(), "request: unknown request field(s): speed"),
        (json.dumps(dict(REQUEST, force_rebuild="yes")).encode(), "request: 'force_rebuild' must be <class 'bool'>"),
        (json.dumps(dict(REQUEST, profile_run_id=7)).encode(), "request: 'profile_run_id' must be <class 'str'>"),
        (json.dumps(dict(REQUEST, model_variant="ocr2")).encode(), "request: model_variant 'ocr2' does not match"),
    ]:
        response = client.post(RUN, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, body
        assert response.json()["error"].startswith(message), (body, response.json())
    assert rows(registry_url, "SELECT COUNT(*) FROM analysis_runs") == [(0,)]


# -- runs -----------------------------------------------------------------------------------------------------------

def wait_for_run(get, status_url, timeout_s=300):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = get(status_url).json()
        if state["status"] in ("done", "failed"):
            return state
        time.sleep(0.25)
    raise AssertionError(f"{status_url} did not finish in {timeout_s} s")


def test_concurrent_identical_runs_make_one_report(registry_url):
    """Eight identical requests at once, split over two service instances sharing the registry on PostgreSQL."""
    postgres = "://" in registry_url
    apps = [create_app(ServiceConfig(allowed_hosts=TEST_HOSTS, db=registry_url))
            for _ in range(2 if postgres else 1)]
    clients = [TestClient(app) for app in apps]
    for c in clients:
        c.__enter__()
    try:
        async def post_all():
            async_clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
                             for app in apps]
            try:
                return await asyncio.gather(*(async_clients[i % len(apps)].post(RUN, json=REQUEST)
                                              for i in range(8)))
            finally:
                for ac in async_clients:
                    await ac.aclose()

        answers = asyncio.run(post_all())
        assert {a.status_code for a in answers} == {202}
        for answer in answers:
            validate_component(answer.json(), "RunAccepted")
        assert len({a.json()["run_id"] for a in answers}) == 1
        assert {a.json()["status"] for a in answers} <= {"queued", "running"}
        state = wait_for_run(clients[0].get, answers[0].json()["status_url"])
        validate_component(state, "RunStatus")
        assert state["status"] == "done", state
        assert rows(registry_url, "SELECT report_id FROM reports") == [(state["report_id"],)]
        assert rows(registry_url, "SELECT COUNT(*), MIN(status) FROM analysis_runs") == [(1, "done")]
        again = clients[-1].post(RUN, json=dict(REQUEST, profile_run_id="nightly-7"))
        assert again.status_code == 202
        assert (again.json()["status"], again.json()["report_id"]) == ("reused", state["report_id"])
        assert clients[0].get(again.json()["status_url"]).json()["request"]["profile_run_id"] == "nightly-7"
        summary = clients[0].get(f"/analytic/deepseek-ocr/{state['report_id']}/summary")
        assert summary.status_code == 200 and summary.json()["report_id"] == state["report_id"]
    finally:
        for c in clients:
            c.__exit__(None, None, None)


def test_an_analysis_past_its_time_limit_fails_its_run(registry_url, tmp_path, monkeypatch):
    """--analysis-timeout: the run is failed with one line, its worker replaced, and nothing of it is stored."""
    # an empty trace cache for the service's (spawned) workers: the analysis traces, past the 1 s limit
    monkeypatch.setenv("DSOCR_CACHE_DIR", str(tmp_path / "empty-cache"))
    config = ServiceConfig(allowed_hosts=TEST_HOSTS, db=registry_url, analysis_timeout_s=1.0)
    with TestClient(create_app(config)) as timed:
        accepted = timed.post(RUN, json=REQUEST)
        assert accepted.status_code == 202, accepted.text
        state = wait_for_run(timed.get, accepted.json()["status_url"])
        validate_component(state, "RunStatus")
        assert (state["status"], state["report_id"], state["error"]) == (
            "failed", None, "analysis timed out after 1 s"), state
    assert rows(registry_url, "SELECT COUNT(*) FROM reports") == [(0,)]
    assert rows(registry_url, "SELECT status, error FROM analysis_runs") == [("failed", "analysis timed out after 1 s")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`dsocr-registry serve` as a separate process."""

    def __init__(self, db: str, log: pathlib.Path, *extra: str, preexec_fn=None) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
        # a file, not a pipe: a killed service's analysis worker may outlive it for a while, holding its stderr
        with log.open("w") as out:
            self.process = subprocess.Popen([str(BIN / "dsocr-registry"), "serve", "--db", db, "--port",
                                             str(self.port), *extra], env=env, stdout=out, stderr=out,
                                            preexec_fn=preexec_fn)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{self.base}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("the service did not start")

    def get(self, path):
        return httpx.get(self.base + path, timeout=30)

    def post(self, path, **kwargs):
        return httpx.post(self.base + path, timeout=30, **kwargs)

    def stop(self, sig=signal.SIGTERM) -> tuple[int, str]:
        self.process.send_signal(sig)
        self.process.wait(timeout=120)
        return self.process.returncode, self.log.read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "killed"])
def test_a_run_stopped_midway_reads_failed_after_restart(registry_url, sig, tmp_path):
    server = Server(registry_url, tmp_path / "first.log", "--shutdown-grace", "0")
    accepted = server.post(RUN, json=REQUEST).json()
    deadline = time.monotonic() + 60
    while server.get(accepted["status_url"]).json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    code, stderr = server.stop(sig)
    if sig == signal.SIGTERM:  # uvicorn stops gracefully, then ends with the signal it caught
        assert code in (0, -signal.SIGTERM), stderr
        # the service's last event (the analysis worker it ended shares the log and may write after it)
        events = [json.loads(line) for line in stderr.splitlines() if line.startswith('{"event"')]
        assert events[-1] == {"event": "stopped", "runs_cut_off": [accepted["run_id"]]}, stderr
    # nothing half-stored: no report rows at all (the analysis never finished)
    assert rows(registry_url, "SELECT COUNT(*) FROM reports") == [(0,)]
    assert rows(registry_url, "SELECT COUNT(*) FROM module_metrics") == [(0,)]
    restarted = Server(registry_url, tmp_path / "restarted.log")
    try:
        state = restarted.get(accepted["status_url"]).json()
        assert state["status"] == "failed" and state["report_id"] is None
        assert state["error"].startswith("failed: the service stopped" if sig == signal.SIGTERM else "interrupted")
        validate_component(state, "RunStatus")
        health = restarted.get("/healthz").json()
        assert health["status"] == "ok" and health["runs_in_flight"] == 0
    finally:
        code, stderr = restarted.stop()
    assert code in (0, -signal.SIGTERM), stderr
    # settled in the table too (at the stop, or at the restart after a kill), not only read as failed
    assert rows(registry_url, "SELECT run_id, status, report_id FROM analysis_runs") == [
        (accepted["run_id"], "failed", None)]
    access = [json.loads(line) for line in stderr.splitlines() if line.startswith('{"ts"')]
    assert [(a["method"], a["path"], a["status"]) for a in access][-2:] == [
        ("GET", accepted["status_url"], 200), ("GET", "/healthz", 200)]


# -- scenarios ------------------------------------------------------------------------------------------------------

SCENARIO = {"name": "one-gpu", "base": {"profile": "dsocr-standard-v1"},
            "sweep": {"hardware": ["h100-sxm", "h200"], "runtime": ["hf-eager"]},
            "target": {"pages_per_day": 100000}}


def same_points(left: list[dict], right: list[dict]) -> bool:
    """Equal points; floats to 1e-12 relative, since the views' parallel sums may differ in the last bit."""
    def close(a, b):
        if isinstance(a, float) or isinstance(b, float):
            return a == pytest.approx(b, rel=1e-12)
        return a == b

    return len(left) == len(right) and all(
        a.keys() == b.keys() and all(close(a[k], b[k]) for k in a) for a, b in zip(left, right))


def test_whatif_scenario_answers_as_the_command_line(client, registry_url, stored_report, tmp_path):
    answer = client.post("/whatif/scenarios", json=SCENARIO)
    assert answer.status_code == 200, answer.text
    validate_component(answer.json(), "WhatIfResult")
    path = tmp_path / "one-gpu.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    cli = json.loads(run_command(["whatif", "--scenario", str(path), "--db", registry_url, "--format", "json"]).output)
    assert answer.json()["scenario_id"] == cli["scenario_id"]  # the same scenario and registry: recorded once
    assert rows(registry_url, "SELECT COUNT(*) FROM scenarios WHERE kind = 'what-if'") == [(1,)]
    assert same_points(answer.json()["points"], cli["points"])
    assert [p["report_id"] for p in cli["points"]] == [stored_report, stored_report]
    for body, message in [({"sweep": {"hardware": ["h1000"]}},
                           "scenario: sweep.hardware: unknown hardware 'h1000' (did you mean 'h200'?)"),
                          ({"sweep": {}, "speed": 3}, "scenario: speed: unknown key"),
                          (dict(SCENARIO, serving={"engine": "vllm-v1"}), "scenario: a serving block is simulated"),
                          ]:
        refused = client.post("/whatif/scenarios", json=body)
        assert refused.status_code == 400 and refused.json()["error"].startswith(message), refused.json()
    refused = client.post("/whatif/scenarios", json={"sweep": {"hardware": ["h200"], "batch": list(range(1, 40))}})
    assert (refused.status_code, refused.json()) == (422, {"error": "scenario: sweeps 39 workloads; at most 32 per "
                                                                    "request"})
    refused = client.post("/serving/scenarios", json=SCENARIO)
    assert refused.status_code == 400 and refused.json()["error"].startswith("scenario: no serving block")


SERVING = {"name": "tiny-serving", "base": {"profile": "dsocr-standard-v1"},
           "sweep": {"hardware": ["h100-sxm"], "runtime": ["vllm"]},
           "serving": {"engine": "vllm-v1", "arrival": {"rate_per_s": [2]}, "pages": {"count": 50, "seed": 7}},
           "target": {"ttft_p99_s": 5}}


def test_serving_scenario_analyzes_in_the_worker_and_answers_as_the_command_line(client, registry_url, tmp_path):
    answer = client.post("/serving/scenarios", json=SERVING)
    assert answer.status_code == 200, answer.text
    validate_component(answer.json(), "ServingResult")
    (point,) = answer.json()["serving"]
    assert (point["hardware"], point["runtime"], point["arrival_rate_per_s"], point["pages"]) == (
        "h100-sxm", "vllm@3", 2.0, 50)
    assert rows(registry_url, "SELECT COUNT(*) FROM reports WHERE execution = 'vllm'")[0][0] > 0  # probes stored
    path = tmp_path / "tiny-serving.yaml"
    path.write_text(yaml.safe_dump(SERVING))
    cli = json.loads(run_command(["whatif", "--scenario", str(path), "--db", registry_url, "--format", "json"]).output)
    assert cli["serving"] == answer.json()["serving"]  # the same simulation, the same seed, the same numbers

"""The HTTP service against hostile requests (registry/interfaces/service.py): no server file is read, no request blocks the
event loop or the writer, browsers' cross-site requests and rebound names are refused, slow clients are cut off,
and every error carries its status; on DuckDB and PostgreSQL."""

import asyncio
import json
import os
import resource
import socket
import threading
import time

import httpx
import pytest
import yaml
from starlette.testclient import TestClient

from registry.interfaces.service import ServiceConfig, create_app
from tests.helpers import REPO, rows, run_command
from tests.test_service import REQUEST, RUN, TEST_HOSTS, TOKEN, Server, client, stored_report  # noqa: F401 (fixtures)

OPENAPI = yaml.safe_load((REPO / "contracts" / "openapi.yaml").read_text())
PROFILE_REFUSED = ("scenario: base: profile must be a shipped workload profile name or an inline mapping of a "
                   "profile's fields (no file paths); shipped: dsocr-base-v1, dsocr-standard-ocr2, dsocr-standard-v1")
STANDARD_PROFILE = yaml.safe_load((REPO / "analyzer" / "profiles" / "dsocr-standard-v1.yaml").read_text())
SERVING_SPEC = {"sweep": {"hardware": ["h100-sxm"], "runtime": ["vllm"]},
                "serving": {"arrival": {"rate_per_s": [2]}, "pages": {"count": 10}}}


def one_line_error(response) -> str:
    assert response.headers["content-type"] == "application/json", response.text
    assert "\n" not in response.text
    (message,) = response.json().values()
    assert set(response.json()) == {"error"}
    return message


# -- profiles: shipped names or inline mappings, never a server path -----------------------------------------------

def test_a_profile_over_http_is_never_a_path(client, registry_url, tmp_path, monkeypatch):
    secret = tmp_path / "secret-profile.yaml"  # a valid profile: read, it would be analyzed or quoted
    secret.write_text(yaml.safe_dump(dict(STANDARD_PROFILE, description="TOP-SECRET")))
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dsocr-standard-v1").write_text("TOP-SECRET: 1\n")  # a file named as a shipped profile
    for path in [str(secret), "/etc/passwd", "/etc/shadow", "/proc/self/fd/0", "/proc/self/environ", str(fifo),
                 "../secret-profile.yaml", "secret-profile.yaml", str(tmp_path / "missing.yaml"), "/", "",
                 "x" * 5000, 7, ["dsocr-standard-v1"]]:
        for endpoint, body in [("/whatif/scenarios", {"sweep": {"hardware": ["h200"]}}),
                               ("/serving/scenarios", SERVING_SPEC)]:
            started = time.monotonic()
            answer = client.post(endpoint, json=dict(body, base={"profile": path}))
            assert time.monotonic() - started < 1.0, path
            # one answer for every path, existing or not: nothing of a file, nor whether it exists
            assert (answer.status_code, one_line_error(answer)) == (400, PROFILE_REFUSED), (endpoint, path)
    # the FIFO was never opened: a writer finds no reader on it
    with pytest.raises(OSError) as no_reader:
        os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    assert no_reader.value.errno == 6  # ENXIO
    assert client.get("/healthz").status_code == 200
    assert rows(registry_url, "SELECT COUNT(*) FROM scenarios") == [(0,)]
    # a shipped name is the package's profile, whatever file of that name the service's folder holds
    shipped = client.post("/whatif/scenarios", json={"base": {"profile": "dsocr-standard-v1", "mode": "nope"},
                                                     "sweep": {"hardware": ["h200"]}})
    assert (shipped.status_code, one_line_error(shipped)) == (
        400, "scenario: base: unknown mode 'nope' for variant v1; expected one of: tiny, small, base, large, gundam, "
             "gundam-m")


def test_an_inline_profile_prices_as_the_shipped_one(client, registry_url, stored_report, tmp_path):
    named = client.post("/whatif/scenarios", json={"base": {"profile": "dsocr-standard-v1"},
                                                   "sweep": {"hardware": ["h200"]}})
    inline = client.post("/whatif/scenarios", json={"base": {"profile": STANDARD_PROFILE},
                                                    "sweep": {"hardware": ["h200"]}})
    assert named.status_code == inline.status_code == 200, (named.text, inline.text)
    assert [p["report_id"] for p in inline.json()["points"]] == [stored_report]
    assert inline.json()["points"][0]["page_latency_s"] == named.json()["points"][0]["page_latency_s"]
    bad = client.post("/whatif/scenarios", json={"base": {"profile": {"variant": "v1", "mode": "gundam",
                                                                      "speed": 3}}, "sweep": {"hardware": ["h200"]}})
    assert (bad.status_code, one_line_error(bad)) == (400, "scenario: base: inline profile: unknown key(s) speed")
    # the command line still reads a profile file a scenario file names
    profile = tmp_path / "standard.yaml"
    profile.write_text(yaml.safe_dump(STANDARD_PROFILE))
    scenario = tmp_path / "file.yaml"
    scenario.write_text(yaml.safe_dump({"base": {"profile": str(profile)}, "sweep": {"hardware": ["h200"]}}))
    cli = run_command(["whatif", "--scenario", str(scenario), "--db", registry_url, "--format", "json"])
    assert cli.exit_code == 0, cli.output
    assert [p["report_id"] for p in json.loads(cli.output)["points"]] == [stored_report]


# -- bounded work: nothing on the event loop, nothing but writes in the writer --------------------------------------

def test_a_large_sweep_is_refused_from_its_list_lengths_without_blocking(registry_url):
    """100 x 100 workloads: refused (422) before one is expanded, while /healthz keeps answering."""
    app = create_app(ServiceConfig(allowed_hosts=TEST_HOSTS, db=registry_url))
    body = {"sweep": {"hardware": ["h200"], "batch": list(range(1, 101)), "new_tokens": list(range(1, 101))}}

    async def race():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as ac:
            async def timed(call):
                started = time.monotonic()
                response = await call
                return response, time.monotonic() - started

            sweep = asyncio.ensure_future(timed(ac.post("/whatif/scenarios", json=body)))
            await asyncio.sleep(0)
            health = await timed(ac.get("/healthz"))
            return await sweep, health

    with TestClient(app):
        (sweep, sweep_s), (health, health_s) = asyncio.run(race())
    assert (sweep.status_code, one_line_error(sweep)) == (422, "scenario: sweeps 10,000 workloads; at most 32 per "
                                                               "request")
    assert sweep_s < 1.0 and health.status_code == 200 and health_s < 1.0, (sweep_s, health_s)
    serving = dict(SERVING_SPEC, sweep={"hardware": ["h200"] * 10, "runtime": ["vllm"] * 10})
    with TestClient(app) as test_client:
        refused = test_client.post("/serving/scenarios", json=serving)
    assert (refused.status_code, one_line_error(refused)) == (
        422, "scenario: sweeps 100 GPU x runtime pairs; at most 32 per request")


def heavy_serving(pages: int = 4000) -> dict:
    """Valid, and long to simulate: pages of ~8000 new tokens each (the model's output limit)."""
    return {"name": "heavy", "sweep": {"hardware": ["h100-sxm"], "runtime": ["vllm"]},
            "serving": {"arrival": {"rate_per_s": [50]}, "pages": {"count": pages},
                        "page_mix": {"new_tokens": {"median": 8000, "p90": 8100, "max": 8192}}}}


def test_a_heavy_simulation_delays_neither_healthz_nor_a_run(registry_url, tmp_path):
    """The simulation runs in a worker process under --simulation-timeout (504, worker replaced); probes are
    analyzed before the writer is taken, so a run's 202 and /healthz answer at once throughout."""
    server = Server(registry_url, tmp_path / "heavy.log", "--simulation-timeout", "4")
    try:
        def timed(call, *args, **kwargs):
            started = time.monotonic()
            response = call(*args, **kwargs)
            assert response.status_code in (200, 202), response.text
            return time.monotonic() - started

        # the same calls on the idle service: a delay is what a heavy request adds to these (a shared machine's
        # load is in both)
        timed(server.post, RUN, json=REQUEST)  # the first run request imports the contract's modules
        idle_health_s = max(timed(server.get, "/healthz") for _ in range(8))
        idle_run_s = max(timed(server.post, RUN, json=dict(REQUEST, profile_run_id=f"idle-{i}")) for i in range(3))
        answer = {}

        def post_heavy():
            started = time.monotonic()
            answer["response"] = httpx.post(server.base + "/serving/scenarios", json=heavy_serving(), timeout=600)
            answer["s"] = time.monotonic() - started

        heavy = threading.Thread(target=post_heavy)
        heavy.start()
        health_s, run_s = [], []
        while heavy.is_alive():
            health_s.append(timed(server.get, "/healthz"))
            if len(health_s) % 8 == 1:
                run_s.append(timed(server.post, RUN, json=dict(REQUEST, profile_run_id=f"during-{len(health_s)}")))
            time.sleep(0.25)
        heavy.join()
        response = answer["response"]
        assert (response.status_code, one_line_error(response)) == (
            504, "simulation timed out after 4 s (--simulation-timeout)")
        assert len(health_s) >= 8, health_s
        assert max(health_s) < idle_health_s + 1.0 and max(run_s) < idle_run_s + 1.0, (
            idle_health_s, health_s, idle_run_s, run_s)
        print(f"heavy serving answered in {answer['s']:.1f} s; /healthz worst {max(health_s):.3f} s over "
              f"{len(health_s)} (idle {idle_health_s:.3f} s), POST /run 202 worst {max(run_s):.3f} s over "
              f"{len(run_s)} (idle {idle_run_s:.3f} s)")
        # the simulation was ended in its worker (a timer there): the next one runs
        small = server.post("/serving/scenarios", json=heavy_serving(pages=20))
        assert small.status_code == 200, small.text
        assert [p["pages"] for p in small.json()["serving"]] == [20]
    finally:
        server.stop()
    assert rows(registry_url, "SELECT COUNT(*) FROM scenarios WHERE name = 'heavy' AND kind = 'serving'") == [(1,)]



def test_a_whatif_analyzes_before_it_takes_the_writer(registry_url, monkeypatch, standard_v1_report):
    """A what-if's missing report is analyzed before the writer is taken: while its analysis runs, a run's
    heartbeat (a write) goes through at once; the report is then stored and priced."""
    from registry.interfaces.service import Service
    from registry.store import runs

    analyzing, release = threading.Event(), threading.Event()

    def slow_analysis(self, workload, execution="hf-eager"):
        analyzing.set()
        assert release.wait(120), "the analysis was never released"
        return standard_v1_report

    monkeypatch.setattr(Service, "analyze_workload", slow_analysis)
    app = create_app(ServiceConfig(allowed_hosts=TEST_HOSTS, db=registry_url))
    scenario = {"name": "slow-analysis", "base": {"profile": "dsocr-standard-v1"},
                "sweep": {"hardware": ["h200"], "runtime": ["hf-eager"]}}

    async def heartbeat_during_the_analysis():
        service = app.state.service

        def heartbeat():
            with service.registry.begin() as conn:
                runs.touch(conn, ["run-heartbeat"])

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as ac:
            whatif = asyncio.ensure_future(ac.post("/whatif/scenarios", json=scenario))
            try:
                assert await asyncio.to_thread(analyzing.wait, 60), "the what-if never analyzed"
                started = time.monotonic()
                await asyncio.wait_for(service.write_async(heartbeat), 10)
                heartbeat_s, analysis_running = time.monotonic() - started, not whatif.done()
            finally:
                release.set()  # the analysis ends either way: a failed check leaves nothing waiting
            return heartbeat_s, analysis_running, await whatif

    with TestClient(app):
        heartbeat_s, analysis_running, answer = asyncio.run(heartbeat_during_the_analysis())
    assert analysis_running and heartbeat_s < 1.0, heartbeat_s
    assert answer.status_code == 200, answer.text
    assert [p["report_id"] for p in answer.json()["points"]] == [standard_v1_report.report_id]
    assert rows(registry_url, "SELECT report_id FROM reports") == [(standard_v1_report.report_id,)]


def test_a_simulation_past_its_memory_limit_is_refused():
    """A simulation worker's address space is capped: an allocation past it is a 422 of one line, not the
    machine's memory (a billion pages would take 7.45 GiB)."""
    import attrs

    from registry.interfaces.service import AnalysisPool, WorkLimitError, error_status
    from registry.serving.scenario import ServingPlan, serving_spec
    from registry.pricing.whatif import scenario_from_mapping

    spec = serving_spec(scenario_from_mapping(SERVING_SPEC, "scenario"))
    plan = ServingPlan(source="scenario", spec=attrs.evolve(spec, count=10 ** 9), points=((1, 1, None, spec.config),),
                       rates=spec.arrivals, pages=("1654x2339",))
    pool = AnalysisPool(1, 60.0, 2 * 1024 ** 3, "simulation")
    try:
        with pytest.raises(WorkLimitError) as refused:
            pool.run("simulate", plan)
        assert str(refused.value) == "the simulation needs more memory than its limit of 2,048 MiB"
        assert error_status(refused.value) == 422
        small = attrs.evolve(plan, spec=attrs.evolve(spec, count=3), points=())
        assert pool.run("simulate", small) == []  # a new worker, the same limit
    finally:
        pool.close()


# -- browser safety --------------------------------------------------------------------------------------------------

def test_post_bodies_must_be_declared_json(client, registry_url):
    body = json.dumps(REQUEST).encode()
    for content_type in [None, "text/plain", "text/plain;charset=utf-8", "application/x-www-form-urlencoded",
                         "multipart/form-data; boundary=x", "application/json; charset=latin-1",
                         "application/jsonp", "application/json-seq", "text/json"]:
        headers = {} if content_type is None else {"content-type": content_type}
        for path in (RUN, "/whatif/scenarios", "/serving/scenarios"):
            refused = client.post(path, content=body, headers=headers)
            assert (refused.status_code, one_line_error(refused)) == (
                415, "request bodies are JSON: send Content-Type: application/json"), (path, content_type)
    assert rows(registry_url, "SELECT COUNT(*) FROM analysis_runs") == [(0,)]
    for content_type in ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=\"UTF-8\""]:
        answer = client.post(RUN, content=json.dumps(dict(REQUEST, workload_profile_id="nope")).encode(),
                             headers={"content-type": content_type})
        assert answer.status_code == 400 and "unknown workload profile 'nope'" in answer.json()["error"]


def test_foreign_host_headers_are_refused(registry_url):
    config = ServiceConfig(db=registry_url, port=18080, allowed_hosts=("Registry.Internal",))
    with TestClient(create_app(config), base_url="http://127.0.0.1:18080") as local:
        for host in ["127.0.0.1:18080", "localhost:18080", "[::1]:18080", "registry.internal:18080", "127.0.0.1",
                     "LOCALHOST"]:
            assert local.get("/healthz", headers={"host": host}).status_code == 200, host
        for host in ["evil.example.com", "evil.example.com:18080", "127.0.0.1:18081", "localhost.evil", "",
                     "127.0.0.1:18080@evil", "[::1]x", "127.0.0.1:x"]:
            for method, path in [("GET", "/healthz"), ("GET", "/openapi.yaml"), ("POST", RUN),
                                 ("GET", "/analytic/deepseek-ocr/dsocr-000000000000000000000000/summary")]:
                refused = local.request(method, path, headers={"host": host}, json=REQUEST)
                assert refused.status_code == 421, (host, path)
                assert one_line_error(refused).endswith("is not served here: this service answers its bound "
                                                        "address and the names given by --allowed-host"), host
    assert rows(registry_url, "SELECT COUNT(*) FROM analysis_runs") == [(0,)]


def test_no_cors_headers_unless_an_origin_is_given(registry_url):
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "content-type"}
    with TestClient(create_app(ServiceConfig(allowed_hosts=TEST_HOSTS, db=registry_url))) as plain:
        for response in (plain.options(RUN, headers=preflight),
                         plain.get("/healthz", headers={"origin": "https://app.example"})):
            assert not [k for k in response.headers if k.startswith("access-control-")], response.headers
    config = ServiceConfig(allowed_hosts=TEST_HOSTS, db=registry_url, cors_origins=["https://app.example"])
    with TestClient(create_app(config)) as cors:
        allowed = cors.options(RUN, headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = cors.options(RUN, headers=dict(preflight, origin="https://evil.example"))
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
        simple = cors.get("/healthz", headers={"origin": "https://evil.example"})
        assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers


def test_serve_checks_host_and_token_on_loopback(registry_url, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    server = Server(registry_url, tmp_path / "serve.log", "--token-file", str(token), "--allowed-host", "reg.lan")
    try:
        rebound = httpx.get(server.base + "/healthz", headers={"host": "evil.example.com"})
        assert (rebound.status_code, one_line_error(rebound)) == (
            421, "Host 'evil.example.com' is not served here: this service answers its bound address and the names "
                 "given by --allowed-host")
        assert httpx.get(server.base + "/healthz", headers={"host": f"reg.lan:{server.port}"}).status_code == 200
        assert httpx.get(server.base + "/healthz", headers={"host": f"localhost:{server.port}"}).status_code == 200
        no_token = server.post(RUN, json=REQUEST)
        assert (no_token.status_code, one_line_error(no_token)) == (
            401, "this endpoint needs Authorization: Bearer <token>")
        with_token = server.post(RUN, json=REQUEST, headers={"authorization": f"Bearer {TOKEN}"})
        assert with_token.status_code == 202, with_token.text
        assert "access-control-allow-origin" not in with_token.headers
    finally:
        server.stop()


# -- query parameters and statuses -----------------------------------------------------------------------------------

def test_query_parameters_are_checked_in_one_line(client, stored_report):
    base = f"/analytic/deepseek-ocr/{stored_report}/summary"
    for top in ["%C2%B2", "%D9%A3", "%EF%BC%91", "+5", "%205", "5%20", "1e2", "0x10", "-1", "101", "0", "5.0",
                "%00", "99999999999999999999"]:
        refused = client.get(f"{base}?top={top}")
        assert refused.status_code == 400, top
        assert one_line_error(refused).startswith("top must be an integer from 1 to 100, got "), top
    assert one_line_error(client.get(f"{base}?top=%C2%B2")) == "top must be an integer from 1 to 100, got '²'"
    for name in ["hardware", "runtime"]:
        for value in ["%00", "%C2%B2", "x" * 3000, "%FF", "%0A%1B[31m"]:
            refused = client.get(f"{base}?{name}={value}")
            assert refused.status_code == 400, (name, value)
            one_line_error(refused)
    assert client.get(f"{base}?top=007").status_code == 200


def test_a_lost_database_is_503_not_400(client, registry_url, tmp_path):
    """The registry's connection refused (a stopped server, a file that cannot be opened): 503, the request is
    not at fault."""
    import sqlalchemy as sa

    service = client.app.state.service
    gone = (f"postgresql+psycopg://postgres@127.0.0.1:1/{tmp_path.name}" if "://" in registry_url
            else f"duckdb:///{tmp_path}/no-such-folder/r.duckdb")
    working, service.registry.engine = service.registry.engine, sa.create_engine(gone, poolclass=sa.pool.NullPool)
    service._summaries.clear()
    try:
        answers = [(method, path, client.request(method, path, json=body)) for method, path, body in [
            ("GET", "/analytic/deepseek-ocr/dsocr-000000000000000000000000/summary", None),
            ("GET", "/analytic/deepseek-ocr/dsocr-000000000000000000000000/model", None),
            ("GET", "/analytic/deepseek-ocr/runs/run-x", None), ("POST", RUN, REQUEST),
            ("POST", "/whatif/scenarios", {"sweep": {"hardware": ["h200"]}})]]
        health = client.get("/healthz")
    finally:
        service.registry.engine = working  # the service's stop writes
    for method, path, answer in answers:
        assert answer.status_code == 503, (path, answer.text)
        assert one_line_error(answer).startswith("cannot open "), path
        assert str(answer.status_code) in OPENAPI_STATUSES[(method.lower(), path)]
    assert health.status_code == 503


def test_a_connection_lost_mid_statement_is_503(registry_url):
    import sqlalchemy as sa

    from registry.store.db import DatabaseError, Registry
    from registry.interfaces.service import error_status

    if "://" not in registry_url:
        pytest.skip("a server connection to lose: PostgreSQL")
    registry = Registry(registry_url)
    try:
        with pytest.raises(DatabaseError) as lost:
            with registry.begin() as conn:
                conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
        assert error_status(lost.value) == 503, lost.value
        with pytest.raises(DatabaseError) as refused:
            with registry.begin() as conn:
                conn.execute(sa.text("SELECT 1/0"))
        assert error_status(refused.value) == 400
    finally:
        registry.dispose()



def test_every_error_carries_its_status():
    """The service answers an error with the status its class carries; the statuses of before (a type switch)."""
    import duckdb

    from analyzer.errors import AnalyzerInputError
    from analyzer.report import ReportFormatError
    from registry.interfaces.service import AnalysisTimeout, WorkerStoppedError, WorkLimitError, error_status
    from registry.pricing.whatif import ScenarioError
    from registry.store.db import (DatabaseError, DatabaseFailedError, DatabaseLockedError, DatabaseUnavailableError,
                                   RegistryError, ReportNotFoundError, SchemaMismatchError, database_error)
    from registry.store.measurements import MeasurementError

    expected = {RegistryError: 400, ScenarioError: 400, MeasurementError: 400, SchemaMismatchError: 400,
                DatabaseError: 400, AnalyzerInputError: 400, ReportFormatError: 400, ReportNotFoundError: 404,
                WorkLimitError: 422, DatabaseUnavailableError: 503, DatabaseLockedError: 503,
                DatabaseFailedError: 503, WorkerStoppedError: 503, AnalysisTimeout: 504}
    assert {kind: error_status(kind("one line")) for kind in expected} == expected
    # a driver's own bulk path (DuckDB's Arrow inserts): its I/O failure is the database's, a refused row the input's
    failed = database_error("database error", duckdb.IOException("could not write the file: No space left"))
    refused = database_error("database error", duckdb.ConstraintException("duplicate key"))
    assert (type(failed), error_status(failed), str(failed)) == (
        DatabaseFailedError, 503, "database error: could not write the file: No space left")
    assert (type(refused), error_status(refused), str(refused)) == (DatabaseError, 400, "database error: duplicate key")


def _declared(path: str):
    for template, item in OPENAPI["paths"].items():
        parts, given = template.strip("/").split("/"), path.strip("/").split("/")
        if len(parts) == len(given) and all(p == g or p.startswith("{") for p, g in zip(parts, given)):
            return item
    raise KeyError(path)


OPENAPI_STATUSES = {(method, path): _declared(path)[method]["responses"]
                    for method, path in [("get", "/analytic/deepseek-ocr/dsocr-000000000000000000000000/summary"),
                                         ("get", "/analytic/deepseek-ocr/dsocr-000000000000000000000000/model"),
                                         ("get", "/analytic/deepseek-ocr/runs/run-x"), ("post", RUN),
                                         ("post", "/whatif/scenarios")]}


# -- slow clients ----------------------------------------------------------------------------------------------------

def _low_file_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def test_stalled_connections_do_not_take_the_service(registry_url, tmp_path):
    """300 connections that send half a head and stall, to a service limited to 256 file descriptors: /healthz
    answers within 1 s throughout, the stalled ones are closed (the oldest first when too many wait, the rest past
    --header-timeout), and a body that stalls is answered 408."""
    server = Server(registry_url, tmp_path / "slow.log", "--header-timeout", "2", "--body-timeout", "1",
                    "--max-connections", "160", preexec_fn=_low_file_limit)
    stalled = []
    try:
        idle_s = 0.0
        for _ in range(5):
            started = time.monotonic()
            assert httpx.get(server.base + "/healthz", timeout=5).status_code == 200
            idle_s = max(idle_s, time.monotonic() - started)
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            stalled.append(sock)
        worst_s, deadline = 0.0, time.monotonic() + 4
        while time.monotonic() < deadline:
            started = time.monotonic()
            assert httpx.get(server.base + "/healthz", timeout=5).status_code == 200
            worst_s = max(worst_s, time.monotonic() - started)
            time.sleep(0.2)
        assert worst_s < idle_s + 1.0, (idle_s, worst_s)  # the machine's own load is in both
        closed, timed_out = 0, 0
        for sock in stalled:
            sock.settimeout(2)
            try:
                data = sock.recv(4096)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                data = b""
            closed += 1
            timed_out += data.startswith(b"HTTP/1.1 408")
        assert closed == 300, closed
        assert timed_out >= 50, timed_out  # the last ones to wait were answered, the others closed to make room
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"POST " + RUN.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json"
                         b"\r\ncontent-length: 100\r\n\r\n{\"model_id\"")
            answer = b""
            while not answer.endswith(b"}"):  # its head and its body may come apart
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert answer.split(b"\r\n\r\n", 1)[1] == b'{"error":"the request body did not arrive within 1 s"}'
    finally:
        for sock in stalled:
            sock.close()
        code, log = server.stop()
    assert rows(registry_url, "SELECT COUNT(*) FROM analysis_runs") == [(0,)]


# -- fuzzed bodies ---------------------------------------------------------------------------------------------------

PATH_STRINGS = ["/etc/passwd", "/etc/shadow", "../../etc/passwd", "/proc/self/fd/0", "/dev/zero", "~/.ssh/id_rsa",
                "file:///etc/passwd", "C:\\Windows\\win.ini", "\\\\host\\share", "dsocr-standard-v1.yaml", "."]
WHATIF_BODY = {"name": "fuzz", "base": {"profile": "dsocr-standard-v1", "page": "1654x2339"},
               "sweep": {"hardware": ["h200"], "runtime": ["hf-eager"]},
               "overrides": {"peak_tflops": 989, "memory_tb_per_s": 4.8, "memory_gb": 141, "efficiency_scale": 1.0},
               "target": {"pages_per_day": 1000}}
SERVING_BODY = {"name": "fuzz-serving", "base": {"profile": "dsocr-standard-v1"},
                "sweep": {"hardware": ["h100-sxm"], "runtime": ["vllm"]},
                "serving": {"engine": "vllm-v1", "max_num_seqs": 64, "max_num_batched_tokens": 8192, "block_size": 16,
                            "arrival": {"rate_per_s": [2]}, "pages": {"count": 20, "seed": 1},
                            "page_mix": {"new_tokens": {"median": 700, "p90": 1600, "max": 8000}}},
                "target": {"ttft_p99_s": 5}}


def _numeric_paths(data, path=()):
    if isinstance(data, dict):
        return [p for key, value in data.items() for p in _numeric_paths(value, (*path, key))]
    if isinstance(data, list):
        return [p for index, value in enumerate(data) for p in _numeric_paths(value, (*path, index))]
    return [path] if isinstance(data, (int, float)) and not isinstance(data, bool) else []


def _string_paths(data, path=()):
    if isinstance(data, dict):
        return [p for key, value in data.items() for p in _string_paths(value, (*path, key))]
    return [path] if isinstance(data, str) else []


@pytest.mark.parametrize("endpoint, base", [("/whatif/scenarios", WHATIF_BODY), ("/serving/scenarios", SERVING_BODY)],
                         ids=["whatif", "serving"])
def test_fuzzed_bodies_get_a_declared_status_in_one_line(endpoint, base, registry_url, stored_report):
    """Bodies with numbers at and past their ranges, strings as paths, and structure mutations: every answer is a
    status the contract declares, JSON of one line when an error, never a 500, and /healthz answers within 1 s
    after each. Analyses and simulations are bounded (3 s) so that a valid heavy body answers 504."""
    import copy

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests import fuzzing

    declared = {int(code) for code in OPENAPI["paths"][endpoint]["post"]["responses"]}
    numbers = st.one_of(st.sampled_from(fuzzing.EDGE_INTS), st.sampled_from(fuzzing.EDGE_FLOATS), st.integers(),
                        st.floats(allow_nan=False), st.sampled_from([0, 1, 2, 15, 17, 2**24, 10**6]))

    @st.composite
    def bodies(draw):
        if draw(st.booleans()):
            return draw(fuzzing.mutated_data(base))
        data = copy.deepcopy(base)
        for _ in range(draw(st.integers(1, 2))):
            if draw(st.integers(0, 3)):
                *parent, key = draw(st.sampled_from(_numeric_paths(data)))
                value = draw(numbers)
            else:
                *parent, key = draw(st.sampled_from(_string_paths(data)))
                value = draw(st.sampled_from(PATH_STRINGS))
            target = data
            for part in parent:
                target = target[part]
            target[key] = value
        return data

    config = ServiceConfig(allowed_hosts=TEST_HOSTS, db=registry_url, analysis_timeout_s=3.0,
                           simulation_timeout_s=3.0)
    statuses = []
    with TestClient(create_app(config)) as fuzzed:
        idle_s = 0.0
        for _ in range(5):
            started = time.monotonic()
            assert fuzzed.get("/healthz").status_code == 200
            idle_s = max(idle_s, time.monotonic() - started)

        @settings(max_examples=int(os.environ.get("DSOCR_FUZZ_EXAMPLES", "10")) * 3, deadline=None,
                  derandomize=True, database=None, suppress_health_check=list(HealthCheck))
        @given(body=bodies())
        def check(body):
            raw = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
            answer = fuzzed.post(endpoint, content=raw, headers={"content-type": "application/json"})
            statuses.append(answer.status_code)
            assert answer.status_code in declared, (body, answer.status_code, answer.text)
            assert answer.status_code != 500, (body, answer.text)
            assert "\n" not in answer.text
            if answer.status_code >= 400:
                message = one_line_error(answer)
                assert "root:" not in message and len(message) <= 600, message
                if answer.status_code >= 500:
                    assert answer.status_code == 504 and "timed out" in message, (body, message)
            started = time.monotonic()
            assert fuzzed.get("/healthz").status_code == 200
            assert time.monotonic() - started < idle_s + 1.0

        check()
    assert 400 in statuses, statuses
    print(endpoint, sorted(statuses))

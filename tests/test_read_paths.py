"""Paths that only read what the registry holds never import torch or transformers (seconds of start-up and
gigabytes of address space): each runs in a fresh interpreter, which reports the heavy modules it imported and
from where."""

import json
import subprocess
import sys
import textwrap

import pytest
import yaml

from tests.helpers import REPO, rows, run_command

HEAVY_MODULES = ("torch", "transformers")

# Runs before the code under test: notes the stack (this repository's frames) of each heavy module's first import.
WATCH = """
import json, sys, traceback

HEAVY_MODULES = %r
first_import = {}


class WatchHeavyImports:
    def find_spec(self, name, path=None, target=None):
        if name in HEAVY_MODULES and name not in first_import:
            frames = [f for f in traceback.format_stack()[:-1] if "/registry/" in f or "/analyzer/" in f]
            first_import[name] = "".join(frames[-8:])
        return None  # the import itself goes on as usual


sys.meta_path.insert(0, WatchHeavyImports())
""" % (HEAVY_MODULES,)

REPORT = """
print("HEAVY " + json.dumps({name: first_import.get(name, "") for name in HEAVY_MODULES if name in sys.modules}))
"""


def heavy_imports(code: str) -> dict[str, str]:
    """{heavy module: where it was first imported} of `code` run in a fresh interpreter (empty: none imported)."""
    done = subprocess.run([sys.executable, "-c", WATCH + textwrap.dedent(code) + REPORT], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1].removeprefix("HEAVY "))


def command_imports(args: list[str]) -> dict[str, str]:
    """heavy_imports of `dsocr-registry ARGS` (run in-process there, through the entry point's error handling)."""
    return heavy_imports(f"""
        from tests.helpers import run_command
        result = run_command({args!r})
        assert result.exit_code == 0, result.output
    """)


def service_imports(db: str, calls: str) -> dict[str, str]:
    """heavy_imports of the service's process answering `calls` (statements on `client`, a TestClient)."""
    return heavy_imports(f"""
        from starlette.testclient import TestClient
        from registry.interfaces.service import ServiceConfig, create_app

        config = ServiceConfig(allowed_hosts=("testserver",), db={db!r}, shutdown_grace_s=0)
        with TestClient(create_app(config)) as client:
    """ + textwrap.indent(textwrap.dedent(calls), " " * 12))


RUN_REQUEST = {"model_id": "deepseek-ai/DeepSeek-OCR", "workload_profile_id": "dsocr-standard-v1"}
STORED_WHATIF = {"name": "stored", "base": {"profile": "dsocr-standard-v1"},
                 "sweep": {"hardware": ["h200", "h100-sxm"], "runtime": ["hf-eager"]}}
SERVING = {"name": "stored-probes", "base": {"profile": "dsocr-standard-v1"},
           "sweep": {"hardware": ["h100-sxm"], "runtime": ["vllm"]},
           "serving": {"arrival": {"rate_per_s": [2]}, "pages": {"count": 40, "seed": 7}}}


@pytest.fixture
def stored(tmp_path, report_files):
    """A DuckDB registry holding the standard report, and the id of that report."""
    db = str(tmp_path / "registry.duckdb")
    ingested = run_command(["ingest", str(report_files["standard"]), "--db", db])
    assert ingested.exit_code == 0, ingested.output
    return db, rows(db, "SELECT report_id FROM reports")[0][0]


def test_the_service_process_does_not_import_torch(stored):
    """A run request is keyed and accepted in the service's process: the analysis (torch) is a worker's."""
    db, report_id = stored
    assert service_imports(db, f"""
        accepted = client.post("/analytic/deepseek-ocr/run", json={RUN_REQUEST!r})
        assert accepted.status_code == 202, accepted.text
    """) == {}


def test_reading_paths_import_neither_torch_nor_transformers(stored, tmp_path):
    db, report_id = stored
    whatif = tmp_path / "stored.yaml"
    whatif.write_text(yaml.safe_dump(STORED_WHATIF))
    serving = tmp_path / "serving.yaml"
    serving.write_text(yaml.safe_dump(SERVING))
    # the probes of the serving scenario, analyzed and stored once (this process may import torch)
    first = run_command(["serve-sim", "--scenario", str(serving), "--db", db, "--rate", "2"])
    assert first.exit_code == 0, first.output
    imported = {
        "sql": command_imports(["sql", "SELECT report_id FROM v_reports", "--db", db]),
        "whatif over stored reports": command_imports(["whatif", "--scenario", str(whatif), "--db", db,
                                                       "--plot", str(tmp_path / "stored.png")]),
        "summary of a stored report": command_imports(["summary", report_id, "--db", db]),
        "serve-sim from stored probes": command_imports(["serve-sim", "--scenario", str(serving), "--db", db,
                                                         "--rate", "3"]),
        "serve answering summaries and what-ifs": service_imports(db, f"""
            summary = client.get("/analytic/deepseek-ocr/{report_id}/summary")
            assert summary.status_code == 200, summary.text
            whatif = client.post("/whatif/scenarios", json={STORED_WHATIF!r})
            assert whatif.status_code == 200, whatif.text
        """),
    }
    assert {path: found for path, found in imported.items() if found} == {}
    assert rows(db, "SELECT COUNT(*) FROM serving_points") == [(2,)]  # the second simulation was run and recorded

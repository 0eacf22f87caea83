"""Analysis runs of the HTTP service, kept in the registry (table analysis_runs) so that their state outlives the
process that serves them.

A run is queued, then running, then done (with the report it stored) or failed (with one line). Identical requests
share a request key (registry.interfaces.contract.request_key): while a run of a key is queued or running, an identical request
joins it instead of starting another. A run's owner is the service process running it, which touches `updated_at`
while it works; a run whose owner stopped (a process of this host that is gone, or silent for STALE_AFTER_S) is
interrupted: reported done if its report was stored, failed otherwise.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import uuid

import sqlalchemy as sa

ACTIVE = ("queued", "running")
STALE_AFTER_S = 60.0  # an owner touches its runs every few seconds; this much silence means it stopped
INTERRUPTED = "interrupted: the service running it stopped before the analysis was stored"


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)


def new_owner() -> str:
    """This process, as a run's owner: host, process id, and a nonce (a process id is reused after a restart)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_gone(owner: str) -> bool:
    """True when the owner is a process of this host that no longer exists (other hosts: see STALE_AFTER_S)."""
    host, _, rest = owner.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname()[:60] or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


_COLUMNS = "run_id, request_key, request, status, report_id, error, owner, created_at, updated_at"


def _row(result) -> dict | None:
    row = result.mappings().first()
    return dict(row) if row is not None else None


def get_run(conn, run_id: str) -> dict | None:
    return _row(conn.execute(sa.text(f"SELECT {_COLUMNS} FROM analysis_runs WHERE run_id = :r"), {"r": run_id}))


def is_stale(run: dict, at: datetime.datetime | None = None) -> bool:
    """An active run whose owner stopped."""
    if run["status"] not in ACTIVE:
        return False
    silent_s = ((at or now_utc()) - run["updated_at"]).total_seconds()
    return silent_s > STALE_AFTER_S or owner_is_gone(run["owner"])


def accept_run(conn, key: str, request: dict, owner: str, reused_report_id: str | None = None) -> tuple[dict, bool]:
    """The run that answers a request: the active run of the same key if there is one (joined), else a new run,
    queued (or done at once when `reused_report_id` names the stored report). Returns (run, created)."""
    if conn.dialect.name == "postgresql":
        # instances sharing the registry take turns per key; the lock ends with the transaction
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": key})
    if reused_report_id is None:
        active = conn.execute(sa.text(
            f"SELECT {_COLUMNS} FROM analysis_runs WHERE request_key = :k AND status IN ('queued', 'running') "
            "ORDER BY created_at"), {"k": key}).mappings().all()
        for run in map(dict, active):
            if is_stale(run):
                finish(conn, run["run_id"], "failed", error=INTERRUPTED)
            else:
                return run, False
    at = now_utc()
    run = {"run_id": "run-" + uuid.uuid4().hex[:20], "request_key": key,
           "request": json.dumps(request, sort_keys=True), "status": "queued" if reused_report_id is None else "done",
           "report_id": reused_report_id, "error": None, "owner": owner, "created_at": at, "updated_at": at}
    conn.execute(sa.text(
        "INSERT INTO analysis_runs (run_id, request_key, request, status, report_id, error, owner, created_at, "
        "updated_at) VALUES (:run_id, :request_key, :request, :status, :report_id, :error, :owner, :created_at, "
        ":updated_at)"), run)
    return run, True


def start(conn, run_id: str) -> None:
    conn.execute(sa.text("UPDATE analysis_runs SET status = 'running', updated_at = :t WHERE run_id = :r "
                         "AND status = 'queued'"), {"r": run_id, "t": now_utc()})


def touch(conn, run_ids: list[str]) -> None:
    """The owner is alive: refresh updated_at of its active runs."""
    if run_ids:
        conn.execute(sa.text("UPDATE analysis_runs SET updated_at = :t WHERE status IN ('queued', 'running') "
                             "AND run_id IN :ids").bindparams(sa.bindparam("ids", expanding=True)),
                     {"t": now_utc(), "ids": list(run_ids)})


def finish(conn, run_id: str, status: str, report_id: str | None = None, error: str | None = None) -> None:
    conn.execute(sa.text("UPDATE analysis_runs SET status = :s, report_id = :rep, error = :e, updated_at = :t "
                         "WHERE run_id = :r"),
                 {"r": run_id, "s": status, "rep": report_id, "e": error, "t": now_utc()})


def interrupted_runs(conn, owner: str | None = None, every_active: bool = False) -> list[dict]:
    """Active runs to settle: those of `owner`, or every active run (a DuckDB file has one process), or those whose
    owner stopped."""
    runs = [dict(r) for r in conn.execute(sa.text(
        f"SELECT {_COLUMNS} FROM analysis_runs WHERE status IN ('queued', 'running')")).mappings().all()]
    if every_active:
        return runs
    if owner is not None:
        return [r for r in runs if r["owner"] == owner]
    return [r for r in runs if is_stale(r)]


def settle_interrupted(registry, runs: list[dict], error: str = INTERRUPTED) -> list[tuple[str, str]]:
    """Mark interrupted runs done (their report was stored before the stop) or failed; [(run id, status)]."""
    from registry.interfaces.contract import DeepSeekOCRAnalyticRequest, stored_report_id

    settled = []
    for run in runs:
        request = DeepSeekOCRAnalyticRequest(**json.loads(run["request"]))
        report_id = None if request.force_rebuild else stored_report_id(registry, request)
        with registry.begin() as conn:
            current = get_run(conn, run["run_id"])
            if current is None or current["status"] not in ACTIVE:
                continue
            if report_id is not None:
                finish(conn, run["run_id"], "done", report_id=report_id)
            else:
                finish(conn, run["run_id"], "failed", error=error)
        settled.append((run["run_id"], "done" if report_id is not None else "failed"))
    return settled


def describe_run(run: dict, at: datetime.datetime | None = None) -> dict:
    """A run as the API answers it (RunStatus); a run whose owner stopped reads as failed."""
    status, error = run["status"], run["error"]
    if is_stale(run, at):
        status, error = "failed", INTERRUPTED
    return {"run_id": run["run_id"], "status": status, "report_id": run["report_id"], "error": error,
            "request": json.loads(run["request"]),
            "created_at": run["created_at"].isoformat() + "Z", "updated_at": run["updated_at"].isoformat() + "Z"}

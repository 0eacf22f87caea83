"""All or nothing under concurrency and failure: `db upgrade` run twice at once on PostgreSQL, `export` that fails
part-way (a full disk, an error on one file)."""

import pathlib
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import POSTGRES_URL, postgres_schema
from tests.helpers import rows, run_command

needs_postgres = pytest.mark.skipif(not POSTGRES_URL, reason="set DSOCR_TEST_POSTGRES_URL to run the PostgreSQL tests")


def _upgrade_when_released(url: str, start: pathlib.Path, lock_timeout_s: float = 120) -> subprocess.Popen:
    """`db upgrade` in another process, started (imports done) and then held until `start` exists, so that several
    of them begin their upgrades at the same moment."""
    code = textwrap.dedent(f"""
        import pathlib, sys, time
        from registry.cli import cli
        from registry.entry import run_cli
        import registry.db, alembic.command  # imported before the start, as the upgrade needs them
        print("ready", flush=True)
        while not pathlib.Path({str(start)!r}).exists():
            time.sleep(0.005)
        run_cli(cli, ["db", "upgrade", "--db", {url!r}, "--lock-timeout", "{lock_timeout_s}"])
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


@needs_postgres
def test_two_upgrades_at_once_take_turns(tmp_path):
    """Both succeed: one creates the schema, the other waits for it and then finds it current."""
    from registry.db import Registry
    from registry.views import view_names

    with postgres_schema("t") as url:
        start = tmp_path / "start"
        procs = [_upgrade_when_released(url, start) for _ in range(2)]
        start.touch()
        results = [(proc.wait(timeout=300), proc.stdout.read(), proc.stderr.read()) for proc in procs]
        assert [code for code, _, _ in results] == [0, 0], results
        head = Registry(url).head_revision()
        outputs = sorted(out.strip().rsplit(" ", 3)[-3:] == ["revision", head, "(current)"] for _, out, _ in results)
        assert outputs == [False, True], results  # one upgraded, one found it current
        assert any(f"upgraded (empty) -> {head}" in out for _, out, _ in results), results
        assert rows(url, "SELECT version_num FROM alembic_version") == [(head,)]
        views = rows(url, "SELECT table_name FROM information_schema.views WHERE table_schema = current_schema() "
                          "ORDER BY table_name")
        assert [name for (name,) in views] == sorted(view_names())


@needs_postgres
def test_an_upgrade_gives_up_on_a_held_upgrade_lock_and_other_schemas_go_on():
    """A connection holding the schema's upgrade lock (as a running upgrade does) makes `db upgrade` wait up to
    --lock-timeout and then stop with one line, having changed nothing; a second schema is not held up by it."""
    import sqlalchemy as sa

    from registry.db import UPGRADE_LOCK_SQL

    with postgres_schema("t") as held_url, postgres_schema("t") as other_url:
        holder = sa.create_engine(held_url)
        try:
            with holder.connect() as conn:
                conn.execute(sa.text(UPGRADE_LOCK_SQL))  # held until this transaction ends
                started = time.monotonic()
                result = run_command(["db", "upgrade", "--db", held_url, "--lock-timeout", "1"])
                waited_s = time.monotonic() - started
                other_started = time.monotonic()
                other = run_command(["db", "upgrade", "--db", other_url, "--lock-timeout", "1"])
                other_s = time.monotonic() - other_started
                conn.rollback()
        finally:
            holder.dispose()
        assert result.exit_code == 2
        errors = [line for line in result.stderr.splitlines() if line.startswith("dsocr-registry: error")]
        where = held_url.split("@", 1)[1].split("?")[0]
        assert len(errors) == 1 and errors[0].startswith("dsocr-registry: error: another db upgrade is running on ")
        assert where in errors[0] and errors[0].endswith("(gave up after 1 s; nothing was changed)")
        assert 1 <= waited_s < 20
        assert rows(held_url, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()"
                    ) == [(0,)]
        assert other.exit_code == 0 and "upgraded (empty) -> " in other.stdout, other.output
        assert other_s < 60
        again = run_command(["db", "upgrade", "--db", held_url, "--lock-timeout", "1"])
        assert again.exit_code == 0 and "upgraded (empty) -> " in again.stdout, again.output

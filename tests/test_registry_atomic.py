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
        from registry.interfaces.cli import cli
        from registry.interfaces.entry import run_cli
        import registry.store.db, alembic.command  # imported before the start, as the upgrade needs them
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
    from registry.store.db import Registry
    from registry.store.views import view_names

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

    from registry.store.db import UPGRADE_LOCK_SQL

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


# -- export --parquet: a new folder takes the old one's place, or nothing changes ----------------------------------

def _files(folder: pathlib.Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def _previous_export(registry_url, report_files, tmp_path) -> tuple[pathlib.Path, dict[str, bytes]]:
    """An export of a registry of one report, then a second report ingested (so a new export differs)."""
    out = tmp_path / "exports" / "parquet"
    assert run_command(["ingest", str(report_files["base"]), "--db", registry_url]).exit_code == 0
    first = run_command(["export", "--parquet", str(out), "--db", registry_url])
    assert first.exit_code == 0, first.output
    assert run_command(["ingest", str(report_files["standard"]), "--db", registry_url]).exit_code == 0
    return out, _files(out)


def _one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_an_export_replaces_the_previous_one_as_a_whole(registry_url, report_files, tmp_path):
    import pyarrow.parquet as pq

    from registry.store.export import table_names
    from registry.store.views import view_names

    out, before = _previous_export(registry_url, report_files, tmp_path)
    (out / "v_of_an_older_release.parquet").write_bytes(before["reports.parquet"])
    result = run_command(["export", "--parquet", str(out), "--db", registry_url])
    assert result.exit_code == 0, result.output
    assert sorted(_files(out)) == sorted(f"{name}.parquet" for name in table_names() + view_names())
    assert pq.read_table(out / "reports.parquet").num_rows == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["parquet"]  # no folder left beside it


@pytest.mark.parametrize("error, exit_code, line", [
    (OSError(5, "Input/output error"), 2, "dsocr-registry: error: cannot write the export {out}: Input/output "
                                          "error (it is left as it was)"),
    (RuntimeError("a bug"), 3, "dsocr-registry: error: internal error: RuntimeError: a bug"),
])
def test_an_error_on_the_third_file_leaves_the_previous_export(registry_url, report_files, tmp_path, monkeypatch,
                                                               error, exit_code, line):
    import registry.store.export as export

    out, before = _previous_export(registry_url, report_files, tmp_path)
    write_table = export.pq.write_table
    written = []

    def third_fails(table, where, *args, **kwargs):
        if len(written) == 2:
            raise error
        written.append(where)
        write_table(table, where, *args, **kwargs)

    monkeypatch.setattr(export.pq, "write_table", third_fails)
    result = run_command(["export", "--parquet", str(out), "--db", registry_url])
    assert result.exit_code == exit_code
    assert _one_error_line(result).startswith(line.format(out=out))
    assert len(written) == 2 and all(pathlib.Path(w).parent != out for w in written)  # written beside, not in it
    assert _files(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["parquet"]


def test_a_full_disk_mid_export_leaves_the_previous_export(registry_url, report_files, tmp_path):
    """The export runs under a file size limit that the largest of its files exceeds (as a full disk would stop it)."""
    out, before = _previous_export(registry_url, report_files, tmp_path)
    reference = tmp_path / "reference"
    assert run_command(["export", "--parquet", str(reference), "--db", registry_url]).exit_code == 0
    sizes = sorted(len(data) for data in _files(reference).values())
    limit = sizes[-1] // 2  # the largest files exceed it (their sizes vary a little from export to export)
    code = textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        from registry.interfaces.cli import cli
        from registry.interfaces.entry import run_cli
        run_cli(cli, ["export", "--parquet", {str(out)!r}, "--db", {registry_url!r}])
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    line = _one_error_line(result)
    assert line.startswith(f"dsocr-registry: error: cannot write the export {out}: ") and "File too large" in line
    assert line.endswith("(it is left as it was)")
    assert _files(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["parquet"]


def test_a_failed_swap_puts_the_previous_export_back(registry_url, report_files, tmp_path, monkeypatch):
    import registry.store.export as export

    out, before = _previous_export(registry_url, report_files, tmp_path)
    rename = export.os.rename

    def new_folder_refused(source, target):
        if str(source).endswith(".new"):
            raise OSError(28, "No space left on device")
        rename(source, target)

    monkeypatch.setattr(export.os, "rename", new_folder_refused)
    result = run_command(["export", "--parquet", str(out), "--db", registry_url])
    assert result.exit_code == 2
    assert _one_error_line(result) == (f"dsocr-registry: error: cannot write the export {out}: No space left on "
                                       "device (it is left as it was)")
    assert _files(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["parquet"]


def test_an_export_refuses_a_folder_it_would_not_only_replace(registry_url, tmp_path, monkeypatch):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "notes.txt").write_text("mine")
    (mixed / "reports.parquet").write_bytes(b"old")
    result = run_command(["export", "--parquet", str(mixed), "--db", registry_url])
    assert result.exit_code == 2
    assert _one_error_line(result) == (
        f"dsocr-registry: error: {mixed} holds more than an export ('notes.txt'), which replacing it would remove: "
        "give a new folder, or one that holds only a previous export (nothing was written)")
    assert _files(mixed) == {"notes.txt": b"mine", "reports.parquet": b"old"}
    link = tmp_path / "link"
    link.symlink_to(mixed)
    linked = run_command(["export", "--parquet", str(link), "--db", registry_url])
    assert linked.exit_code == 2 and "is a symbolic link" in _one_error_line(linked)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    current = run_command(["export", "--parquet", ".", "--db", registry_url])
    assert current.exit_code == 2 and "is the current folder or holds it" in _one_error_line(current)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

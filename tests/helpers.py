"""Helpers shared by the tests: the repository's folders, the CLI run in-process, database rows, report edits."""

from __future__ import annotations

import hashlib
import json
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent
# The user's documentation: the README first, then every page under docs/ (sorted, so texts concatenate the same way).
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def doc_text() -> str:
    """The README and every page under docs/, as one text (each file's commands and figures are checked together)."""
    return "\n".join(path.read_text() for path in DOC_FILES)


def run_command(args, input=None):
    """Run `dsocr-registry ARGS` in-process through the real entry point's error handling."""
    import click
    from click.testing import CliRunner

    from registry.interfaces.cli import cli
    from registry.interfaces.entry import run_cli

    @click.command()
    def entry():
        run_cli(cli, list(args))

    return CliRunner().invoke(entry, [], input=input, catch_exceptions=False)


def upgrade_to(conn, revision: str, views: bool = False) -> None:
    """Alembic's upgrade to `revision` in this transaction; `views`: as `db upgrade` does (views and catalogs,
    which this code creates only at the head), else the migrations alone."""
    from alembic import command

    from registry.store.db import alembic_config

    cfg = alembic_config(conn)
    cfg.attributes["recreate_views"] = views
    command.upgrade(cfg, revision)


def rows(db_url, query, **params):
    """The rows of one query against a registry, as tuples."""
    import sqlalchemy as sa

    from registry.store.db import Registry

    registry = Registry(db_url)
    try:
        with registry.begin() as conn:
            return [tuple(r) for r in conn.execute(sa.text(query), params).all()]
    finally:
        registry.dispose()


REPORT_TABLES = ["architectures", "modules", "workloads", "reports", "report_stages", "module_metrics",
                 "operator_metrics", "operator_cost_groups"]


def table_counts(db_url, tables=REPORT_TABLES):
    return {name: rows(db_url, f"SELECT COUNT(*) FROM {name}")[0][0] for name in tables}


def reid(data: dict) -> dict:
    """Give an edited report mapping the report_id of its new content, so that the edit itself is what a reader
    validates (the same canonical JSON as analyzer.report.compute_report_id, NaN allowed so that bad numbers get
    through to validation)."""
    body = {k: v for k, v in data.items() if k != "report_id"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    data["report_id"] = "dsocr-" + hashlib.sha256(canonical.encode()).hexdigest()[:24]
    return data


def without_kv_roles(data: dict) -> dict:
    """A report mapping of schema version 4 in the layout of version 3 (in place): without matmul_weight_bytes and
    the operator rows' KV-cache bytes, which version 4 added. The caller sets the version and re-identifies it."""
    data.pop("matmul_weight_bytes")
    for snapshot in data["module_metrics"]:
        for op in snapshot["operators"]:
            del op["kv_cache_bytes_read"], op["kv_cache_bytes_written"]
    return data


def as_version_3(report):
    """A schema-4 report as the same analysis would have been written at schema version 3 (no KV split)."""
    import attrs

    from analyzer.report import with_report_id

    snapshots = tuple(attrs.evolve(s, operators=tuple(attrs.evolve(op, kv_cache_bytes_read=None,
                                                                   kv_cache_bytes_written=None)
                                                      for op in s.operators)) for s in report.module_metrics)
    return with_report_id(attrs.evolve(report, schema_version=3, matmul_weight_bytes=None, module_metrics=snapshots))


def write_edited(source: pathlib.Path, target: pathlib.Path, edit, keep_id: bool = False) -> pathlib.Path:
    """A copy of a JSON report with `edit(mapping)` applied, re-identified unless `keep_id` (then the id no longer
    matches the content)."""
    data = json.loads(source.read_text())
    edit(data)
    if not keep_id:
        reid(data)
    target.write_text(json.dumps(data, allow_nan=True))
    return target


def head_revision() -> str:
    """The schema revision this code's migrations end at (what `db upgrade` reaches)."""
    from alembic.script import ScriptDirectory

    from registry.store.db import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


HEAD = head_revision()

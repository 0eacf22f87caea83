"""The SQL views, kept as files in queries/views/ (one CREATE VIEW per file, applied in file-name order)."""

from __future__ import annotations

import pathlib
import re

import sqlalchemy as sa
from sqlalchemy.engine import Connection

_VIEW_NAME = re.compile(r"CREATE\s+VIEW\s+(\w+)", re.IGNORECASE)


def queries_dir() -> pathlib.Path:
    """The repository's queries/ folder, shipped in the package as registry.queries."""
    import importlib.resources

    return pathlib.Path(str(importlib.resources.files("registry.queries")))


def view_files() -> list[pathlib.Path]:
    return sorted((queries_dir() / "views").glob("*.sql"))


def view_sql(path: pathlib.Path) -> tuple[str, str]:
    text = path.read_text("utf-8")
    match = _VIEW_NAME.search(text)
    if not match:
        raise ValueError(f"{path}: no CREATE VIEW statement")
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--")).strip().rstrip(";")
    return match.group(1), body


def view_names() -> list[str]:
    return [view_sql(path)[0] for path in view_files()]


def drop_views(conn: Connection) -> None:
    for name in reversed(view_names()):
        conn.execute(sa.text(f"DROP VIEW IF EXISTS {name}"))


def create_views(conn: Connection) -> None:
    for path in view_files():
        _, body = view_sql(path)
        conn.execute(sa.text(body))

"""The SQL views, kept as files in queries/views/ (one CREATE VIEW per file, applied in file-name order)."""

from __future__ import annotations

import pathlib
import re

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from registry.db import REPO_ROOT

VIEWS_DIR = REPO_ROOT / "queries" / "views"
_VIEW_NAME = re.compile(r"CREATE\s+VIEW\s+(\w+)", re.IGNORECASE)


def view_files() -> list[pathlib.Path]:
    return sorted(VIEWS_DIR.glob("*.sql"))


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

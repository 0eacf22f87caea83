"""The SQL views, kept as files in queries/views/ (one CREATE VIEW per file, applied in file-name order), and their
data dictionary (queries/views/dictionary.yaml: what each view and each of its columns means), stored as COMMENTs
that BI tools show.

A view reads only tables and views of earlier files, so recreating one view means recreating the views after it
too. An upgrade recreates only what changed: the sha256 of each view's SQL and comments is kept in
view_definitions, and the privileges granted on views that are dropped are granted again on the new ones.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pathlib
import re

import sqlalchemy as sa
from sqlalchemy.engine import Connection

_VIEW_NAME = re.compile(r"CREATE\s+VIEW\s+(\w+)", re.IGNORECASE)
DICTIONARY_FILE = "dictionary.yaml"


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


@functools.cache
def dictionary() -> dict:
    """{"columns": {column: text}, "views": {view: {"comment": text, "columns": {column: text}}}}."""
    import yaml

    return yaml.safe_load((queries_dir() / "views" / DICTIONARY_FILE).read_text("utf-8"))


def view_comment(name: str) -> str | None:
    return (dictionary()["views"].get(name) or {}).get("comment")


def column_comment(view: str, column: str) -> str | None:
    """A column's meaning: the view's own text for it, else the text shared by every view with that column, else
    the description of the cost model's term of that name (a term the dictionary does not name yet)."""
    own = (dictionary()["views"].get(view) or {}).get("columns") or {}
    return own.get(column) or dictionary()["columns"].get(column) or _cost_term_description(column)


def _cost_term_description(column: str) -> str | None:
    from registry.pricing import model

    for term in (*model.ROW_TERMS, *model.STAGE_HOST_TERMS):
        if term.name == column:
            return term.description[0].upper() + term.description[1:] + "."
    return None


def definition_hash(name: str, body: str) -> str:
    entry = dictionary()["views"].get(name) or {}
    return hashlib.sha256(json.dumps([body, entry, dictionary()["columns"]], sort_keys=True).encode()).hexdigest()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_columns(conn: Connection, name: str) -> list[tuple[str, str]]:
    """(column, data type) of a view of the current schema, in order."""
    return [(c, t) for c, t in conn.execute(sa.text(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = :v ORDER BY ordinal_position"), {"v": name}).all()]


def _has_definitions_table(conn: Connection) -> bool:
    return bool(conn.execute(sa.text(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() "
        "AND table_name = 'view_definitions'")).scalar())


def _ordered(names) -> list[tuple[str, str]]:
    wanted = set(names) if names is not None else None
    return [(name, body) for name, body in map(view_sql, view_files()) if wanted is None or name in wanted]


def drop_views(conn: Connection, names=None) -> None:
    for name, _ in reversed(_ordered(names)):
        conn.execute(sa.text(f"DROP VIEW IF EXISTS {name}"))


def create_views(conn: Connection, names=None, grants: list[tuple[str, str, str]] = ()) -> None:
    """Create the views (all, or `names`) with their comments, record their definitions, and grant `grants`
    ((view, grantee, privilege)) again."""
    record = _has_definitions_table(conn)
    for name, body in _ordered(names):
        conn.execute(sa.text(body))
        comment = view_comment(name)
        if comment:
            conn.execute(sa.text(f"COMMENT ON VIEW {name} IS {_literal(comment)}"))
        for column, _ in view_columns(conn, name):
            text = column_comment(name, column)
            if text:
                conn.execute(sa.text(f"COMMENT ON COLUMN {name}.{column} IS {_literal(text)}"))
        if record:
            conn.execute(sa.text("DELETE FROM view_definitions WHERE name = :n"), {"n": name})
            conn.execute(sa.text("INSERT INTO view_definitions (name, definition_sha256) VALUES (:n, :h)"),
                         {"n": name, "h": definition_hash(name, body)})
    restore_grants(conn, grants)


def view_grants(conn: Connection, names=None) -> list[tuple[str, str, str]]:
    """(view, grantee, privilege) of every privilege granted on the views (PostgreSQL; DuckDB has no roles),
    the owner's own left out."""
    if conn.dialect.name != "postgresql":
        return []
    wanted = {name for name, _ in _ordered(names)}
    rows = conn.execute(sa.text(
        "SELECT c.relname, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, "
        "a.privilege_type FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "CROSS JOIN LATERAL aclexplode(c.relacl) a "
        "WHERE n.nspname = current_schema() AND c.relkind = 'v' AND a.grantee <> c.relowner "
        "ORDER BY 1, 2, 3")).all()
    return [tuple(r) for r in rows if r[0] in wanted]


def restore_grants(conn: Connection, grants) -> None:
    for view, grantee, privilege in grants:
        who = "PUBLIC" if grantee == "PUBLIC" else '"' + grantee.replace('"', '""') + '"'
        conn.execute(sa.text(f"GRANT {privilege} ON {view} TO {who}"))


def changed_views(conn: Connection) -> list[str]:
    """The views to recreate: from the first whose SQL or comments differ from what was recorded (or that is
    missing) to the last, since later views may read it. Empty when every view is as this code defines it."""
    if not _has_definitions_table(conn):
        return view_names()
    recorded = dict(conn.execute(sa.text("SELECT name, definition_sha256 FROM view_definitions")).all())
    existing = {r[0] for r in conn.execute(sa.text(
        "SELECT table_name FROM information_schema.views WHERE table_schema = current_schema()")).all()}
    ordered = _ordered(None)
    for index, (name, body) in enumerate(ordered):
        if name not in existing or recorded.get(name) != definition_hash(name, body):
            return [n for n, _ in ordered[index:]]
    return []


def sync_views(conn: Connection) -> list[str]:
    """Recreate the views that changed (and those after them), keeping their grants; returns their names."""
    names = changed_views(conn)
    if names:
        grants = view_grants(conn, names)
        drop_views(conn, names)
        stale = set(view_names())  # views of older code that no longer exist keep no definition
        if _has_definitions_table(conn):
            for (name,) in conn.execute(sa.text("SELECT name FROM view_definitions")).all():
                if name not in stale:
                    conn.execute(sa.text("DELETE FROM view_definitions WHERE name = :n"), {"n": name})
        create_views(conn, names, grants)
    return names


def table_comment(name: str) -> str | None:
    return (dictionary().get("tables") or {}).get(name)


def sync_table_comments(conn: Connection) -> list[str]:
    """COMMENT ON TABLE for each base table whose comment is not the dictionary's (BI tools show it); the names
    of those changed, none when every comment is current (an upgrade at the head then changes nothing)."""
    from registry.store.models import Base

    if conn.dialect.name == "postgresql":
        stored = dict(conn.execute(sa.text(
            "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')")).all())
    else:
        stored = dict(conn.execute(sa.text(
            "SELECT table_name, comment FROM duckdb_tables() WHERE NOT internal AND NOT temporary "
            "AND schema_name = current_schema() AND database_name = current_database()")).all())
    changed = []
    for table in Base.metadata.sorted_tables:
        text = table_comment(table.name)
        if text and table.name in stored and stored[table.name] != text:
            conn.execute(sa.text(f"COMMENT ON TABLE {table.name} IS {_literal(text)}"))
            changed.append(table.name)
    return changed


def create_temp_copies(conn: Connection, tables: tuple[str, ...]) -> None:
    """Empty temporary tables of the columns of `tables`, and temporary copies of the views that read them, in
    this connection: unqualified names then resolve to the copies (temporary objects come first on DuckDB and
    PostgreSQL), so pricing writes only what this connection sees and needs no more than SELECT and TEMP."""
    for table in tables:
        conn.execute(sa.text(f"CREATE TEMPORARY TABLE {table} AS SELECT * FROM {table} WHERE 1 = 0"))
    shadowed = set(tables)
    for name, body in _ordered(None):
        if any(re.search(rf"\b{other}\b", body) for other in shadowed):
            conn.execute(sa.text(re.sub(r"^CREATE\s+VIEW", "CREATE TEMPORARY VIEW", body, count=1,
                                        flags=re.IGNORECASE)))
            shadowed.add(name)


def data_dictionary(conn: Connection) -> list[dict]:
    """Every view of the database with its comment, and each column with its type and comment, as the database
    holds them (what BI tools show)."""
    if conn.dialect.name == "postgresql":
        views = conn.execute(sa.text(
            "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'v'"
        )).all()
        columns = conn.execute(sa.text(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), col_description(c.oid, a.attnum) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid "
            "WHERE n.nspname = current_schema() AND c.relkind = 'v' AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY c.relname, a.attnum")).all()
    else:
        views = conn.execute(sa.text(
            "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal AND NOT temporary "
            "AND schema_name = current_schema() AND database_name = current_database()")).all()
        columns = conn.execute(sa.text(
            "SELECT table_name, column_name, data_type, comment FROM duckdb_columns() "
            "WHERE schema_name = current_schema() AND database_name = current_database() "
            "AND table_name IN (SELECT view_name FROM duckdb_views() WHERE NOT internal) "
            "ORDER BY table_name, column_index")).all()
    order = {name: i for i, name in enumerate(view_names())}
    out = {name: {"view": name, "comment": comment, "columns": []} for name, comment in views}
    for view, column, data_type, comment in columns:
        if view in out:
            out[view]["columns"].append({"column": column, "type": data_type.lower(), "comment": comment})
    return sorted(out.values(), key=lambda v: (order.get(v["view"], len(order)), v["view"]))

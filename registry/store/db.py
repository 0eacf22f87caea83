"""Database URLs, engines, transactions, and the schema-revision gate.

- A plain path (or nothing: ./dsocr-registry.duckdb) is a DuckDB file; `postgresql://` URLs use psycopg 3.
- DuckDB lets one process open a file read-write and no other process open it at all while it does: connections
  are opened per unit of work (NullPool), and a locked file is retried with backoff for a bounded time.
- `sql` reads through a connection that cannot write or reach outside the database: DuckDB opened read-only with
  external access and extension loading off and its configuration locked; PostgreSQL one cursor (one SELECT,
  VALUES or TABLE query) in a READ ONLY transaction, run by a role that may read the registry and nothing else.
- Every command except `db ...` refuses a database whose revision differs from the code's, naming the command
  that fixes it; a DuckDB file that does not exist yet is created at the current revision.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from registry.defaults import DEFAULT_STORAGE_VERSION  # noqa: F401 - part of this module's interface
from registry.store.errors import (DatabaseError, DatabaseFailedError, DatabaseLockedError,  # noqa: F401
                                   DatabaseUnavailableError, RegistryError, ReportNotFoundError,
                                   SchemaMismatchError)

DEFAULT_DB = "dsocr-registry.duckdb"
URL_ENV = "DSOCR_REGISTRY_URL"
DEFAULT_LOCK_TIMEOUT_S = 30.0
CONNECTION_LEASE_S = 1.0
# `sql`: rows fetched from the database at a time, and the default bound on the time the database spends on a query.
QUERY_BATCH_ROWS = 10_000
DEFAULT_QUERY_TIMEOUT_S = 300.0
# DuckDB settings of the connection `sql` runs on: no file, URL or extension outside the database file, and no
# statement that changes them (lock_configuration also refuses SET and PRAGMA).
DUCKDB_QUERY_CONFIG = {
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "lock_configuration": True,
}
# PostgreSQL: the role `sql` runs a query as when the connected role may touch server files or programs (a superuser,
# a member of pg_read_server_files, pg_write_server_files or pg_execute_server_program): it may log in nowhere and
# read the registry only. The query runs inside SQL_ROWS_FUNCTION, a SECURITY DEFINER function this role owns, where
# PostgreSQL refuses a change of role (set_config('role', ...)) that would otherwise take the connected role back.
SQL_READER_ROLE = "dsocr_sql_reader"
SQL_ROWS_FUNCTION = "dsocr_sql_rows"
_SQL_ROWS_BODY = " BEGIN RETURN QUERY EXECUTE query; END "


def database_failed(exc: BaseException) -> bool:
    """Whether a driver error is the database failing rather than refusing a statement: a connection SQLAlchemy
    invalidated, or the DB-API's OperationalError or InterfaceError (raised through SQLAlchemy, or by a driver's
    own bulk path)."""
    if isinstance(exc, sa.exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))
    import duckdb

    failed: tuple[type[BaseException], ...] = (duckdb.OperationalError,)  # DuckDB has no InterfaceError
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a dependency, but only PostgreSQL needs it
        return isinstance(exc, failed)
    return isinstance(exc, failed + (psycopg.OperationalError, psycopg.InterfaceError))


def database_error(what: str, exc: BaseException) -> DatabaseError:
    """`what: the database's first line` of a driver error, as the error its status says: refused or failed."""
    return (DatabaseFailedError if database_failed(exc) else DatabaseError)(f"{what}: {first_line(exc)}")


def first_line(exc: BaseException) -> str:
    """The database's own message of an error, without SQLAlchemy's statement and parameter dump."""
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    return lines[0] if lines else type(inner).__name__


def driver_errors() -> tuple[type[BaseException], ...]:
    """The errors a statement can raise: SQLAlchemy's, and the drivers' own where bulk paths use them directly
    (DuckDB's Arrow inserts, psycopg's COPY)."""
    import duckdb

    errors: tuple[type[BaseException], ...] = (sa.exc.DBAPIError, duckdb.Error)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a dependency, but only PostgreSQL needs it
        return errors
    return errors + (psycopg.Error,)


def resolve_url(db: str | None = None) -> sa.URL:
    raw = db or os.environ.get(URL_ENV) or DEFAULT_DB
    if "://" not in raw:
        path = pathlib.Path(raw).expanduser()
        if path.is_dir():
            raise RegistryError(f"{raw} is a directory, not a DuckDB file")
        return sa.URL.create("duckdb", database=str(path.resolve()))
    try:
        url = sa.make_url(raw)
    except sa.exc.ArgumentError:
        raise RegistryError(f"cannot parse database URL {raw!r}") from None
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    if backend == "duckdb":
        return url
    raise RegistryError(f"unsupported database {backend!r}: use a DuckDB file path or a postgresql:// URL")


def is_duckdb(url: sa.URL) -> bool:
    return url.get_backend_name() == "duckdb"


def duckdb_path(url: sa.URL) -> pathlib.Path | None:
    if is_duckdb(url) and url.database and url.database != ":memory:":
        return pathlib.Path(url.database)
    return None


def duckdb_read_only(url: sa.URL) -> bool:
    """A DuckDB file to open read-only: asked for (duckdb:///FILE?read_only=true), or one this user may not write."""
    if str(url.query.get("read_only", "")).lower() in ("1", "true", "yes"):
        return True
    path = duckdb_path(url)
    return path is not None and path.exists() and not os.access(path, os.W_OK)


def describe(url: sa.URL) -> str:
    path = duckdb_path(url)
    return str(path) if path is not None else url.render_as_string(hide_password=True)


def make_engine(url: sa.URL) -> Engine:
    if is_duckdb(url) and url.database in (None, "", ":memory:"):
        from sqlalchemy.pool import StaticPool

        return sa.create_engine(url, poolclass=StaticPool)  # one in-memory database for the engine's life
    if is_duckdb(url):
        # one connection per unit of work: the file is locked only while a transaction runs. A file this user may
        # not write is opened read-only (DuckDB lets several processes read it at once).
        if duckdb_read_only(url):
            return sa.create_engine(url.difference_update_query(["read_only"]), poolclass=NullPool,
                                    connect_args={"read_only": True})
        return sa.create_engine(url, poolclass=NullPool)
    return sa.create_engine(url, pool_pre_ping=True)


def register_alembic_impls() -> None:
    """Alembic has no DuckDB implementation; DuckDB runs DDL inside transactions like PostgreSQL."""
    from alembic.ddl.impl import DefaultImpl, _impls

    if "duckdb" not in _impls:
        class DuckDBImpl(DefaultImpl):
            __dialect__ = "duckdb"
            transactional_ddl = True


def migrations_dir() -> pathlib.Path:
    """The Alembic scripts: the repository's migrations/ folder, shipped in the package as registry.migrations."""
    import importlib.resources

    return pathlib.Path(str(importlib.resources.files("registry.migrations")))


def alembic_config(connection: Connection | None = None):
    """Alembic's config for the shipped migrations, optionally bound to an open connection (used as is, not
    committed). It needs no alembic.ini: the one at the repository's top serves the `alembic` command line."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def revision_history() -> list[tuple[str, str | None, str]]:
    """(revision, previous revision, message), newest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return [(rev.revision, rev.down_revision, rev.doc) for rev in script.walk_revisions()]


_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")


def _lock_message(exc: BaseException) -> str | None:
    text = str(exc)
    if "Could not set lock on file" not in text:
        return None
    match = _LOCK_HOLDER.search(text)
    if match:
        return f"held by PID {match.group('pid')} ({match.group('program')})"
    return "held by another process"


# The advisory lock `db upgrade` holds on PostgreSQL for its transaction: one key per database and schema (the
# schema the URL's search_path makes current), so that upgrades of different schemas do not wait for each other.
UPGRADE_LOCK_SQL = ("SELECT pg_advisory_xact_lock(hashtext('dsocr-registry db upgrade ' || current_database() || '.' "
                    "|| COALESCE(current_schema(), '')))")

_QUERY_STATEMENTS = ("SELECT", "EXPLAIN")


def refuse_duckdb_writes(statement: str) -> None:
    """One SELECT (SHOW, DESCRIBE, SUMMARIZE and FROM ... are SELECTs to DuckDB) or EXPLAIN; anything else is
    refused, naming it. Text DuckDB cannot parse is left for the query to report."""
    import duckdb

    try:
        statements = duckdb.extract_statements(statement)
    except duckdb.Error:
        return
    if len(statements) > 1:
        raise RegistryError(f"sql runs one query at a time, got {len(statements)} statements (nothing was run)")
    for parsed in statements:
        kind = parsed.type.name
        if kind not in _QUERY_STATEMENTS:
            raise RegistryError(f"sql runs queries only: {kind} refused (nothing was changed)")


# Whether a role (%(role)s; NULL: the connected one) may touch server files or programs: a superuser, a member of
# the roles that grant it, or one given EXECUTE on a function that reads, writes or lists server files.
_PRIVILEGED_ROLE = (
    "SELECT COALESCE(u.rolsuper, false)"
    " OR pg_has_role(u.oid, 'pg_read_server_files', 'MEMBER')"
    " OR pg_has_role(u.oid, 'pg_write_server_files', 'MEMBER')"
    " OR pg_has_role(u.oid, 'pg_execute_server_program', 'MEMBER')"
    " OR has_function_privilege(u.oid, 'pg_read_file(text)', 'EXECUTE')"
    " OR has_function_privilege(u.oid, 'pg_read_binary_file(text)', 'EXECUTE')"
    " OR has_function_privilege(u.oid, 'pg_ls_dir(text)', 'EXECUTE')"
    " OR has_function_privilege(u.oid, 'lo_import(text)', 'EXECUTE')"
    " OR has_function_privilege(u.oid, 'lo_export(oid, text)', 'EXECUTE')"
    " FROM pg_roles u WHERE u.rolname = COALESCE(%(role)s, current_user)")

# The words a query starts with: a statement PostgreSQL's cursor refuses that starts with another is named by it.
_QUERY_WORDS = {"SELECT", "VALUES", "TABLE", "WITH"}
_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.S)


def _first_word(statement: str) -> str:
    """The first keyword of a statement, past white space, comments and opening parentheses."""
    rest = statement[_LEADING_NOISE.match(statement).end():]
    match = re.match(r"[A-Za-z_]+", rest)
    return match.group(0).upper() if match else ""


def _query_error(exc: BaseException, timeout_s: float, statement: str = "", reader: str | None = None) -> RegistryError:
    """One line for an error of the database while it ran a query of `sql`."""
    message = first_line(exc)
    sqlstate = getattr(exc, "sqlstate", None)
    if type(exc).__name__ == "InterruptException" or sqlstate == "57014":  # query_canceled: statement_timeout
        return RegistryError(f"the query ran past {timeout_s:g} s (--timeout) and was stopped (nothing was changed)")
    if type(exc).__name__ == "PermissionException":
        return RegistryError(f"sql reads the registry only: {message} (nothing was read or written outside it)")
    if sqlstate == "25006" or "read-only mode" in message or "configuration has been locked" in message \
            or "data-modifying statements" in message:  # read_only_sql_transaction
        return RegistryError(f"sql runs queries only: {message} (nothing was changed)")
    if "cannot insert multiple commands" in message:
        return RegistryError("sql runs one query at a time, got several statements (nothing was run)")
    if sqlstate == "42601" and _first_word(statement) not in _QUERY_WORDS:  # syntax_error: not a query at all
        word = _first_word(statement) or "a statement that is not a query"
        return RegistryError(f"sql runs queries only: {word} refused (nothing was changed)")
    pseudo = re.match(r'column "c(\d+)" has pseudo-type (\w+)', message)
    if pseudo and reader is not None:  # a column SQL_ROWS_FUNCTION cannot return, such as pg_sleep()'s void
        return RegistryError(f"query failed: column {int(pseudo.group(1)) + 1} is of type {pseudo.group(2)}, which "
                             f"sql cannot print: cast it (e.g. ::text)")
    if sqlstate == "42501" and reader is not None:  # insufficient_privilege
        return RegistryError(f"query failed: {message} (sql runs queries as role {reader}, which may read the "
                             "registry only)")
    parameter = bind_parameter(statement)
    if parameter is not None and ("syntax error" in message or "parameter" in message.lower()
                                  or sqlstate in ("42601", "08P01")):
        return RegistryError(f"query failed: the query has the parameter {parameter}, and sql takes no parameter "
                             f"values: write the value into the query (e.g. WHERE hardware = 'h200') ({message})")
    return database_error("query failed", exc)


# What a BI tool or a driver takes as a bind parameter: :name, $name, $1, %(name)s, %s or ?; outside quoted text and
# comments, and not PostgreSQL's ::type cast.
_BIND_PARAMETER = re.compile(r"(?<![:\w]):[A-Za-z_]\w*|\$(?:\d+|[A-Za-z_]\w*)|%\(\w+\)s|%s|\?")
_QUOTED_OR_COMMENT = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.DOTALL)


def bind_parameter(statement: str) -> str | None:
    """The first bind parameter in a query's text (':hw'), or None."""
    match = _BIND_PARAMETER.search(_QUOTED_OR_COMMENT.sub(" ", statement))
    return match.group() if match else None


class _QueryBudget:
    """The time a database may work on one query, summed over its calls (the time a reader of its rows takes
    between fetches is not counted): a call that would pass it is interrupted."""

    def __init__(self, timeout_s: float, interrupt: Callable[[], None]) -> None:
        self.left_s = timeout_s
        self.interrupt = interrupt

    def run(self, call: Callable[[], Any]) -> Any:
        timer = threading.Timer(max(self.left_s, 0.0), self.interrupt)
        started = time.monotonic()
        timer.start()
        try:
            return call()
        finally:
            timer.cancel()
            self.left_s -= time.monotonic() - started


class Registry:
    """One database: engine, transactions with lock retry, and the revision gate."""

    def __init__(self, db: str | None = None, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
                 duckdb_config: dict[str, str] | None = None, writes: bool = True) -> None:
        """`writes`: whether the caller means to change the database (only the lock message depends on it)."""
        self.url = resolve_url(db)
        self.writes = writes
        if duckdb_config and is_duckdb(self.url):
            self.url = self.url.update_query_dict(duckdb_config)  # duckdb-engine passes these to duckdb.connect
        self.lock_timeout_s = lock_timeout_s
        self.engine = make_engine(self.url)
        self._categories: dict[str, int] | None = None
        self._category_rows: list[tuple[str, str | None, str, str | None]] | None = None
        self._held: tuple[Connection, float] | None = None
        # the DuckDB file (and the folders) this object created; with discard_created_on_error (a command of the
        # command line) they are removed again when the block using it fails
        self.created: list[pathlib.Path] = []
        self.discard_created_on_error = False
        self._read_only: bool | None = None
        self.architecture_cache: dict[str, tuple[int, dict[str, int]]] = {}
        self.on_wait: Callable[[str], None] | None = None  # told, once per wait, what a connection waits for

    def _notify_wait(self, message: str) -> None:
        if self.on_wait is not None:
            self.on_wait(message)

    def read_only(self) -> bool:
        """Whether this connection may only read: a DuckDB file opened read-only, or a PostgreSQL role without
        INSERT on the registry's tables (e.g. one given `db grant-read`)."""
        if self._read_only is None:
            if is_duckdb(self.url):
                self._read_only = duckdb_read_only(self.url)
            else:
                with self.begin() as conn:
                    self._read_only = not conn.execute(sa.text(
                        "SELECT has_table_privilege('scenarios', 'INSERT')")).scalar()
        return self._read_only

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    def dispose(self) -> None:
        self.release()
        self.engine.dispose()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.dispose()
        # an error, not an interrupt: what a command interrupted by its user had stored stays
        if exc_type is not None and self.discard_created_on_error and not issubclass(exc_type, KeyboardInterrupt):
            self.discard_created()

    def discard_created(self) -> None:
        """Remove the DuckDB file this object created (with its write-ahead log, and the folders made for it), so
        that a command that failed leaves no registry behind that it made. Ends the connections first."""
        self.dispose()
        for path in self.created:
            for leftover in (path, path.with_name(path.name + ".wal")):
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    leftover.unlink()
        for folder in reversed(self.created[1:]):  # the innermost first; left where something else went in it
            with contextlib.suppress(OSError):
                folder.rmdir()
        self.created = []

    # -- connections ---------------------------------------------------------------------------------------------
    def _connect_with_retry(self, connect: Callable[[], Any] | None = None) -> Any:
        """A connection of the engine (or of `connect`), waiting for a DuckDB file another process has locked."""
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.02
        while True:
            try:
                return (connect or self.engine.connect)()
            except driver_errors() as exc:
                inner = getattr(exc, "orig", None) or exc
                holder = _lock_message(inner)
                if holder is None:
                    raise DatabaseUnavailableError(f"cannot open {describe(self.url)}: {first_line(inner)}") from None
                if time.monotonic() >= deadline:
                    # no snapshot advice: taking a snapshot reads the file too, and is refused the same way
                    outcome = ("(nothing was written)" if self.writes else
                               "(nothing was read): run it again when the file is free (a running dsocr-registry "
                               "serve keeps it for its life: ask the service over HTTP, or stop it)")
                    raise DatabaseLockedError(
                        f"{describe(self.url)} is locked, {holder}; gave up after {self.lock_timeout_s:g} s "
                        f"{outcome}") from None
                if delay == 0.02:
                    self._notify_wait(f"waiting for {describe(self.url)}: locked, {holder} "
                                      f"(up to {self.lock_timeout_s:g} s, --lock-timeout)")
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

    @contextlib.contextmanager
    def begin(self, keep_open: bool = False) -> Iterator[Connection]:
        """A connection in a transaction: committed on success, rolled back on any error.

        This is the one place where a statement the database refuses becomes a `DatabaseError` (one line).
        `keep_open`: a writer of many reports may keep its connection for the next transaction, for at most
        CONNECTION_LEASE_S since it was opened, so that a DuckDB file is never held long by one process.
        """
        if self._held is not None:
            conn, opened = self._held
            self._held = None
        else:
            conn, opened = self._connect_with_retry(), time.monotonic()
        try:
            with conn.begin():
                yield conn
        except BaseException as exc:
            # dropped, not returned to a pool: a connection whose database failed under it (a full disk, a lost
            # server) cannot even roll back, and its transaction ends with it either way
            conn.invalidate()
            conn.close()
            if isinstance(exc, driver_errors()):
                raise database_error("database error", exc) from exc
            raise
        if keep_open and time.monotonic() - opened < CONNECTION_LEASE_S:
            self._held = (conn, opened)
        else:
            conn.close()

    def query(self, statement: str, timeout_s: float = DEFAULT_QUERY_TIMEOUT_S) -> tuple[list[str], list[tuple]]:
        """Columns and every row of one query (see `stream_query`)."""
        with self.stream_query(statement, timeout_s=timeout_s) as (columns, batches):
            return columns, [row for batch in batches for row in batch]

    @contextlib.contextmanager
    def stream_query(self, statement: str, batch_rows: int | None = None,
                     timeout_s: float = DEFAULT_QUERY_TIMEOUT_S) -> Iterator[tuple[list[str], Iterator[list]]]:
        """The columns of one query and its rows in batches of `batch_rows` (default QUERY_BATCH_ROWS), fetched as
        they are read.

        Read-only by the connection, whatever the text: on DuckDB a read-only connection with external access,
        extension loading and configuration changes off (DUCKDB_QUERY_CONFIG); on PostgreSQL a cursor, which
        takes one SELECT, VALUES or TABLE query, in a READ ONLY transaction, under SQL_READER_ROLE when the
        connected role may touch server files or programs. On DuckDB anything but one SELECT or EXPLAIN is
        refused first, to name it. `timeout_s` bounds the time the database works on it."""
        batch_rows = batch_rows or QUERY_BATCH_ROWS
        if is_duckdb(self.url):
            refuse_duckdb_writes(statement)
            rows = self._duckdb_rows(statement, batch_rows, timeout_s)
        else:
            rows = self._postgres_rows(statement, batch_rows, timeout_s)
        with rows as result:
            yield result

    @contextlib.contextmanager
    def _duckdb_rows(self, statement: str, batch_rows: int, timeout_s: float):
        import duckdb

        path = duckdb_path(self.url)
        if path is None:
            raise RegistryError("sql reads a DuckDB file or a PostgreSQL database, not an in-memory database")
        database = self._connect_with_retry(
            lambda: duckdb.connect(str(path), read_only=True, config=dict(DUCKDB_QUERY_CONFIG)))
        budget = _QueryBudget(timeout_s, database.interrupt)

        def run(call):
            try:
                return budget.run(call)
            except duckdb.Error as exc:
                raise _query_error(exc, timeout_s, statement) from None

        try:
            run(lambda: database.execute(statement))
            if database.description is None:
                raise RegistryError("the query returned no rows to print (sql runs queries, not changes)")
            columns = [column[0] for column in database.description]

            def batches():
                while batch := run(lambda: database.fetchmany(batch_rows)):
                    yield batch

            yield columns, batches()
        finally:
            database.close()

    @contextlib.contextmanager
    def _postgres_rows(self, statement: str, batch_rows: int, timeout_s: float):
        import psycopg

        conn = self._connect_with_retry()
        driver = conn.connection.driver_connection
        reader = None

        def run(call):
            try:
                return call()
            except psycopg.Error as exc:
                raise _query_error(exc, timeout_s, statement, reader) from None

        try:
            try:
                reader = self._sql_reader(driver)
                driver.execute("SET TRANSACTION READ ONLY")
                driver.execute(f"SET LOCAL statement_timeout = {max(int(timeout_s * 1000), 1)}")
            except psycopg.Error as exc:
                raise database_error("query failed", exc) from None
            if reader is None:
                cursor = driver.cursor(name="dsocr_sql")
                run(lambda: cursor.execute(statement))  # DECLARE ... CURSOR FOR: one SELECT, VALUES or TABLE
                columns = [column.name for column in cursor.description]
            else:
                cursor, columns = run(lambda: self._declare_as_reader(driver, statement, reader))

            def batches():
                while batch := run(lambda: cursor.fetchmany(batch_rows)):
                    yield batch

            yield columns, batches()
            driver.rollback()
        except BaseException:
            conn.invalidate()
            raise
        finally:
            conn.close()

    @staticmethod
    def _declare_as_reader(driver, statement: str, reader: str):
        """A cursor of the query run by SQL_ROWS_FUNCTION as `reader`, and its column names. The query is declared
        as a cursor first (planned, not run), which takes one SELECT, VALUES or TABLE query and tells its columns'
        names and types, which the function's call must list."""
        from psycopg import sql as pgsql

        driver.execute(pgsql.SQL("SET LOCAL ROLE {}").format(pgsql.Identifier(reader)))
        probe = driver.cursor(name="dsocr_sql_probe")
        probe.execute(statement)
        columns = [column.name for column in probe.description]
        kinds = [(probe.pgresult.ftype(i), probe.pgresult.fmod(i)) for i in range(len(columns))]
        probe.close()
        types = [row[0] for row in driver.execute(
            "SELECT format_type(t, m) FROM unnest(%s::oid[], %s::int[]) WITH ORDINALITY AS u(t, m, i) ORDER BY i",
            ([t for t, _ in kinds], [m for _, m in kinds])).fetchall()]
        listed = pgsql.SQL(", ").join(pgsql.SQL("{} {}").format(pgsql.Identifier(f"c{i}"), pgsql.SQL(kind))
                                      for i, kind in enumerate(types))
        schema = driver.execute("SELECT current_schema()").fetchone()[0]
        cursor = driver.cursor(name="dsocr_sql")
        cursor.execute(pgsql.SQL("SELECT * FROM {}.{}(%s) AS t({})").format(
            pgsql.Identifier(schema), pgsql.Identifier(SQL_ROWS_FUNCTION), listed), [statement])
        return cursor, columns

    def _sql_reader(self, driver) -> str | None:
        """SQL_READER_ROLE when the connected role may touch server files or programs (set up here, once: the
        role, its read access, and SQL_ROWS_FUNCTION in the registry's schema), else None. Committed, before the
        query's own transaction."""
        from psycopg import sql as pgsql

        try:
            if not driver.execute(_PRIVILEGED_ROLE, {"role": None}).fetchone()[0]:
                driver.rollback()
                return None
            if self._sql_reader_ready(driver):
                driver.rollback()
                return SQL_READER_ROLE
            driver.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (SQL_READER_ROLE,))
            role = pgsql.Identifier(SQL_READER_ROLE)
            if not driver.execute("SELECT COUNT(*) FROM pg_roles WHERE rolname = %s", (SQL_READER_ROLE,)).fetchone()[0]:
                driver.execute(pgsql.SQL("CREATE ROLE {} NOLOGIN").format(role))
            schema = driver.execute("SELECT current_schema()").fetchone()[0]
            _grant_read(driver, SQL_READER_ROLE, schema)
            function = pgsql.SQL("{}.{}(text)").format(pgsql.Identifier(schema), pgsql.Identifier(SQL_ROWS_FUNCTION))
            driver.execute(pgsql.SQL(
                "CREATE OR REPLACE FUNCTION {}.{}(query text) RETURNS SETOF record LANGUAGE plpgsql "
                "SECURITY DEFINER AS {}").format(pgsql.Identifier(schema), pgsql.Identifier(SQL_ROWS_FUNCTION),
                                                 pgsql.Literal(_SQL_ROWS_BODY)))
            driver.execute(pgsql.SQL("ALTER FUNCTION {} OWNER TO {}").format(function, role))
            driver.execute(pgsql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC").format(function))
            if not driver.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
                driver.execute(pgsql.SQL("GRANT {} TO CURRENT_USER").format(role))
            if driver.execute(_PRIVILEGED_ROLE, {"role": SQL_READER_ROLE}).fetchone()[0]:
                raise RegistryError(f"role {SQL_READER_ROLE} may touch server files or programs; sql runs queries "
                                    "as this role only without that: revoke it (nothing was run)")
            if not self._sql_reader_ready(driver):
                raise RegistryError(f"{describe(self.url)}: role {SQL_READER_ROLE} could not be set up to run sql's "
                                    "queries (nothing was run)")
            driver.commit()
        except Exception as exc:
            driver.rollback()
            if isinstance(exc, RegistryError):
                raise
            if isinstance(exc, driver_errors()):
                raise RegistryError(
                    f"{describe(self.url)}: this role may touch server files, so sql runs queries as role "
                    f"{SQL_READER_ROLE}, which it cannot set up: {first_line(exc)} (nothing was run; a superuser "
                    f"can run sql once to set it up, or connect as a role given db grant-read)") from None
            raise
        return SQL_READER_ROLE

    @staticmethod
    def _sql_reader_ready(driver) -> bool:
        """SQL_READER_ROLE exists without access to server files, may read every table and view of the
        registry's schema, owns SQL_ROWS_FUNCTION there (as written here) and the connected role may act as it."""
        return bool(driver.execute(
            "SELECT r.oid IS NOT NULL AND NOT COALESCE((" + _PRIVILEGED_ROLE + "), false)"
            " AND pg_has_role(current_user, r.oid, 'MEMBER')"
            " AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = to_regnamespace(current_schema())"
            "   AND c.relkind IN ('r', 'v', 'm', 'p') AND NOT has_table_privilege(r.oid, c.oid, 'SELECT'))"
            " AND EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = to_regnamespace(current_schema())"
            "   AND p.proname = %(function)s AND p.proowner = r.oid AND p.prosecdef AND p.prosrc = %(body)s)"
            " FROM (SELECT (SELECT oid FROM pg_roles WHERE rolname = %(role)s) AS oid) r",
            {"role": SQL_READER_ROLE, "function": SQL_ROWS_FUNCTION, "body": _SQL_ROWS_BODY}).fetchone()[0])

    def release(self) -> None:
        if self._held is not None:
            self._held[0].close()
            self._held = None

    # -- schema revisions ----------------------------------------------------------------------------------------
    def head_revision(self) -> str:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(alembic_config()).get_current_head()

    def current_revision(self, conn: Connection) -> str | None:
        from alembic.runtime.migration import MigrationContext

        register_alembic_impls()
        return MigrationContext.configure(conn).get_current_revision()

    def upgrade(self, revision: str = "head", seed_catalogs: bool = True) -> tuple[str | None, str]:
        """Upgrade in one transaction; returns (revision before, revision after). On PostgreSQL the schema's upgrade
        lock comes first (`_take_upgrade_lock`: concurrent upgrades take turns), and a statement that
        waits for another connection's lock is reported (which connection, its state and query) and given up
        after the lock timeout, the transaction rolled back."""
        from alembic import command

        try:
            with self.begin() as conn, self._watch_locks(conn):
                self._take_upgrade_lock(conn)
                before = self.current_revision(conn)
                cfg = alembic_config(conn)
                cfg.attributes["recreate_views"] = True
                cfg.attributes["seed_catalogs"] = seed_catalogs
                command.upgrade(cfg, revision)
                after = self.current_revision(conn)
        except DatabaseError as exc:
            if getattr(exc.__cause__, "orig", None) is not None and \
                    getattr(exc.__cause__.orig, "sqlstate", None) == "55P03":  # lock_not_available
                raise DatabaseLockedError(
                    f"{describe(self.url)}: gave up after {self.lock_timeout_s:g} s waiting for a lock held by "
                    f"another connection (nothing was changed; see above which one)") from None
            raise
        return before, after

    def _take_upgrade_lock(self, conn: Connection) -> None:
        """PostgreSQL: the schema's upgrade lock, held to the end of this transaction, so that concurrent upgrades
        of one schema run one after the other (the later one then finds the schema current); waited for up to the
        lock timeout. Upgrades of other schemas take other locks."""
        if is_duckdb(self.url):
            return  # the file itself is locked by the connection
        try:
            conn.execute(sa.text(UPGRADE_LOCK_SQL))
        except sa.exc.DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available: the lock timeout passed
                raise DatabaseLockedError(
                    f"another db upgrade is running on {describe(self.url)} (gave up after {self.lock_timeout_s:g} s; "
                    "nothing was changed)") from None
            raise

    @contextlib.contextmanager
    def _watch_locks(self, conn: Connection) -> Iterator[None]:
        """PostgreSQL: a lock timeout for this transaction, and a thread that reports each connection it waits for."""
        if is_duckdb(self.url):
            yield
            return
        import threading

        conn.execute(sa.text(f"SET LOCAL lock_timeout = {max(int(self.lock_timeout_s * 1000), 1)}"))
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        done = threading.Event()
        seen: set[int] = set()

        def watch() -> None:
            engine = sa.create_engine(self.url, poolclass=NullPool)
            try:
                with engine.connect() as watcher:
                    while not done.wait(0.5):
                        for other, user, state, query, age in watcher.execute(sa.text(
                                "SELECT pid, usename, state, query, now() - xact_start FROM pg_stat_activity "
                                "WHERE pid = ANY(pg_blocking_pids(:p)) ORDER BY pid"), {"p": pid}).all():
                            if other not in seen:
                                seen.add(other)
                                text = " ".join((query or "").split())[:120]
                                self._notify_wait(
                                    f"waiting for a lock held by PID {other} (user {user}, {state}, transaction "
                                    f"open {age.total_seconds() if age else 0:.0f} s, last query: {text}); up to "
                                    f"{self.lock_timeout_s:g} s (--lock-timeout)")
                        watcher.rollback()
            except sa.exc.DBAPIError:
                pass  # the watcher only reports; the upgrade goes on without it
            finally:
                engine.dispose()

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=5)

    def ensure_schema(self, auto_create: bool = True) -> None:
        """Refuse a stale or newer schema; create a new DuckDB file at the current revision."""
        path = duckdb_path(self.url)
        is_new_file = path is not None and not path.exists()
        if is_new_file and auto_create:
            missing = [folder for folder in path.parent.absolute().parents[::-1] + (path.parent.absolute(),)
                       if not folder.exists()] if not path.parent.exists() else []
            path.parent.mkdir(parents=True, exist_ok=True)
            self.created = [path, *missing]
            self.upgrade()
            return
        if is_new_file:
            raise RegistryError(f"{path} does not exist (ingest creates it)")
        head = self.head_revision()
        with self.begin() as conn:
            current = self.current_revision(conn)
        if current == head:
            return
        where = describe(self.url)
        if current is None and not is_duckdb(self.url):
            with self.begin() as conn:
                readable = conn.execute(sa.text("SELECT current_schema()")).scalar()  # NULL: no usable schema
            if readable is None:
                raise RegistryError(f"{where}: this role may not use the registry's schema: its owner can run "
                                    "dsocr-registry db grant-read ROLE")
        if current is None:
            raise SchemaMismatchError(f"{where} has no registry schema; run: dsocr-registry db upgrade --db {where}")
        known = {rev for rev, _, _ in revision_history()}
        if current not in known:
            raise SchemaMismatchError(
                f"{where} is at revision {current}, newer than this dsocr-registry (head {head}); upgrade dsocr-registry")
        raise SchemaMismatchError(
            f"{where} is at revision {current}, older than this code's {head}; run: dsocr-registry db upgrade --db {where}")

    # -- storage -------------------------------------------------------------------------------------------------
    def storage_bytes(self) -> int:
        """The registry's size: a DuckDB file with its write-ahead log, or the PostgreSQL tables and indexes of
        the schema the URL reads."""
        path = duckdb_path(self.url)
        if path is not None:
            wal = path.with_name(path.name + ".wal")
            return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        if not is_duckdb(self.url):
            with self.begin() as conn:
                return int(conn.execute(sa.text(
                    "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')")).scalar())
        return 0  # an in-memory database

    def vacuum(self) -> None:
        """DuckDB: a checkpoint, which writes the log into the file and frees the blocks of deleted rows for reuse;
        PostgreSQL: VACUUM ANALYZE (outside a transaction, as it must run)."""
        conn = self._connect_with_retry()
        try:
            if is_duckdb(self.url):
                conn.connection.driver_connection.execute("FORCE CHECKPOINT")
            else:
                conn.connection.driver_connection.autocommit = True
                conn.connection.driver_connection.execute("VACUUM ANALYZE")
        except driver_errors() as exc:
            raise database_error("database error", exc) from exc
        finally:
            conn.invalidate()
            conn.close()

    # -- lookups -------------------------------------------------------------------------------------------------
    def category_ids(self, conn: Connection) -> dict[str, int]:
        if self._categories is None:
            rows = conn.execute(sa.text("SELECT id, name FROM operator_categories")).all()
            self._categories = {name: int(cid) for cid, name in rows}
        return self._categories

    def category_rows(self, conn: Connection) -> list[tuple[str, str | None, str, str | None]]:
        """(name, display_name, description, match_classes as JSON) of every operator category, in id order."""
        if self._category_rows is None:
            rows = conn.execute(sa.text("SELECT name, display_name, description, match_classes "
                                        "FROM operator_categories ORDER BY id")).all()
            self._category_rows = [tuple(row) for row in rows]
        return self._category_rows


def grant_read(registry: Registry, role: str) -> tuple[str, int, int]:
    """PostgreSQL: USAGE on the registry's schema and SELECT on its tables and views to `role`, and default
    privileges for those the current user creates there later; returns (schema, tables, views). An unknown role
    is refused before anything is granted."""
    with registry.begin() as conn:
        if not conn.execute(sa.text("SELECT COUNT(*) FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar():
            raise RegistryError(f"no role {role!r} in {describe(registry.url)}: create it first "
                                f"(CREATE ROLE {role} LOGIN PASSWORD '...'), nothing was granted")
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
        _grant_read(conn.connection.driver_connection, role, schema)
        revoked = _revoke_create(conn, role, schema)
        counts = dict(conn.execute(sa.text(
            "SELECT table_type, COUNT(*) FROM information_schema.tables WHERE table_schema = :s GROUP BY table_type"),
            {"s": schema}).all())
    return schema, int(counts.get("BASE TABLE", 0)), int(counts.get("VIEW", 0)), revoked


def _revoke_create(conn: Connection, role: str, schema: str) -> list[str]:
    """Take CREATE on the registry's schema from `role`, so that it may only read: granted to the role itself, or to
    PUBLIC, as PostgreSQL 14 and older grant it on schema public to every role. Returns whom it was revoked from
    ('ROLE', 'PUBLIC'). A role that keeps it (it owns the schema, or is a member of a role that may create
    there) is refused, and nothing is granted."""
    from psycopg import sql as pgsql

    def may_create() -> bool:
        return bool(conn.execute(sa.text("SELECT has_schema_privilege(:r, :s, 'CREATE')"),
                                 {"r": role, "s": schema}).scalar())

    driver, revoked = conn.connection.driver_connection, []
    for grantee, name in ((pgsql.Identifier(role), role), (pgsql.SQL("PUBLIC"), "PUBLIC")):
        if not may_create():
            break
        granted = conn.execute(sa.text(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(COALESCE(n.nspacl, acldefault('n', n.nspowner))) a "
            "WHERE n.nspname = :s AND a.privilege_type = 'CREATE' AND a.grantee = "
            "CASE WHEN :r = 'PUBLIC' THEN 0 ELSE (SELECT oid FROM pg_roles WHERE rolname = :r) END)"),
            {"s": schema, "r": name}).scalar()
        if granted:
            driver.execute(pgsql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(pgsql.Identifier(schema), grantee))
            revoked.append(name)
    if may_create():
        raise RegistryError(f"role {role} may create objects in schema {schema} (it owns it, or is a member of a role "
                            f"that may): revoke that, or read with another role; nothing was granted")
    return revoked


def _grant_read(driver, role: str, schema: str) -> None:
    """The grants of `grant_read`, on a psycopg connection in its transaction."""
    from psycopg import sql as pgsql

    who, where = pgsql.Identifier(role), pgsql.Identifier(schema)
    driver.execute(pgsql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(where, who))
    driver.execute(pgsql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(where, who))  # views included
    driver.execute(pgsql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(where, who))


def schema_revisions(registry: Registry) -> tuple[str | None, str]:
    """(the database's schema revision, None when it has none yet; this code's revision)."""
    head = registry.head_revision()
    with registry.begin() as conn:
        return registry.current_revision(conn), head

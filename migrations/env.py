"""Alembic environment: every upgrade runs in one transaction. When migrations run, the SQL views of queries/views
are dropped before them and created again after them (with the privileges granted on them), so no migration is
blocked by a view on its tables; at the current revision only the views whose SQL or comments changed are
recreated, so an upgrade at head changes no schema object. The shipped hardware catalog and runtime profiles
(registry/data) are upserted after the migrations."""

from __future__ import annotations

from alembic import context

from registry.store import db as registry_db
from registry.pricing import catalog
from registry.store import views
from registry.store.models import Base

config = context.config


def _is_upgrade() -> bool:
    if "recreate_views" in config.attributes:
        return bool(config.attributes["recreate_views"])
    command = getattr(config.cmd_opts, "cmd", None)  # the `alembic` command line
    return bool(command) and getattr(command[0], "__name__", "") == "upgrade"


def _run(connection) -> None:
    registry_db.register_alembic_impls()
    context.configure(connection=connection, target_metadata=Base.metadata, transaction_per_migration=False,
                      compare_type=True)
    upgrading = _is_upgrade()
    with context.begin_transaction():
        migrating = upgrading and _migrations_pending(connection)
        if upgrading and migrating:
            grants = views.view_grants(connection)
            views.drop_views(connection)
        context.run_migrations()
        # The views and catalogs are this code's: they may read tables of every revision, so a step to an older
        # revision leaves the views dropped (the upgrade that reaches the head creates them).
        if upgrading and _at_head(connection):
            if config.attributes.get("seed_catalogs", True):
                catalog.seed_catalogs(connection)
            if migrating:
                views.create_views(connection, grants=grants)
            else:
                views.sync_views(connection)  # only views whose SQL or comments changed, grants kept
            views.sync_table_comments(connection)  # only comments that changed


def _migrations_pending(connection) -> bool:
    """Whether the database is below the revision asked for (the head, or an older one when stepping)."""
    from alembic.runtime.migration import MigrationContext

    current = MigrationContext.configure(connection).get_current_revision()
    destination = context.get_revision_argument()
    if destination in (None, "head", "heads"):
        destination = context.script.get_current_head()
    return current != destination


def _at_head(connection) -> bool:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision() == context.script.get_current_head()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    engine = registry_db.make_engine(registry_db.resolve_url(url))
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run against a database")
run_migrations_online()

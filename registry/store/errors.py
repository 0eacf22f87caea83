"""The registry's errors, apart from the database code so that a command can name them without loading
SQLAlchemy (registry/store/db.py raises them; the command line catches them)."""

from __future__ import annotations

from analyzer.errors import OneLineError


class RegistryError(OneLineError, RuntimeError):
    """A registry problem the user can act on (one line, non-zero exit). `http_status` is the service's answer to
    it: the request's fault (400 bad input, 404 not found, 422 too much work) or the service's (503 the database
    lost or unreachable, 504 past a time limit)."""

    http_status = 400


class SchemaMismatchError(RegistryError):
    pass


class DatabaseLockedError(RegistryError):
    http_status = 503


class DatabaseUnavailableError(RegistryError):
    """The database cannot be reached (refused, gone, out of connections): nothing the request could change."""

    http_status = 503


class ReportNotFoundError(RegistryError):
    """No stored report has the id asked for."""

    http_status = 404


class DatabaseError(RegistryError):
    """A statement the database refused (a constraint, an out-of-range value): its first line, nothing else."""


class DatabaseFailedError(DatabaseError):
    """The database failed under a statement (its connection lost, its server gone, an I/O error) rather than
    refusing it: nothing the request could change."""

    http_status = 503

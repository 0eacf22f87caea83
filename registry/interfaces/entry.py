"""Running a click command as a program: any bad input ends in one line on stderr and a non-zero exit."""

from __future__ import annotations

import errno
import os
import sys
import traceback

import click

from analyzer.errors import AnalyzerInputError, ReportFormatError
from analyzer.fileio import one_line, printable
from registry.store.errors import RegistryError

EXIT_USAGE = 2
EXIT_INTERNAL = 3
DEBUG_ENV = "DSOCR_DEBUG"  # 1: an unexpected error also prints its traceback (for a bug report)
# Output cut short because its reader stopped reading (`| head`): quiet, with the status a Unix tool killed by
# SIGPIPE reports (128 + 13), so that `set -o pipefail` sees the same as for any other program.
EXIT_OUTPUT_CLOSED = 141


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


class OutputClosed(Exception):
    """Standard output was closed by its reader. Not an OSError, so that click passes it on instead of handling
    the broken pipe itself with exit status 1."""


def run_cli(command: click.Command, args=None, prog_name: str = "dsocr-registry") -> None:
    """Run a click command so that any bad input ends in exactly one line on stderr."""

    def fail(message: str, code: int = EXIT_USAGE) -> None:
        click.echo(one_line(f"{prog_name}: error: {message}"), err=True)
        sys.exit(code)

    def internal_error(exc: BaseException) -> None:  # a bug or a resource limit: one line, the traceback on request
        if debug_enabled():
            traceback.print_exc()
        fail(f"internal error: {type(exc).__name__}: {exc} ({DEBUG_ENV}=1 or --debug shows the traceback)",
             EXIT_INTERNAL)

    invoke = command.invoke

    def invoke_noting_a_closed_output(ctx):
        try:
            return invoke(ctx)
        except BrokenPipeError:
            raise OutputClosed() from None

    command.invoke = invoke_noting_a_closed_output
    try:
        command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except (BrokenPipeError, OutputClosed):
        quiet_closed_output()
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(0)
    except click.UsageError as exc:
        hint = f" (try '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        fail(exc.format_message().replace("\n", " ") + hint)
    except click.ClickException as exc:
        fail(exc.format_message().replace("\n", " "), exc.exit_code)
    except (AnalyzerInputError, ReportFormatError, RegistryError) as exc:
        fail(str(exc))
    except click.exceptions.Abort:
        fail("aborted", 1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            internal_error(exc)
        # a name given on the command line (or in a file) that no file system takes: the input's fault
        name = os.path.basename(str(exc.filename or "")) or str(exc.filename or "")
        shown = printable(name if len(name) <= 40 else name[:40] + "...")
        fail(f"file name too long: {shown} ({len(name.encode('utf-8', 'surrogateescape')):,} bytes; the file system "
             f"takes at most {_name_max(exc.filename):,} bytes per name)")
    except Exception as exc:  # a bug or a resource limit: one line, the traceback only on request
        internal_error(exc)
    finally:
        del command.invoke  # the command's own method again


def _name_max(path) -> int:
    """The longest file name the file system of `path`'s folder takes (255 on the common ones)."""
    try:
        return os.pathconf(os.path.dirname(os.path.abspath(str(path))) or ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def quiet_closed_output() -> None:
    """Leave quietly after the reader of standard output went away: what is still buffered has nowhere to go, and
    Python would otherwise report the broken pipe again while flushing at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout without a file descriptor (a test runner's buffer)
        pass
    sys.exit(EXIT_OUTPUT_CLOSED)


def exit_without_teardown(code: int) -> None:
    """Leave without interpreter teardown: all work is done and flushed, and DuckDB's bindings print spurious
    reference-leak reports when they are torn down in a process that also loaded torch."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped before the last of the output (`| head`)
        code = code or EXIT_OUTPUT_CLOSED
    except (OSError, ValueError):
        pass
    try:
        sys.stderr.flush()
    finally:
        os._exit(code)


def run_and_exit(command: click.Command, prog_name: str) -> None:
    """The program's entry point: run the command, then leave with its exit code."""
    try:
        run_cli(command, prog_name=prog_name)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        exit_without_teardown(code)
    exit_without_teardown(0)


def run_script_and_exit(main) -> None:
    """A script's entry point: `main()` returns its exit status; a closed standard output ends it quietly."""
    try:
        code = main()
    except BrokenPipeError:
        try:
            quiet_closed_output()
        except SystemExit as exc:
            code = exc.code
    exit_without_teardown(code)

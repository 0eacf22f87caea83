"""Files the product writes and reads: atomic replacement of outputs, and the one reader of every input document.

Every file the product reads (reports, workload profiles, scenarios, measurement files, hardware and runtime
catalogs, SQL files) goes through `read_input` and `parse_document`, which hold the input limits in one place:
regular files only (a FIFO, a device, a directory or a socket is refused before it is opened), file size, nesting
depth, YAML aliases (refused, or capped by expanded size where a format allows them), duplicate keys, integers
within 64 bits (what the registry's BIGINT columns hold), finite floats, and strings that both database backends
store alike (valid UTF-8, no NUL). Errors are one line naming the source and the key path, quoting at most
QUOTE_CHARS characters of any value (`quote`), with the control characters of names and keys escaped
(`printable`). The physical ranges of numbers are analyzer.ranges'.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import pathlib
import re
import stat
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import yaml

# -- limits -----------------------------------------------------------------------------------------------------
# The README's table "Input limits" lists these; keep the two in step.
MAX_REPORT_BYTES = 64 * 2**20  # a real report is under 2 MB
MAX_MEASUREMENT_BYTES = 16 * 2**20
MAX_SMALL_FILE_BYTES = 1 * 2**20  # profiles, scenarios, catalogs, SQL
MAX_DEPTH = 32  # nesting of lists and mappings; a report nests 6 deep
MAX_EXPANDED_VALUES = 100_000  # values a YAML document with aliases may expand to (scenarios, catalogs)
MAX_STRING_CHARS = 100_000
MAX_KEY_CHARS = 200  # a mapping key is a name: the registry's name columns hold at most 200 characters
INT_MIN, INT_MAX = -2**63, 2**63 - 1  # BIGINT, the widest integer column
# files one command reads (a folder walked, a pattern matched): 10x the largest registry measured (10,000 reports)
MAX_INPUT_FILES = 100_000
QUOTE_CHARS = 100  # an error quotes at most this much of an input value
MESSAGE_CHARS = 300  # an error line is cut to this length

# Strings PostgreSQL refuses (NUL) or that are not UTF-8 once encoded (lone surrogates from JSON \ud800 escapes).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """`repr(value)`, cut to `limit` characters with its full length noted, so an error never echoes a large
    input. Containers are not rendered whole (their repr can be as large as the input)."""
    if isinstance(value, (dict, list, tuple)):
        kind = "mapping" if isinstance(value, dict) else "list"
        return f"a {kind} of {len(value):,} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value):,} characters)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 3 * limit:
        return f"an integer of {value.bit_length():,} bits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def quote_names(names, shown: int = 5) -> str:
    """A few names of a set, each cut to 40 characters: 'a, b, c and 7 more'."""
    ordered = sorted(printable(str(name)) for name in names)
    text = ", ".join(name if len(name) <= 40 else name[:40] + "..." for name in ordered[:shown])
    return text + (f" and {len(ordered) - shown} more" if len(ordered) > shown else "")


def one_of(names) -> str:
    """Names in their order, as a sentence says them: 'a', 'a or b', 'a, b or c'."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def printable(text: str) -> str:
    """`text` with every character a terminal would act on or break a line at (control characters such as NUL,
    ESC of an escape sequence and newline, line separators, bidirectional overrides: whatever
    str.isprintable() refuses but the space) written as Python escapes, so a file name or a key shows what it
    holds and nothing of it reaches the terminal raw: 'a\\nb.json', '\\x1b[31m'."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in text)


def one_line(message: str, limit: int = MESSAGE_CHARS) -> str:
    """A message as one line of at most `limit` characters, whitespace runs (newlines included) as one space and
    every other control character escaped (`printable`): the last guard before anything is printed. Names and
    keys are escaped where they enter a message, so that a newline in them shows as \\n."""
    flat = printable(" ".join(str(message).split()))
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def key_path(path: tuple) -> str:
    """('stages', 3, 'flops') -> 'stages[3].flops'; control characters of a key escaped (`printable`)."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{printable(part)}" if out else printable(part))
    return out or "(top level)"


class InputLimitError(ValueError):
    """An input document beyond the limits (or malformed); callers re-raise it as their own error type.
    `line`: the 1-based line of a YAML document where the problem is, when known."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem)
        self.line = line

    def located(self, source: str | None) -> str:
        """'SOURCE:LINE: problem', 'SOURCE: problem', 'line LINE: problem' or 'problem'."""
        if source:
            return f"{source}:{self.line}: {self}" if self.line is not None else f"{source}: {self}"
        return f"line {self.line}: {self}" if self.line is not None else str(self)


# -- reading ----------------------------------------------------------------------------------------------------

_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class NotRegularFileError(OSError):
    """A path that names a directory, a FIFO, a device or a socket: no reader opens one (a FIFO's open blocks
    until a writer comes, a device never ends)."""

    def __init__(self, mode: int, filename: str) -> None:
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a plain file")
        super().__init__(errno.EINVAL, f"not a regular file ({kind})", filename)


def read_input(path: str | os.PathLike | None, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file (None: standard input), refused when longer than `max_bytes`; reads at most
    max_bytes + 1, so standard input that never ends is refused too. Anything but a regular file is refused
    before it is opened (NotRegularFileError), and again after (the open does not block on a FIFO put in its
    place meanwhile). Raises OSError or InputLimitError."""
    if path is None:
        raw = sys.stdin.buffer.read(max_bytes + 1)
    else:
        name = os.fspath(path)
        found = os.stat(name)
        if not stat.S_ISREG(found.st_mode):
            raise NotRegularFileError(found.st_mode, name)
        if found.st_size > max_bytes:
            raise InputLimitError(f"{what} of {found.st_size:,} bytes exceeds the limit of {max_bytes:,} bytes")
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb", closefd=True) as handle:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):
                raise NotRegularFileError(opened.st_mode, name)
            raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise InputLimitError(f"{what} exceeds the limit of {max_bytes:,} bytes")
    return raw


def decode_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputLimitError(f"not UTF-8 text (byte {exc.start})") from None


# -- parsing ----------------------------------------------------------------------------------------------------

def _json_object(pairs: list[tuple[str, Any]]) -> dict:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InputLimitError(f"duplicate key {quote(key)}")
            seen.add(key)
    return data


def _json_constant(name: str):
    raise InputLimitError(f"non-finite number {name}")


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_json_object, parse_constant=_json_constant)
    except json.JSONDecodeError as exc:
        raise InputLimitError(f"malformed JSON: {exc.msg}: line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InputLimitError(f"nesting deeper than {MAX_DEPTH} levels") from None
    except InputLimitError:
        raise
    except ValueError as exc:
        raise _value_error("JSON", exc) from None


def _value_error(fmt: str, exc: ValueError) -> InputLimitError:
    """A value the parser could not convert: an integer of thousands of digits (Python refuses to convert more
    than sys.get_int_max_str_digits()), or a YAML timestamp that is no date."""
    if "integer string conversion" in str(exc):
        return InputLimitError("an integer of thousands of digits is beyond the 64-bit integer range")
    return InputLimitError(f"malformed {fmt} ({one_line(str(exc), QUOTE_CHARS)})")


class _DocumentLoader(_YAML_LOADER):
    """The safe loader, refusing a mapping that repeats a key (YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise InputLimitError(f"duplicate key {quote(key_node.value)}", key_node.start_mark.line + 1)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> InputLimitError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    return InputLimitError("malformed YAML" + (f" ({one_line(problem, QUOTE_CHARS)})" if problem else ""),
                           mark.line + 1 if mark is not None else None)


def _scan_yaml(text: str, aliases: bool) -> None:
    """Depth, aliases and expanded size from the event stream, before anything is built: a nested-alias bomb is
    refused in time linear in the text, never expanded."""
    depth = 0
    values = 0
    anchored: dict[str, int | None] = {}  # anchor -> expanded size (None while its collection is open)
    open_collections: list[tuple[str | None, int]] = []
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        if isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1
            if not aliases:
                raise InputLimitError(f"YAML aliases (*{quote(event.anchor)}) are not accepted here", line)
            size = anchored.get(event.anchor)
            if size is None:
                raise InputLimitError(f"alias *{quote(event.anchor)} refers to no finished value", line)
            values += size
        elif isinstance(event, yaml.ScalarEvent):
            values += 1
            if event.anchor is not None:
                anchored[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            values += 1
            depth += 1
            if depth > MAX_DEPTH:
                raise InputLimitError(f"nesting deeper than {MAX_DEPTH} levels", event.start_mark.line + 1)
            if event.anchor is not None:
                anchored[event.anchor] = None
            open_collections.append((event.anchor, values))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
            anchor, start = open_collections.pop()
            if anchor is not None:
                anchored[anchor] = values - start + 1
        if aliases and values > MAX_EXPANDED_VALUES:
            raise InputLimitError(f"YAML aliases expand to more than {MAX_EXPANDED_VALUES:,} values")


def _parse_yaml(text: str, aliases: bool) -> Any:
    try:
        _scan_yaml(text, aliases)
        return yaml.load(text, Loader=_DocumentLoader)
    except yaml.YAMLError as exc:
        raise _yaml_problem(exc) from None
    except RecursionError:  # pragma: no cover - the scan refuses deep nesting first
        raise InputLimitError(f"nesting deeper than {MAX_DEPTH} levels") from None
    except InputLimitError:
        raise
    except ValueError as exc:
        raise _value_error("YAML", exc) from None


def _within_limits(data: Any) -> bool:
    """Whether a parsed document passes every check of check_values, in one walk that keeps no key paths and checks
    each distinct key once (a report holds ~400,000 values under a few dozen key names). False defers to the full
    walk, which names what it refuses; anything but the plain types defers too."""
    good_keys: set[str] = set()
    stack: list[tuple[Any, int]] = [(data, 0)]
    string_ok = _string_ok
    while stack:
        container, depth = stack.pop()
        if depth >= MAX_DEPTH:
            return False
        if type(container) is dict:
            for key in container:
                if key not in good_keys:
                    if type(key) is not str or len(key) > MAX_KEY_CHARS or not string_ok(key):
                        return False
                    good_keys.add(key)
            items = container.values()
        else:
            items = container
        for value in items:
            kind = type(value)
            if kind is str:
                if not string_ok(value):
                    return False
            elif kind is int:
                if not INT_MIN <= value <= INT_MAX:
                    return False
            elif kind is float:
                if value - value != 0.0:  # inf - inf and nan - nan are nan
                    return False
            elif kind is dict or kind is list:
                stack.append((value, depth + 1))
            elif value is not None and kind is not bool:
                return False
    return True


def _string_ok(value: str) -> bool:
    return len(value) <= MAX_STRING_CHARS and _UNSTORABLE.search(value) is None


def check_values(data: Any) -> None:
    """Refuse what no reader accepts: nesting deeper than MAX_DEPTH, integers beyond 64 bits, non-finite floats,
    keys that are not strings... and strings that are too long or that a backend would store differently. Messages
    name the key path. A document that passes the quick walk (`_within_limits`) is done; any other is walked again
    (without recursion) with its key paths, to name what it refuses."""
    if type(data) in (dict, list) and _within_limits(data):
        return
    stack: list[tuple[Any, tuple, int]] = [(data, (), 0)]
    visited = 0
    while stack:
        value, path, depth = stack.pop()
        visited += 1
        if visited > MAX_EXPANDED_VALUES * 100:  # pragma: no cover - size and alias limits come first
            raise InputLimitError("too many values")
        if isinstance(value, str):
            _check_string(value, path)
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if not INT_MIN <= value <= INT_MAX:
                raise InputLimitError(f"{key_path(path)}: {quote(value)} is beyond the 64-bit integer range")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InputLimitError(f"{key_path(path)}: non-finite number {value}")
        elif isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                raise InputLimitError(f"{key_path(path)}: nesting deeper than {MAX_DEPTH} levels")
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise InputLimitError(f"{key_path(path)}: key {quote(key)} is not a string")
                    if len(key) > MAX_KEY_CHARS:
                        raise InputLimitError(f"{key_path(path)}: key {quote(key)} is longer than {MAX_KEY_CHARS} "
                                              f"characters")
                    _check_string(key, (*path, key))
                    stack.append((item, (*path, key), depth + 1))
            else:
                stack.extend((item, (*path, index), depth + 1) for index, item in enumerate(value))
        else:
            raise InputLimitError(f"{key_path(path)}: unsupported value {quote(value)} of type "
                                  f"{type(value).__name__}")


def _check_string(value: str, path: tuple) -> None:
    if len(value) > MAX_STRING_CHARS:
        raise InputLimitError(f"{key_path(path)}: string of {len(value):,} characters exceeds the limit of "
                              f"{MAX_STRING_CHARS:,}")
    bad = _UNSTORABLE.search(value)
    if bad is not None:
        what = "a NUL character" if bad.group() == "\x00" else "an unpaired UTF-16 surrogate"
        raise InputLimitError(f"{key_path(path)}: {quote(value)} holds {what}")


def parse_document(text: str, fmt: str, aliases: bool = False) -> Any:
    """A JSON or YAML document (fmt "json" or "yaml") within the input limits; raises InputLimitError.

    `aliases`: whether YAML aliases are accepted (their expanded size capped); formats that have no use for
    them refuse them."""
    data = _parse_json(text) if fmt == "json" else _parse_yaml(text, aliases)
    check_values(data)
    return data


SOURCE_NAME_CHARS = 160  # a longer path is shown by its ends, so that the problem still fits the one line


def source_name(path: str | os.PathLike | None) -> str:
    """How an error names an input: '<stdin>', or its path with control characters escaped (`printable`), a path
    longer than SOURCE_NAME_CHARS by its first and last 60 characters."""
    if path is None:
        return "<stdin>"
    name = printable(os.fspath(path))
    if len(name) <= SOURCE_NAME_CHARS:
        return name
    return f"{name[:60]}...{name[-60:]} ({len(name):,} characters)"


def unreadable(source: str, exc: OSError) -> str:
    """The one line for an input the reader could not read: 'SOURCE: not a regular file (a FIFO)' or
    'SOURCE: cannot read: REASON'."""
    if isinstance(exc, NotRegularFileError):
        return f"{source}: {exc.strerror}"
    return f"{source}: cannot read: {exc.strerror or exc}"


def read_document(path: str | os.PathLike | None, fmt: str, max_bytes: int, error: type[Exception],
                  source: str | None = None, aliases: bool = False) -> tuple[str, Any]:
    """(text, parsed document) of one input, read once; any problem is `error("SOURCE: problem")`, one line."""
    source = source if source is not None else source_name(path)
    try:
        raw = read_input(path, max_bytes)
        if not raw.strip():
            raise InputLimitError("empty file")
        text = decode_text(raw)
        return text, parse_document(text, fmt, aliases)
    except OSError as exc:
        raise error(unreadable(source, exc)) from None
    except InputLimitError as exc:
        raise error(exc.located(source)) from None


def load_document(path: str | os.PathLike | None, fmt: str, max_bytes: int, error: type[Exception],
                  source: str | None = None, aliases: bool = False) -> Any:
    """Read, decode and parse one input document; any problem is `error("SOURCE: problem")`, one line."""
    return read_document(path, fmt, max_bytes, error, source, aliases)[1]


def load_text(path: str | os.PathLike | None, max_bytes: int, error: type[Exception], source: str | None = None
              ) -> str:
    """A plain text input (an SQL query), within the size limit, UTF-8, with no NUL character."""
    source = source if source is not None else source_name(path)
    try:
        text = decode_text(read_input(path, max_bytes))
        bad = _UNSTORABLE.search(text)
        if bad is not None:
            line = text.count("\n", 0, bad.start()) + 1
            raise InputLimitError("a NUL character" if bad.group() == "\x00" else "an unpaired UTF-16 surrogate",
                                  line)
        return text
    except OSError as exc:
        raise error(unreadable(source, exc)) from None
    except InputLimitError as exc:
        raise error(exc.located(source)) from None


def parse_yaml(text: str, source: str, error: type[Exception], aliases: bool = False) -> Any:
    """A YAML document within the input limits, a problem reported as one line `SOURCE: line N: problem`."""
    if len(text) > MAX_SMALL_FILE_BYTES:
        raise error(f"{source}: {len(text):,} characters exceeds the limit of {MAX_SMALL_FILE_BYTES:,}")
    try:
        return parse_document(text, "yaml", aliases)
    except InputLimitError as exc:
        raise error(exc.located(source)) from None


# -- writing ----------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[pathlib.Path]:
    """A temporary path beside `target`, renamed onto it when the block succeeds and removed when it fails, so a
    partly written file never appears under the target's name. The path exists (empty) when the block starts."""
    target = pathlib.Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = pathlib.Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the output gets a new file's usual mode
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(target: str | os.PathLike, content: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(content, "utf-8")


# The files the command line reads, by the top-level keys that only they have, and the command that takes each:
# a file given to the wrong command is named for what it is.
DOCUMENT_KINDS = (
    ("a report (AnalyticModelReport)", {"schema_version", "report_id", "stages", "modules"},
     "ingest FILE, summary FILE"),
    ("a measurement file", {"env", "rows"}, "ingest --measurements FILE, compare --measurements FILE"),
    ("a scenario", {"sweep", "serving", "target", "overrides", "base"}, "whatif --scenario FILE"),
    ("a workload profile", {"variant", "mode", "page", "prompt_text_tokens", "new_tokens", "decoding"},
     "analyze --workload FILE"),
)


def document_kind(data: Any) -> tuple[str, str] | None:
    """(what the document is, the commands that take it) for a mapping with the keys of one of DOCUMENT_KINDS
    (the kind sharing most keys with it), else None."""
    if not isinstance(data, dict):
        return None
    keys = {key for key in data if isinstance(key, str)}
    best = max(DOCUMENT_KINDS, key=lambda kind: len(keys & kind[1]))
    return (best[0], best[2]) if keys & best[1] else None


def document_kind_of_head(head: bytes) -> tuple[str, str] | None:
    """document_kind of a file too large to parse, from the first bytes: a report says "schema_version" and
    "report_id" there; a measurement file starts with "env"."""
    text = head.decode("utf-8", "replace")
    if "schema_version" in text and "report_id" in text:
        return DOCUMENT_KINDS[0][0], DOCUMENT_KINDS[0][2]
    if re.match(r'\s*\{\s*"env"\s*:', text):
        return DOCUMENT_KINDS[1][0], DOCUMENT_KINDS[1][2]
    return None

"""Files the product writes and reads: atomic replacement of outputs, and YAML whose errors name the line."""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from collections.abc import Iterator
from typing import Any

import yaml


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


def parse_yaml(text: str, source: str, error: type[Exception]) -> Any:
    """`yaml.safe_load`, with a malformed document reported as one line `SOURCE:LINE: malformed YAML (problem)`."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None)
        raise error(f"{where}: malformed YAML" + (f" ({problem})" if problem else "")) from None

"""A newcomer's first steps, run as the README writes them: its quick start and its capacity answer, in a fresh clone
of the repository, with what each command prints compared with what the README shows.

    python .ci/newcomer.py [--reuse-venv]
    python .ci/newcomer.py --setup-lines      # print the quick start's set-up lines (CI runs them as written)

The README's shell blocks under "## Quick start" and "## The capacity answer" run line by line with bash in a new
clone (no virtual environment, no registry, no trace cache). The test suite's line is left to CI, which runs it
after. A plain code block right after a shell block is what that block's last command prints: the command's output
must end with it, character for character. --reuse-venv runs the commands with this interpreter's environment
instead of making one (for a machine that just made it from the same lines). Exits 1 with a diff on a difference.
"""

from __future__ import annotations

import argparse
import difflib
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
SECTIONS = ("Quick start", "The capacity answer")
SETUP_LINE = re.compile(r"^(python3(\.\d+)? -m venv|pip install)")


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def steps(text: str) -> list[tuple[list[str], str | None]]:
    """Each shell block of the text as (its command lines, the plain block printed after it or None)."""
    found = []
    for match in re.finditer(r"```(sh|bash)?\n(.*?)```", text, re.DOTALL):
        language, body = match.group(1), match.group(2)
        if language:
            lines = [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]
            found.append((lines, None))
        elif found and found[-1][1] is None:
            found[-1] = (found[-1][0], body)
    return found


def output_difference(output: str, expected: str | None) -> str:
    """A diff of the README's block against the end of what the command printed; empty when they agree."""
    if expected is None or output.rstrip("\n").endswith(expected.rstrip("\n")):
        return ""
    tail = output.rstrip("\n").splitlines()[-len(expected.splitlines()):]
    return "".join(difflib.unified_diff(expected.splitlines(True), [line + "\n" for line in tail], "README",
                                        "printed"))


def run(line: str, cwd: pathlib.Path, env: dict) -> str:
    started = time.monotonic()
    print(f"$ {line}", flush=True)
    done = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    print(f"  ({time.monotonic() - started:.0f} s, exit {done.returncode})", flush=True)
    if done.returncode != 0:
        sys.exit(f"newcomer: `{line}` exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse-venv", action="store_true", help="use this interpreter's environment")
    parser.add_argument("--setup-lines", action="store_true", help="print the quick start's set-up lines and exit")
    args = parser.parse_args()
    text = (REPO / "README.md").read_text()
    if args.setup_lines:
        for lines, _ in steps(section(text, SECTIONS[0])):
            print("\n".join(line for line in lines if SETUP_LINE.match(line)))
        return
    with tempfile.TemporaryDirectory(prefix="newcomer-") as tmp:
        clone = pathlib.Path(tmp) / "dsocr-registry"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        env = {key: value for key, value in os.environ.items() if not key.startswith("DSOCR_")}
        env["DSOCR_CACHE_DIR"] = str(pathlib.Path(tmp) / "cache")  # a newcomer's cache starts empty
        if args.reuse_venv:
            env["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        else:
            env["PATH"] = f"{clone / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"  # what `. .venv/bin/activate` does
        differences = 0
        for title in SECTIONS:
            print(f"## {title}", flush=True)
            for lines, expected in steps(section(text, title)):
                output = ""
                for line in lines:
                    if line.startswith("python -m pytest"):
                        continue  # CI runs the tests after this script
                    if args.reuse_venv and SETUP_LINE.match(line):
                        print(f"$ {line}  (skipped: --reuse-venv)")
                        continue
                    line = line.replace(" && . .venv/bin/activate", "")  # PATH above is the activation
                    output = run(line, clone, env)
                difference = output_difference(output, expected)
                if difference:
                    differences += 1
                    print(difference)
        if differences:
            sys.exit(f"newcomer: {differences} output block(s) of the README differ from what the commands print")
        print("newcomer: the README's quick start and capacity answer ran as written and printed what it shows")


if __name__ == "__main__":
    main()

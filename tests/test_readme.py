"""The README names only commands and options that exist, and every command and option says what it does."""

import pathlib
import re
import shlex

import click
import pytest

from registry.interfaces.analyzer_main import analyzer_command
from registry.interfaces.cli import cli
from tests.helpers import DOC_FILES, REPO, doc_text

PROGRAMS = {"dsocr-registry": cli, "python -m analyzer": analyzer_command}


# A fenced code block: its opening fence (maybe indented, in a list) with the language, its body, its closing fence.
# Fences are matched at the start of a line, so a closing fence is never taken for the opening of the next block.
FENCED_BLOCK = re.compile(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", re.DOTALL | re.MULTILINE)


def command_lines(text: str) -> list[str]:
    """Every command of a Markdown page: the lines of its shell code blocks (sh, bash or no language; a text block
    shows output) and its inline code, split at pipes and `&&`, that start with one of the programs."""
    snippets = []
    for language, block in FENCED_BLOCK.findall(text):
        if language in ("", "sh", "bash"):
            snippets += block.splitlines()
    snippets += re.findall(r"`([^`\n]+)`", FENCED_BLOCK.sub("", text))
    commands = []
    for snippet in snippets:
        for part in re.split(r"\|(?=\s)|&&", snippet):  # a pipe is "| " (a value like json|yaml has no space)
            part = part.strip()
            if any(part.startswith(program + " ") for program in PROGRAMS):
                commands.append(part)
    return commands


def resolve(line: str) -> tuple[click.Command, list[str]]:
    """The command a README line runs and the words after its name (placeholders in brackets unwrapped)."""
    program = next(p for p in PROGRAMS if line.startswith(p + " "))
    words = [w.strip("[]") for w in shlex.split(line[len(program):], comments=True)]
    command = PROGRAMS[program]
    # a group named alone (`dsocr-registry db`, a heading of docs/cli.md) is a command too: it prints its commands
    while isinstance(command, click.Group) and words:
        while words and words[0].startswith("-"):  # an option of the group itself (e.g. --debug) comes first
            group_options = {o for p in command.params for o in getattr(p, "opts", [])}
            assert words[0] in group_options, f"{line}: {words[0]} is no option of {command.name}"
            words = words[1:]
        assert words, f"{line}: names no command of {command.name}"
        assert words[0] in command.commands, f"{line}: {words[0]!r} is no command of {program}"
        command, words = command.commands[words[0]], words[1:]
    return command, words


def check_line(line: str) -> None:
    """Fails when the line names a command or an option its program does not have."""
    command, words = resolve(line)
    known = {o for p in command.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
    used = [w.split("=", 1)[0] for w in words if w.startswith("-") and w != "-" and not w[1:2].isdigit()]
    for option in used:
        assert option in known | {"--help", "-h"}, f"{line}: {option} is no option of {command.name}"


def test_every_readme_command_line_is_real():
    lines = command_lines(doc_text())
    assert len(lines) >= 150
    for line in lines:
        check_line(line)


def test_the_command_check_reads_shell_blocks_and_not_output_blocks():
    page = ("```text\ndsocr-registry nosuch [OPTIONS]\n```\n\nprose\n\n```sh\ndsocr-registry db upgrade\n```\n"
            "  ```yaml\nkey: 1\n  ```\n`dsocr-registry db` and `dsocr-registry cache info`\n")
    assert command_lines(page) == ["dsocr-registry db upgrade", "dsocr-registry db", "dsocr-registry cache info"]
    for line in command_lines(page):
        check_line(line)


def test_the_what_if_script_lines_name_its_options():
    import importlib.util

    script = REPO / "scripts" / "analytical" / "dsocr_analytic_what_if.py"
    spec = importlib.util.spec_from_file_location("what_if_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    known = set(module.build_parser()._option_string_actions)
    text = doc_text()
    lines = re.findall(r"python scripts/analytical/dsocr_analytic_what_if\.py([^\n`]*)", text)
    assert lines
    for line in lines:
        for word in shlex.split(line, comments=True):
            if word.startswith("--"):
                assert word.split("=", 1)[0] in known, f"{line}: {word}"


def test_the_analyze_options_table_names_real_options():
    text = (REPO / "docs" / "analysis.md").read_text()
    table = text[text.index("Options (`dsocr-registry analyze --help`)"):]
    table = table[:table.index("\n\n", table.index("|"))]
    named = re.findall(r"`(--?[a-z-]+)[^`]*`", table)
    known = {o for p in cli.commands["analyze"].params for o in p.opts}
    assert len(named) >= 12 and [o for o in named if o not in known] == []
    assert {o for o in known if o.startswith("--")} - set(named) <= {"--quiet"}


@pytest.mark.parametrize("line,problem", [
    ("dsocr-registry analyze --workload dsocr-standard-v1 --new-tokns 8", "--new-tokns is no option"),
    ("dsocr-registry ingest --bach 2 report.json", "--bach is no option"),
    ("dsocr-registry db upgrad", "'upgrad' is no command"),
    ("dsocr-registry summary REPORT [--outt FILE]", "--outt is no option"),
    ("python -m analyzer --model m --workload-profil x", "--workload-profil is no option"),
])
def test_the_readme_check_catches_misspelled_commands_and_options(line, problem):
    [command_line] = command_lines(f"```sh\n{line}\n```\n")
    with pytest.raises(AssertionError, match=re.escape(problem)):
        check_line(command_line)


def _commands(command: click.Command, path: str):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, f"{path} {name}")


def test_every_command_and_option_has_help():
    missing = []
    for program, root in PROGRAMS.items():
        for path, command in _commands(root, program):
            if not (command.help or "").strip():
                missing.append(path)
            for param in command.params:
                if isinstance(param, click.Option) and not (param.help or "").strip():
                    missing.append(f"{path} {param.opts[0]}")
    assert missing == []


def test_readme_lists_every_command():
    text = (REPO / "README.md").read_text()
    for path, _ in _commands(cli, "dsocr-registry"):
        assert f"{path} " in text or f"{path}`" in text or f"{path}\n" in text, path


def test_the_help_names_every_command():
    """`dsocr-registry --help` opens with the commands by task: each command is named there (in words, so a new
    command that is not added to the list fails here)."""
    listed = set(re.findall(r"[a-z][a-z-]+", cli.help.split("\b", 1)[1].strip("\n").split("\n\n")[0]))
    assert set(cli.commands) - listed == set()


def test_sql_help_names_every_view():
    from registry.store.views import view_names

    help_text = " ".join(cli.commands["sql"].help.split())
    assert [name for name in view_names() if name not in help_text] == []


# -- what a reader pastes runs as written, in the order written -------------------------------------------------

def _shell_lines(text: str) -> list[str]:
    """The lines of the README's shell code blocks, comments and quoted text removed."""
    lines = []
    for block in re.findall(r"```(?:sh|bash)\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            line = re.sub(r"'[^']*'|\"(?:[^\"\\\\]|\\\\.)*\"", "''", line)
            lines.append(re.sub(r"(^|\s)#.*", "", line))
    return lines


def check_pipes(text: str) -> list[str]:
    """Lines with a `|` that a shell would take as a pipe into a command named after a value (`table|csv`)."""
    return [line for line in _shell_lines(text) if re.search(r"\S\||\|(?!\s)", line)]


def test_no_readme_command_pipes_into_a_value():
    assert check_pipes(doc_text()) == []


def test_the_pipe_check_catches_a_list_of_values():
    block = '```sh\ndsocr-registry sql "SELECT 1" --format table|csv|json\necho "a|b" | head -1  # x|y\n```\n'
    assert check_pipes(block) == ['dsocr-registry sql \'\' --format table|csv|json']


def check_files_added(text: str) -> list[str]:
    """`... add FILE` lines whose FILE is neither in the repository nor written (--out, -o) by a line before."""
    written, missing = set(), []
    for line in command_lines(text):
        words = shlex.split(line, comments=True)
        for option, value in zip(words, words[1:]):
            if option in ("--out", "-o"):
                written.add(value)
        # a placeholder in capitals (FILE) names no file
        if len(words) > 3 and words[2] == "add" and not words[3].startswith("-") and not words[3].isupper():
            if words[3] not in written and not (REPO / words[3]).exists():
                missing.append(line)
    return missing


def test_every_file_the_readme_adds_exists_or_is_written_first():
    for path in DOC_FILES:  # each page read on its own
        assert check_files_added(path.read_text()) == [], path.name


def test_the_added_file_check_catches_a_file_written_later():
    block = ("```sh\ndsocr-registry runtime add fit.yaml\n"
             "dsocr-registry calibrate --hardware h200 --runtime hf-eager --out fit.yaml\n```\n")
    assert check_files_added(block) == ["dsocr-registry runtime add fit.yaml"]
    assert check_files_added(block.replace("runtime add fit.yaml\n", "runtime list\n") + block) == []


def check_postgresql_order(text: str) -> list[str]:
    """Lines that use a PostgreSQL URL before any line has run `db upgrade` on it (the schema is made there)."""
    upgraded, early = set(), []
    for line in command_lines(text):
        url = re.search(r"--db\s+(postgresql://\S+)", line)
        if url is None:
            continue
        database = re.sub(r"//[^@/]*@", "//", url.group(1))  # the same database whichever role connects
        if " db upgrade " in f" {line} ":
            upgraded.add(database)
        elif database not in upgraded:
            early.append(line)
    return early


def test_the_readme_creates_a_postgresql_schema_before_using_it():
    for path in DOC_FILES:  # each page read on its own
        assert check_postgresql_order(path.read_text()) == [], path.name


def test_the_postgresql_order_check_catches_an_ingest_first():
    block = ("```sh\ndsocr-registry ingest --db postgresql://h/db r.json\n"
             "dsocr-registry db upgrade --db postgresql://h/db\n```\n")
    assert check_postgresql_order(block) == ["dsocr-registry ingest --db postgresql://h/db r.json"]


# -- figures quoted from what a command or benchmark prints -----------------------------------------------------

def _block_after(text: str, marker: str) -> str:
    start = text.index(marker)
    return re.search(r"```\n(.*?)```", text[start:], re.DOTALL).group(1)


def test_the_report_size_is_the_size_of_the_report():
    """bench_analyzer prints the standard report's size; the README quotes it as printed."""
    from analyzer.analysis import analyze
    from analyzer.report import dumps_json
    from analyzer.workload import load_profile

    megabytes = f"{len(dumps_json(analyze(load_profile('dsocr-standard-v1')))) / 1e6:.2f} MB"
    text = doc_text()
    printed = re.search(r"report to JSON \(([\d.]+ MB)\)", _block_after(text, "python benchmarks/bench_analyzer.py"))
    assert printed.group(1) == megabytes
    quoted = re.findall(r"(?:report is|reports? of) ([\d.]+ MB) of JSON", text)
    assert quoted and set(quoted) == {megabytes}


def test_the_size_per_report_is_quoted_from_the_benchmark():
    text = doc_text()
    printed = float(re.search(r"= ([\d.]+) kB per report", text).group(1))
    quoted = {int(value) for value in re.findall(r"(\d+) kB per report in", text)}
    assert quoted == {round(printed)}


def test_the_serving_timings_are_quoted_from_the_benchmark():
    text = doc_text()
    block = _block_after(text, "`python benchmarks/bench_serving.py` (the same")
    offline = [float(s) for s in re.findall(r"offline\s+10,000 pages in\s+([\d.]+) s", block)]
    half = [float(s) for s in re.findall(r"half load 10,000 pages in\s+([\d.]+) s", block)]
    scenario = float(re.search(r"end to end on a fresh registry:\s+([\d.]+) s", block).group(1))
    assert offline and half
    assert f"simulate in {min(offline):.2f}–{max(offline):.2f} s offline" in text
    assert f"in {min(half):.2f}–{max(half):.2f} s at half the offline rate" in text
    assert f"runs in ~{scenario:.0f} s on a fresh registry" in text


def readme_figures_problems(readme: str, serving_doc: str, measurements_doc: str) -> list[str]:
    """Figures the README's prose quotes that differ from the output block or the page they come from."""
    problems = []
    prose = " ".join(readme.split())  # the README's lines wrap anywhere
    command = readme.index("dsocr-registry plan --scenario queries/examples/plan-1m-pages.yaml --plot plan.png")
    plan = re.search(r"```\n\n```\n(.*?)```", readme[command:], re.DOTALL).group(1)  # the block after the command's
    cheapest = re.search(r"cheapest: (\d+) x (\S+) \((\w+),.*?\$([\d,]+) a month.*?([\d.]+) pages/s per GPU.*?"
                         r"page latency p99 ([\d.]+) s", plan)
    count, gpu, engine, monthly, pages_per_s, p99 = cheapest.groups()
    gpu_names = {"a100-80g": "A100-80G", "h100-sxm": "H100 SXM", "h200": "H200", "l40s": "L40S"}
    claim = f"**{count} {gpu_names[gpu]} under {'SGLang' if engine == 'sglang' else 'vLLM'} carries the load at " \
            f"{pages_per_s} pages/s per GPU, ${monthly} a month**"
    if claim not in prose:
        problems.append(f"the cheapest: {claim}")
    h100 = re.search(r"#\d+ 1 x h100-sxm \$([\d,]+) ([\d.]+) s", plan)
    if f"cuts the page latency p99 from {p99} s to {h100.group(2)} s for ${h100.group(1)}" not in prose:
        problems.append("the H100 on the Pareto front")
    rows = re.search(r"(\d+) configurations meet the SLOs, (\d+) miss them, (\d+) cannot run", plan).groups()
    if f"Every configuration's row ({sum(map(int, rows))} of them)" not in prose:
        problems.append("the number of configurations")
    table = serving_doc[serving_doc.index("| measurement (source) |"):]
    table = table[:table.index("\n\n")].splitlines()[2:]
    ratios = [[float(r) for r in re.findall(r"[\d.]+", row.split("|")[6])] for row in table]
    deepseek_pages, blogs = ratios[0][-1], [r[-1] for r in ratios[1:]]
    if f"predicted within +{round((deepseek_pages - 1) * 100)}% (pages/s)" not in prose:
        problems.append("DeepSeek's pipeline")
    if f"over-predicted {min(blogs):.1f}–{max(blogs):.1f}x" not in prose:
        problems.append("the public blog figures")
    fit = re.search(r"\((?:both ingested; )?(\d+) timed rows;.*?([\d.]+)% after", measurements_doc, re.DOTALL)
    held_out = [float(v) for v in re.findall(r"(?:end to end|prefill|vision) ([\d.]+)%",
                                                measurements_doc[measurements_doc.index("Held out"):][:200])]
    claim = f"{fit.group(1)} timed rows, {fit.group(2)}% mean absolute error; held-out kinds " \
            f"{min(held_out):g}–{max(held_out):.0f}%"
    if claim not in prose:
        problems.append(f"the H200 fit: {claim}")
    return problems


def test_the_readme_quotes_the_figures_its_outputs_and_pages_print():
    docs = REPO / "docs"
    assert readme_figures_problems((REPO / "README.md").read_text(), (docs / "serving.md").read_text(),
                                   (docs / "measurements.md").read_text()) == []


def test_the_figure_check_catches_a_typed_figure():
    readme = (REPO / "README.md").read_text()
    args = ((REPO / "docs" / "serving.md").read_text(), (REPO / "docs" / "measurements.md").read_text())
    assert readme_figures_problems(readme.replace("11.68 pages/s per GPU, $1,161 a month**",
                                                  "11.7 pages/s per GPU, $1,161 a month**"), *args) \
        == ["the cheapest: **1 A100-80G under SGLang carries the load at 11.68 pages/s per GPU, $1,161 a month**"]
    assert readme_figures_problems(readme.replace("(48 of them)", "(47 of them)"), *args) \
        == ["the number of configurations"]
    assert readme_figures_problems(readme, args[0].replace("| 1.09; 1.12 |", "| 1.09; 1.15 |"), args[1]) \
        == ["DeepSeek's pipeline"]


def _anchor(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's rule) gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_links(pages: dict[pathlib.Path, str]) -> list[str]:
    """Relative links of the pages whose file or #anchor does not exist."""
    anchors = {path: {_anchor(h) for h in re.findall(r"^#+ (.*)$", text, re.MULTILINE)} for path, text in pages.items()}
    broken = []
    for path, text in pages.items():
        prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", target):
                continue  # a URL
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{path.name}: {target}")
            elif anchor and linked.suffix == ".md":
                known = anchors.get(linked) or {_anchor(h) for h in re.findall(r"^#+ (.*)$", linked.read_text(),
                                                                               re.MULTILINE)}
                if anchor not in known:
                    broken.append(f"{path.name}: {target}")
    return broken


def test_every_link_of_the_docs_leads_somewhere():
    from tests.helpers import DOC_FILES

    assert broken_links({path.resolve(): path.read_text() for path in DOC_FILES}) == []


def test_the_link_check_catches_a_missing_page_and_anchor():
    page = (REPO / "README.md").resolve()
    text = "# Top\n\nSee [a](docs/nothing.md), [b](docs/serving.md#no-such-part), [c](#top), [d](https://x.org/y).\n"
    assert broken_links({page: text}) == ["README.md: docs/nothing.md", "README.md: docs/serving.md#no-such-part"]


def _newcomer():
    import importlib.util

    spec = importlib.util.spec_from_file_location("newcomer", REPO / ".ci" / "newcomer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_newcomer_check_runs_the_capacity_answer_and_compares_its_outputs():
    """.ci/newcomer.py (run by CI) finds the README's commands and the outputs it shows after them, and a figure
    that differs from what a command printed is a difference."""
    newcomer = _newcomer()
    readme = (REPO / "README.md").read_text()
    assert newcomer.steps(newcomer.section(readme, "Quick start"))[0][0][2].startswith("dsocr-registry analyze")
    (plan, plan_output), (which_gpu, table) = newcomer.steps(newcomer.section(readme, "The capacity answer"))
    assert plan == ["dsocr-registry plan --scenario queries/examples/plan-1m-pages.yaml --plot plan.png"]
    assert plan_output.startswith("plan 1: ") and "11.68 pages/s per GPU" in plan_output
    assert which_gpu[-1] == "dsocr-registry sql --file queries/examples/06_which_gpu.sql"
    assert table.startswith("hardware ") and table.rstrip().endswith("(16 rows)")
    printed = "48 rows of every configuration\n" + plan_output
    assert newcomer.output_difference(printed, plan_output) == ""
    changed = newcomer.output_difference(printed.replace("11.68 pages/s", "11.70 pages/s"), plan_output)
    assert "-cheapest: 1 x a100-80g" in changed and "+cheapest: 1 x a100-80g" in changed
    assert newcomer.output_difference("anything", None) == ""

"""The reference pages docs/cli.md and docs/views.md, generated from the code so they say what it does.

docs/cli.md is written from the click commands (usage, help, every option with its type, default and help) and
docs/views.md from the data dictionary as a new registry holds it (each view's comment, its columns with their
types and comments, and each base table's comment). Both files carry a cog block that calls this module;
`cog -r docs/cli.md docs/views.md` rewrites them, and tests/test_reference_docs.py fails when either is stale.
"""

from __future__ import annotations

import inspect
import re

import click

# The sections of docs/cli.md: commands by what they are for, in the order a reader meets them. A command of
# the program not named here still gets its section, under OTHER_TOPIC.
TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Analyze a model", ("analyze", "cache")),
    ("Store and query reports", ("ingest", "sql", "schema", "report", "summary", "export", "snapshot", "db")),
    ("Catalogs and profiles", ("hardware", "runtime", "engine", "host")),
    ("Price, simulate and plan", ("whatif", "serve-sim", "plan")),
    ("Measure and calibrate", ("measure", "measure-host", "compare", "calibrate")),
    ("HTTP service", ("serve",)),
)
OTHER_TOPIC = "Other commands"

# click 8.3 and later mark a parameter given no default with this sentinel; earlier releases with None
_NO_DEFAULT = getattr(click.core, "UNSET", None)


def default_programs() -> tuple[tuple[str, click.Command], ...]:
    """The programs docs/cli.md documents: (how a shell names it, its click command)."""
    from registry.interfaces.analyzer_main import analyzer_command
    from registry.interfaces.cli import cli

    return (("dsocr-registry", cli), ("python -m analyzer", analyzer_command))


# -- walking the commands -----------------------------------------------------------------------------------------

def walk(command: click.Command, path: str, parent: click.Context | None = None):
    """(path, command, context) of `command` and of every command under it, subcommands in name order."""
    context = click.Context(command, info_name=path.rsplit(" ", 1)[-1] if parent else path, parent=parent)
    yield path, command, context
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            if not command.commands[name].hidden:
                yield from walk(command.commands[name], f"{path} {name}", context)


def command_paths(programs=None) -> list[str]:
    """Every documented command as a shell names it (`dsocr-registry db upgrade`), program roots included."""
    return [path for program, root in (programs or default_programs()) for path, _, _ in walk(root, program)]


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but - and _ dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


# -- rendering one command ----------------------------------------------------------------------------------------

def _escape_text(text: str) -> str:
    """Plain text as Markdown text: a < outside `code` would open an HTML tag (<table>.parquet would vanish)."""
    return "".join(piece if piece.startswith("`") else piece.replace("<", "&lt;").replace(">", "&gt;")
                   for piece in re.split(r"(`[^`]*`)", text))


def _escape_cell(text: str) -> str:
    """Text for one cell of a Markdown table: on one line, its pipes escaped (they would end the cell)."""
    return _escape_text(" ".join(text.split())).replace("|", "\\|")


def _code(text: str) -> str:
    return f"``{text}``" if "`" in text else f"`{text}`"


def help_markdown(text: str | None) -> str:
    """A command's help as Markdown: click's paragraphs rewrapped, and each paragraph marked \\b (printed as
    written, e.g. a list of commands) as a code block; what follows \\f is for the code, not the reader."""
    text = inspect.cleandoc((text or "").split("\f", 1)[0])
    blocks = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.splitlines()
        if not lines:
            continue
        if lines[0].strip() == "\b":
            blocks.append("```text\n" + inspect.cleandoc("\n".join(lines[1:])) + "\n```")
        else:
            blocks.append(_escape_text(" ".join(" ".join(lines).split())))
    return "\n\n".join(blocks)


def _range(param_type) -> str:
    """The bounds of an IntRange or FloatRange, as click's help writes them (x>=0, 0<x<=10)."""
    low = "" if param_type.min is None else f"{param_type.min}{'<' if param_type.min_open else '<='}"
    high = "" if param_type.max is None else f"{'<' if param_type.max_open else '<='}{param_type.max}"
    if low and high:
        return f"{low}x{high}"
    if low:
        return f"x{'>' if param_type.min_open else '>='}{param_type.min}"
    return f"x{high}" if high else ""


def type_text(param: click.Parameter) -> str:
    """What a parameter takes: a flag, one of its choices, a number in its range, a file or folder, or text."""
    if isinstance(param, click.Option) and param.is_flag:
        return "flag"
    kind = param.type
    if isinstance(kind, click.Choice):
        text = "one of " + ", ".join(_code(str(choice)) for choice in kind.choices)
    elif isinstance(kind, (click.IntRange, click.FloatRange)):
        bounds = _range(kind)
        text = ("integer" if isinstance(kind, click.IntRange) else "number") + (f" ({_code(bounds)})" if bounds else "")
    elif isinstance(kind, click.Path):
        text = "file" if not kind.dir_okay else "folder" if not kind.file_okay else "path"
        if kind.exists:
            text += " that exists"
        if kind.allow_dash:
            text += " or `-`"
    elif kind is click.INT:
        text = "integer"
    elif kind is click.FLOAT:
        text = "number"
    elif kind is click.BOOL:
        text = "boolean"
    else:
        text = "text"
    if getattr(param, "multiple", False) or (isinstance(param, click.Argument) and param.nargs == -1):
        text += ", repeatable"
    return text


def default_text(param: click.Parameter, context: click.Context) -> str:
    """The value a parameter takes when it is left out (the environment variable read first, if any)."""
    parts = []
    if param.required:
        parts.append("required")
    envvar = getattr(param, "envvar", None)
    if isinstance(envvar, str):
        parts.append(f"env {_code(envvar)}")
    default = param.get_default(context, call=False)
    if default is _NO_DEFAULT:
        default = None
    if callable(default):
        parts.append("computed when run")
    elif isinstance(param, click.Option) and param.is_flag and not param.secondary_opts:
        if default:
            parts.append("on")
    elif isinstance(param, click.Option) and param.is_flag:  # --x/--no-x
        if default is not None:
            parts.append(_code(param.opts[0] if default else param.secondary_opts[0]))
    elif default is not None and default != () and default != "":
        values = default if isinstance(default, (list, tuple)) else [default]
        parts.append(", ".join(_code(str(value)) for value in values))
    return "; ".join(parts)


def _names(param: click.Parameter, context: click.Context) -> str:
    if isinstance(param, click.Argument):  # its name as the usage line shows it, less the brackets of optional
        return _code(param.make_metavar(context).strip("[]"))
    names = " / ".join(", ".join(opts) for opts in (param.opts, param.secondary_opts) if opts)
    if param.metavar:  # a name for the value (SECONDS, URL_OR_PATH); the type's own name is in the Takes column
        names += " " + param.metavar
    return _code(names)


def parameters_table(command: click.Command, context: click.Context) -> str:
    """A table of the command's arguments and options (hidden ones left out), in the order --help lists them."""
    rows = []
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        if isinstance(param, click.Argument):
            meaning = "Argument" + ("" if param.required else " (optional)") + "."
        else:
            meaning = param.help or ""
        rows.append((_names(param, context), type_text(param), default_text(param, context), meaning))
    if not rows:
        return ""
    lines = ["| Option | Takes | Default | What it does |", "| --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(_escape_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def usage_line(command: click.Command, context: click.Context) -> str:
    """The usage line --help prints, unwrapped (click wraps it to the terminal's width)."""
    return " ".join([context.command_path, *command.collect_usage_pieces(context)])


def command_section(path: str, command: click.Command, context: click.Context, level: int) -> str:
    parts = [f"{'#' * level} {_code(path)}", f"```text\n{usage_line(command, context)}\n```"]
    help_text = help_markdown(command.help)
    if help_text:
        parts.append(help_text)
    table = parameters_table(command, context)
    if table:
        parts.append(table)
    if isinstance(command, click.Group) and context.parent is not None:  # the program's own: the contents
        subcommands = [f"[{_code(p[len(path) + 1:])}](#{anchor(p)})"
                       for p, _, _ in walk(command, path, context.parent) if p.count(" ") == path.count(" ") + 1]
        parts.append("Commands: " + ", ".join(subcommands) + ".")
    return "\n\n".join(parts)


# -- docs/cli.md ----------------------------------------------------------------------------------------------------

def _topics(program: str, root: click.Command) -> list[tuple[str, list[str]]]:
    """(topic, names of the root's commands) for each topic with a command, unnamed commands under OTHER_TOPIC."""
    names = sorted(n for n, c in getattr(root, "commands", {}).items() if not c.hidden)
    topics = [(title, [n for n in members if n in names]) for title, members in TOPICS]
    named = {n for _, members in topics for n in members}
    topics.append((OTHER_TOPIC, [n for n in names if n not in named]))
    return [(title, members) for title, members in topics if members]


def cli_reference(programs=None) -> str:
    """The generated part of docs/cli.md: a table of contents, then a section for every command of every program
    (a group's section followed by its commands', one heading level deeper)."""
    programs = programs or default_programs()
    contents, sections = [], []
    for program, root in programs:
        commands = {path: (command, context) for path, command, context in walk(root, program)}
        root_command, root_context = commands[program]
        sections.append(command_section(program, root_command, root_context, 2))
        if not isinstance(root, click.Group):
            contents.append(f"- [{_code(program)}](#{anchor(program)})")
            continue
        contents.append(f"- [{_code(program)}](#{anchor(program)}): the program and its options")
        for title, names in _topics(program, root):
            sections.append(f"## {title}")
            links = []
            for name in names:
                path = f"{program} {name}"
                link = f"[{_code(name)}](#{anchor(path)})"
                below = [p for p in commands if p.startswith(path + " ")]
                if below:
                    link += " (" + ", ".join(f"[{_code(p[len(path) + 1:])}](#{anchor(p)})" for p in below) + ")"
                links.append(link)
                for sub_path in [path, *below]:
                    command, context = commands[sub_path]
                    level = 2 + sub_path[len(program):].count(" ")  # a command under its topic, a subcommand deeper
                    sections.append(command_section(sub_path, command, context, level))
            contents.append(f"  - [{title}](#{anchor(title)}): " + ", ".join(links))
    return "\n".join(contents) + "\n\n" + "\n\n".join(sections) + "\n"


# -- docs/views.md --------------------------------------------------------------------------------------------------

def registry_dictionary() -> tuple[list[dict], dict[str, str]]:
    """The data dictionary of a new, empty registry (DuckDB, in memory): each view with its comment and columns
    (name, type, comment) as `dsocr-registry schema` prints them, and each base table's comment."""
    from registry.store.db import Registry
    from registry.store.models import Base
    from registry.store.views import data_dictionary, table_comment

    registry = Registry("duckdb:///:memory:")
    try:
        registry.upgrade()
        with registry.begin() as conn:
            views = data_dictionary(conn)
    finally:
        registry.dispose()
    tables = {table.name: table_comment(table.name) or "" for table in Base.metadata.sorted_tables}
    return views, tables


def views_reference(views: list[dict] | None = None, tables: dict[str, str] | None = None) -> str:
    """The generated part of docs/views.md: a table of contents, each view (in the order they are created, a
    view reading only those before it) with its comment and a table of its columns, then the base tables."""
    if views is None or tables is None:
        views, tables = registry_dictionary()
    contents = [f"[{_code(v['view'])}](#{anchor(v['view'])})" for v in views] + ["[base tables](#base-tables)"]
    sections = []
    for view in views:
        lines = [f"## {_code(view['view'])}", "", _escape_text(view["comment"] or ""), "",
                 "| Column | Type | What it means |", "| --- | --- | --- |"]
        lines += [f"| {_code(c['column'])} | {_escape_cell(c['type'].upper())} | {_escape_cell(c['comment'] or '')} |"
                  for c in view["columns"]]
        sections.append("\n".join(lines))
    table_lines = ["## Base tables", "",
                   "The views above are the documented way to read these; a row of each table is:", "",
                   "| Table | What a row is |", "| --- | --- |"]
    table_lines += [f"| {_code(name)} | {_escape_cell(text)} |" for name, text in sorted(tables.items())]
    sections.append("\n".join(table_lines))
    return "Contents: " + ", ".join(contents) + ".\n\n" + "\n\n".join(sections) + "\n"

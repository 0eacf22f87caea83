"""docs/cli.md and docs/views.md are what registry/interfaces/reference.py generates from the code now, and
document every command and every view."""

import io
import re
import shutil

import click
import pytest

from registry.interfaces import reference
from tests.helpers import REPO

CLI_PAGE = REPO / "docs" / "cli.md"
VIEWS_PAGE = REPO / "docs" / "views.md"


def cog_check(path) -> tuple[bool, str]:
    """Whether the cog blocks of `path` hold what their code writes now, and what cog said."""
    import cogapp

    said = io.StringIO()
    cog = cogapp.Cog()
    cog.set_output(stdout=said, stderr=said)
    return cog.main(["cog", "--check", str(path)]) == 0, said.getvalue()


def assert_current(path) -> None:
    current, said = cog_check(path)
    page = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    assert current, (f"{page} is stale: the code it documents changed. Regenerate it with `cog -r {page}` "
                     f"(from the repository root) and commit the result.\n{said}")


def test_the_cli_reference_is_current():
    assert_current(CLI_PAGE)


def test_the_views_reference_is_current():
    assert_current(VIEWS_PAGE)


def test_the_check_reports_a_tampered_page_stale_and_names_the_command(tmp_path):
    page = tmp_path / "cli.md"
    shutil.copy(CLI_PAGE, page)
    text = page.read_text()
    generated = text.index("]]] -->")  # the edit lands inside the generated part, not in the cog code
    page.write_text(text[:generated] + text[generated:].replace("Print no summary.", "Print a summary.", 1))
    with pytest.raises(AssertionError, match=re.escape(f"stale: the code it documents changed. Regenerate it "
                                                       f"with `cog -r {page}`")):
        assert_current(page)
    import cogapp

    cog = cogapp.Cog()
    cog.set_output(stdout=io.StringIO(), stderr=io.StringIO())
    assert cog.main(["cog", "-r", str(page)]) == 0  # the command the message names makes the page current again
    assert_current(page)


def _toy_program(default_rows: int = 10) -> click.Group:
    @click.group()
    def tool():
        """A tool.

        \b
        first   line kept as written
        second  line
        """

    @tool.group("store")
    def store():
        """The store's commands."""

    @store.command("load")
    @click.argument("path", type=click.Path(exists=True, dir_okay=False))
    @click.option("--rows", type=click.IntRange(min=1), default=default_rows, show_default=True, help="Rows to read.")
    @click.option("--format", "fmt", type=click.Choice(["table", "csv"]), default="table", help="Output | format.")
    @click.option("--db", envvar="TOOL_DB", metavar="URL", help="Where <table> rows go.")
    @click.option("--name", required=True, help="A name.")
    @click.option("--color/--no-color", default=True, help="Colors.")
    def load(path, rows, fmt, db, name, color):
        """Load PATH into the store."""

    return tool


def test_a_changed_command_changes_the_cli_reference():
    text = reference.cli_reference([("tool", _toy_program())])
    assert "#### `tool store load`" in text and "### `tool store`" in text and "## `tool`" in text
    assert "```text\ntool store load [OPTIONS] PATH\n```" in text
    assert "```text\nfirst   line kept as written\nsecond  line\n```" in text
    assert "| `--rows` | integer (`x>=1`) | `10` | Rows to read. |" in text
    assert "| `--format` | one of `table`, `csv` | `table` | Output \\| format. |" in text
    assert "| `--db URL` | text | env `TOOL_DB` | Where &lt;table&gt; rows go. |" in text
    assert "| `--name` | text | required | A name. |" in text
    assert "| `--color / --no-color` | flag | `--color` | Colors. |" in text
    assert "| `PATH` | file that exists | required | Argument. |" in text
    assert "[`load`](#tool-store-load)" in text
    changed = reference.cli_reference([("tool", _toy_program(default_rows=20))])
    assert changed != text and "| `--rows` | integer (`x>=1`) | `20` | Rows to read. |" in changed


def test_a_changed_dictionary_changes_the_views_reference():
    views = [{"view": "v_a", "comment": "One row per a.", "columns": [
        {"column": "a_id", "type": "bigint", "comment": "Key of a."},
        {"column": "size_bytes", "type": "double", "comment": "Size | in bytes."}]}]
    tables = {"b": "One row per b.", "a": "One row per a."}
    text = reference.views_reference(views, tables)
    assert "## `v_a`\n\nOne row per a.\n\n| Column | Type | What it means |" in text
    assert "| `size_bytes` | DOUBLE | Size \\| in bytes. |" in text
    assert text.index("| `a` |") < text.index("| `b` |")
    views[0]["columns"][0]["comment"] = "Surrogate key of a."
    changed = reference.views_reference(views, tables)
    assert changed != text and "| `a_id` | BIGINT | Surrogate key of a. |" in changed


def test_the_reference_ignores_the_environment(monkeypatch):
    """A default read from the environment is documented as the variable's name, never as its value here."""
    text = reference.cli_reference()
    monkeypatch.setenv("DSOCR_REGISTRY_URL", "postgresql://somewhere/else")
    assert reference.cli_reference() == text


def _headings(path) -> list[str]:
    return re.findall(r"^#{2,6} `([^`]+)`$", path.read_text(), re.MULTILINE)


def test_every_command_has_a_section_in_the_cli_reference():
    documented = _headings(CLI_PAGE)
    paths = reference.command_paths()
    assert "dsocr-registry db upgrade" in paths and "python -m analyzer" in paths
    assert sorted(documented) == sorted(paths)
    assert len(documented) == len(set(documented))


def test_every_view_and_table_has_an_entry_in_the_views_reference():
    from registry.store.models import Base
    from registry.store.views import view_names

    assert _headings(VIEWS_PAGE) == view_names()
    text = VIEWS_PAGE.read_text()
    assert len(view_names()) == len(list((REPO / "queries" / "views").glob("*.sql")))
    assert [t.name for t in Base.metadata.sorted_tables if f"| `{t.name}` |" not in text] == []


def test_every_link_of_the_references_has_its_heading():
    for page in (CLI_PAGE, VIEWS_PAGE):
        text = page.read_text()
        anchors = {reference.anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}
        assert sorted({link for link in re.findall(r"\]\(#([^)]+)\)", text)} - anchors) == [], page.name

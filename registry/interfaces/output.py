"""How the command line shows rows: one table renderer (aligned text), CSV and JSON, and documents as JSON/YAML."""

from __future__ import annotations

import csv
import datetime
import decimal
import io
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs


@attrs.frozen
class Column:
    """A column of a table: the key of its values, the title shown, and the format of its numbers."""

    key: str
    title: str = ""
    number_format: str = "{:.6g}"  # floats; integers get thousands separators only where a format says so

    @property
    def heading(self) -> str:
        return self.title or self.key


def _columns(columns: Sequence[str | Column]) -> list[Column]:
    return [c if isinstance(c, Column) else Column(c) for c in columns]


def format_cell(value: Any, column: Column) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat(sep=" ") if isinstance(value, datetime.datetime) else value.isoformat()
    if isinstance(value, decimal.Decimal):
        if column.number_format == "{:.6g}":
            return str(value)  # PostgreSQL's exact numerics stay exact unless a column formats them
        value = float(value)
    if isinstance(value, float) or (isinstance(value, int) and column.number_format != "{:.6g}"):
        try:
            return column.number_format.format(value)
        except (ValueError, TypeError):
            return str(value)
    return str(value)


def plural(count: float, noun: str, spec: str = ",.0f") -> str:
    """'1 GPU', '2 GPUs', '1,024 pages': the count formatted with `spec`, the noun in the number it takes."""
    text = format(count, spec)
    return f"{text} {noun}" if text == "1" else f"{text} {noun}s"


def render_table(columns: Sequence[str | Column], rows: Sequence[Sequence[Any]], count: bool = True) -> str:
    """Aligned text: numbers to the right, text to the left, a rule under the headings, "-" for no value."""
    columns = _columns(columns)
    cells = [[format_cell(v, c) for v, c in zip(row, columns)] for row in rows]
    widths = [max([len(c.heading)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [bool(rows) and all(isinstance(row[i], (int, float, decimal.Decimal)) and not isinstance(row[i], bool)
                                  or row[i] is None for row in rows) for i in range(len(columns))]

    def line(values):
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    out = [line([c.heading for c in columns]), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    if count:
        out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def plain_value(value: Any) -> Any:
    """A database value as JSON has it."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


def render_rows(columns: Sequence[str | Column], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """Rows as `table`, `csv` (keys as headings, no value as an empty field) or `json` (a list of objects)."""
    columns = _columns(columns)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([c.key for c in columns])
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])
        return buffer.getvalue().rstrip("\n")
    if fmt == "json":
        return json.dumps([{c.key: plain_value(v) for c, v in zip(columns, row)} for row in rows], indent=1)
    return render_table(columns, rows)


TABLE_ROW_CAP = 10_000  # rows the table format holds to size its columns; csv and json print every row as it comes


def write_rows(columns: Sequence[str | Column], batches: Iterable[Sequence[Sequence[Any]]], fmt: str,
               write: Callable[[str], Any], limit: int | None = None, table_row_cap: int | None = None) -> int:
    """Rows as `render_rows` prints them (and a newline), written as their batches come: csv and json hold one
    batch at a time (json is still one list); the table holds at most `table_row_cap` rows (TABLE_ROW_CAP unless
    given), and says so in its last line when the query has more. At most `limit` rows: reading stops there.
    Returns the rows written."""
    columns = _columns(columns)
    table_row_cap = table_row_cap or TABLE_ROW_CAP
    bounds = [n for n in (limit, table_row_cap + 1 if fmt == "table" else None) if n is not None]
    bound = min(bounds) if bounds else None
    counted = 0

    def rows_within_bound():
        nonlocal counted
        for batch in batches:
            if bound is not None and counted + len(batch) >= bound:
                batch = batch[:bound - counted]
                counted += len(batch)
                yield batch
                return
            counted += len(batch)
            yield batch

    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([c.key for c in columns])
        for batch in rows_within_bound():
            for row in batch:
                writer.writerow(["" if v is None else v for v in row])
            write(buffer.getvalue())
            buffer.seek(0)
            buffer.truncate()
        write(buffer.getvalue())  # the heading of a query without rows
        return counted
    if fmt == "json":
        opening = "[\n"
        for batch in rows_within_bound():
            if batch:
                write(opening + ",\n".join(
                    " " + json.dumps({c.key: plain_value(v) for c, v in zip(columns, row)}, indent=1)
                    .replace("\n", "\n ") for row in batch))
                opening = ",\n"
        write("[]\n" if counted == 0 else "\n]\n")
        return counted
    held = [row for batch in rows_within_bound() for row in batch]
    if len(held) > table_row_cap:
        write(render_table(columns, held[:table_row_cap], count=False) +
              f"\n(first {plural(table_row_cap, 'row')} shown; the query has more: --format csv or json prints "
              f"every row, --limit N the first N)\n")
        return table_row_cap
    write(render_table(columns, held) + "\n")
    return len(held)


def render_document(data: Any, fmt: str) -> str:
    """A mapping as indented JSON or as YAML (keys in their order)."""
    import yaml

    if fmt == "json":
        return json.dumps(data, indent=1, default=str)
    return yaml.safe_dump(data, sort_keys=False, width=110).rstrip()

"""The published JSON Schema of `AnalyticModelReport`, generated from the attrs classes (never kept by hand).

Walks `attrs.fields` and the type hints: attrs classes -> objects with every field required and no others (as
the loader forbids extra keys), enums -> their values, tuples -> arrays, `X | None` -> anyOf X or null, counts
(the `_count` validator) -> integers >= 0, shares -> numbers in [0, 1]; field metadata "description" becomes the
field's description. What a schema cannot say (derived fields that agree with their counts, content-derived ids)
the loader checks.

    python -m analyzer.schema            # rewrite contracts/analytic-model-report.schema.json
    python -m analyzer.schema --check    # exit 1 when the committed file is not what the classes give
"""

from __future__ import annotations

import enum
import inspect
import json
import pathlib
import sys
import types
import typing
from typing import Any

import attrs

from analyzer import report as report_module
from analyzer.report import SCHEMA_VERSION, AnalyticModelReport

SCHEMA_PATH = pathlib.Path(__file__).resolve().parent.parent / "contracts" / "analytic-model-report.schema.json"


def _validators(validator) -> list:
    """A field's validators, with and_ / optional wrappers opened."""
    if validator is None:
        return []
    inner = getattr(validator, "_validators", None)  # attrs.validators.and_
    if inner is not None:
        return [found for each in inner for found in _validators(each)]
    wrapped = getattr(validator, "validator", None)  # attrs.validators.optional
    if wrapped is not None and not inspect.isfunction(validator):
        return [validator, *_validators(wrapped)]
    return [validator]


def _number_bounds(field: attrs.Attribute) -> dict[str, Any]:
    found = _validators(field.validator)
    bounds: dict[str, Any] = {}
    if any(f in (report_module._count, report_module._finite_nonneg, report_module._share) for f in found):
        bounds["minimum"] = 0
    if report_module._share in found:
        bounds["maximum"] = 1
    return bounds


class _Builder:
    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}

    def ref(self, cls: type) -> dict[str, Any]:
        name = cls.__name__
        if name not in self.defs:
            self.defs[name] = {}  # reserve the name: classes may refer to each other
            self.defs[name] = self.enum(cls) if issubclass(cls, enum.Enum) else self.record(cls)
        return {"$ref": f"#/$defs/{name}"}

    @staticmethod
    def enum(cls: type[enum.Enum]) -> dict[str, Any]:
        return {"type": "string", "enum": [member.value for member in cls]}

    def record(self, cls: type) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        properties = {}
        for field in attrs.fields(cls):
            hint = hints[field.name]
            if field.metadata.get("since_schema_version"):  # required in a file of the current version
                hint = next(a for a in typing.get_args(hint) if a is not type(None))
            schema = self.type_schema(hint, field)
            description = field.metadata.get("description")
            if description:
                schema = {**schema, "description": description}
            properties[field.name] = schema
        out: dict[str, Any] = {"type": "object"}
        doc = inspect.getdoc(cls)
        if doc and cls.__doc__:
            out["description"] = doc.split("\n\n")[0].replace("\n", " ")
        out.update(additionalProperties=False,
                   required=[f.name for f in attrs.fields(cls)
                             if f.default is attrs.NOTHING or f.metadata.get("since_schema_version")],
                   properties=properties)
        return out

    def type_schema(self, hint: Any, field: attrs.Attribute) -> dict[str, Any]:
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(hint) if a is not type(None)]
            if len(options) != 1:
                raise TypeError(f"{field.name}: only X | None unions are supported, got {hint}")
            return {"anyOf": [self.type_schema(options[0], field), {"type": "null"}]}
        if origin is tuple:
            args = typing.get_args(hint)
            if len(args) != 2 or args[1] is not Ellipsis:
                raise TypeError(f"{field.name}: only tuple[X, ...] is supported, got {hint}")
            return {"type": "array", "items": self.type_schema(args[0], field)}
        if isinstance(hint, type) and attrs.has(hint):
            return self.ref(hint)
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return self.ref(hint)
        if hint is bool:
            return {"type": "boolean"}
        if hint is int:
            return {"type": "integer", **_number_bounds(field)}
        if hint is float:
            return {"type": "number", **_number_bounds(field)}
        if hint is str:
            return {"type": "string"}
        raise TypeError(f"{field.name}: no JSON Schema for {hint!r}")


def report_json_schema() -> dict[str, Any]:
    """The JSON Schema of a report file of the current schema version."""
    builder = _Builder()
    builder.ref(AnalyticModelReport)
    root = builder.defs.pop(AnalyticModelReport.__name__)
    root["properties"]["schema_version"] = {**root["properties"]["schema_version"], "const": SCHEMA_VERSION}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "AnalyticModelReport",
        "description": (f"An AnalyticModelReport file (JSON or YAML) of schema_version {SCHEMA_VERSION}, generated "
                        "from the attrs classes in analyzer/report.py and analyzer/categories.py by "
                        "`python -m analyzer.schema`. Counts are exact integers; FLOPs are counts, not rates; "
                        "1 TB = 1e12 bytes."),
        **{k: value for k, value in root.items() if k != "description"},
        "$defs": dict(sorted(builder.defs.items())),
    }


def render() -> str:
    return json.dumps(report_json_schema(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    content = render()
    if args == ["--check"]:
        current = SCHEMA_PATH.read_text("utf-8") if SCHEMA_PATH.exists() else ""
        if current != content:
            print(f"{SCHEMA_PATH} is out of date: run python -m analyzer.schema", file=sys.stderr)
            return 1
        return 0
    if args:
        print("usage: python -m analyzer.schema [--check]", file=sys.stderr)
        return 2
    SCHEMA_PATH.write_text(content, "utf-8")
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A stored report read back from its normalized rows, checked against its content hash.

A report is rebuilt at the schema version it was stored with (reports.schema_version), with the execution it was
traced under (reports.execution; NULL, stored before revision 0006, is hf-eager) and its own category records
(reports.category_records; version-1 reports derive today's, as a version-1 file does), so reports of every
version reproduce their ids; the spec's derived fields are computed from the stored counts. The KV-cache bytes of
the operator rows (revision 0013) are read back for reports of schema version 4 on; older reports have none (NULL
rows, None fields): `kv_roles_known` says which a stored report is, and `kv_roles_refusal` is the one line for
pricing that needs them.
"""

from __future__ import annotations

import json
from collections import defaultdict

import sqlalchemy as sa

from analyzer.categories import CATEGORY_POSITION, CategoryId, OperatorCategory
from analyzer.errors import AnalyzerInputError
from analyzer.execution import EXECUTION_BEFORE_EXECUTIONS, Execution, parse_execution
from analyzer.report import (CONVERTER, KV_ROLES_SCHEMA_VERSION, OPERATOR_COUNT_FIELDS, OPERATOR_KV_FIELDS,
                             AnalyticModelReport, ModuleMetricsSnapshot, ModuleNode, OperatorMetrics,
                             RoutingAssumption, Stage, StageSummary, ViewKind, WorkloadRecord, compute_report_id,
                             matmul_weight_bytes_of, operator_categories)
from registry.store.db import Registry, RegistryError, ReportNotFoundError
from registry.store.ingest import stored_categories

_STAGE_ORDER = "CASE {c} WHEN 'vision' THEN 0 WHEN 'projector' THEN 1 WHEN 'prefill' THEN 2 ELSE 3 END"
_VIEW_ORDER = "CASE {c} WHEN 'global' THEN 0 WHEN 'tile' THEN 1 ELSE 2 END"


def _stored_execution(report_id: str, name: str | None) -> Execution:
    """The execution of a stored report: NULL (stored before revision 0006) is what reports were traced under
    then; a name this version does not know is refused in one line, never read as another execution."""
    if name is None:
        return EXECUTION_BEFORE_EXECUTIONS
    try:
        return parse_execution(name)
    except AnalyzerInputError as exc:
        raise RegistryError(f"report {report_id}: {exc}") from None


def load_stored_report(registry: Registry, report_id: str) -> AnalyticModelReport:
    with registry.begin() as conn:
        head = conn.execute(sa.text(
            "SELECT r.*, a.transformers_model, a.transformers_version, a.dtype, a.parameters, a.checkpoint_parameters, "
            "a.weight_bytes, a.kv_cache_bytes_per_token FROM reports r JOIN architectures a ON a.id = r.architecture_id "
            "WHERE r.report_id = :r"), {"r": report_id}).mappings().first()
        if head is None:
            raise ReportNotFoundError(f"no report {report_id!r} in the registry")
        workload = dict(conn.execute(sa.text("SELECT * FROM workloads WHERE id = :w"),
                                     {"w": head["workload_id"]}).mappings().one())
        modules = conn.execute(sa.text("SELECT * FROM modules WHERE architecture_id = :a ORDER BY id"),
                               {"a": head["architecture_id"]}).mappings().all()
        stages = conn.execute(sa.text(
            f"SELECT * FROM report_stages WHERE report_id = :r ORDER BY {_STAGE_ORDER.format(c='stage')}, "
            f"{_VIEW_ORDER.format(c='view_kind')}"), {"r": head["id"]}).mappings().all()
        metrics = conn.execute(sa.text(
            "SELECT mm.*, m.path FROM module_metrics mm JOIN modules m ON m.id = mm.module_id WHERE mm.report_id = :r"),
            {"r": head["id"]}).mappings().all()
        operators = conn.execute(sa.text(
            "SELECT o.*, c.name AS category FROM operator_metrics o JOIN operator_categories c ON c.id = o.category_id "
            "WHERE o.report_id = :r ORDER BY o.category_id"), {"r": head["id"]}).mappings().all()
        if head["category_records"] is not None:
            categories = tuple(CONVERTER.structure(record, OperatorCategory)
                               for record in json.loads(head["category_records"]))
        elif int(head["schema_version"]) == 1:
            categories = operator_categories()
        else:
            categories = stored_categories(registry, conn)
    children = defaultdict(list)
    for m in modules:
        if m["parent_path"] is not None:
            children[m["parent_path"]].append(m["path"])
    roles = int(head["schema_version"]) >= KV_ROLES_SCHEMA_VERSION
    op_counts = defaultdict(list)
    for o in operators:
        counts = {f: int(o[f]) for f in OPERATOR_COUNT_FIELDS}
        if roles:  # older reports have no KV split (NULL rows): their fields stay None
            counts.update((f, int(o[f])) for f in OPERATOR_KV_FIELDS)
        op_counts[(o["module_id"], o["stage"], o["view_kind"])].append((CategoryId(o["category"]), counts))
    ops = {}
    for key, entries in op_counts.items():
        entries.sort(key=lambda entry: CATEGORY_POSITION[entry[0]])  # a report's order, not the rows' ids
        own_flops = sum(counts["flops"] for _, counts in entries)
        ops[key] = [OperatorMetrics.from_counts(category, own_flops, **counts) for category, counts in entries]
    stage_rank = {(s["stage"], s["view_kind"]): i for i, s in enumerate(stages)}
    snapshots = sorted(metrics, key=lambda m: (stage_rank.get((m["stage"], m["view_kind"]), 99), m["path"]))
    stage_fields = [f for f in StageSummary.__attrs_attrs__ if f.name not in ("stage", "view_kind")]
    workload_fields = [f.name for f in WorkloadRecord.__attrs_attrs__]
    report = AnalyticModelReport(
        schema_version=int(head["schema_version"]), report_id=report_id, model_id=head["model_id"],
        variant=head["variant"], transformers_model=head["transformers_model"],
        analyzer_version=head["analyzer_version"], transformers_version=head["transformers_version"],
        torch_version=head["torch_version"], dtype=head["dtype"], parameters=int(head["parameters"]),
        checkpoint_parameters=int(head["checkpoint_parameters"]), parameters_note=head["parameters_note"],
        weight_bytes=int(head["weight_bytes"]), kv_cache_bytes_per_token=int(head["kv_cache_bytes_per_token"]),
        matmul_weight_bytes=int(head["matmul_weight_bytes"]) if roles else None,
        execution=_stored_execution(report_id, head["execution"]),
        routing=RoutingAssumption(experts=int(head["routing_experts"]),
                                  experts_per_token=int(head["routing_experts_per_token"]),
                                  shared_experts=int(head["routing_shared_experts"]),
                                  assumption=head["routing_assumption"],
                                  counting_implementation=head["routing_counting_implementation"]),
        workload=WorkloadRecord(**{f: workload[f] for f in workload_fields}),
        stages=tuple(StageSummary(stage=Stage(s["stage"]), view_kind=ViewKind(s["view_kind"]),
                                  **{f.name: (float(s[f.name]) if f.name == "distinct_experts_per_call"
                                              else int(s[f.name])) for f in stage_fields}) for s in stages),
        categories=categories,
        modules=tuple(ModuleNode(path=m["path"], name=m["name"], class_name=m["class_name"],
                                 parent_path=m["parent_path"], children=tuple(children.get(m["path"], ())),
                                 depth=int(m["depth"]), parameters=int(m["parameters"]),
                                 parameters_self=int(m["parameters_self"]), weight_bytes=int(m["weight_bytes"]),
                                 stages=tuple(Stage(x) for x in m["stages"].split(",") if x)) for m in modules),
        module_metrics=tuple(ModuleMetricsSnapshot(
            module_path=m["path"], stage=Stage(m["stage"]), view_kind=ViewKind(m["view_kind"]),
            forward_calls=int(m["forward_calls"]), operators=tuple(ops.get((m["module_id"], m["stage"],
                                                                            m["view_kind"]), ())),
            inclusive_flops=int(m["inclusive_flops"]), inclusive_bytes=int(m["inclusive_bytes"]),
            inclusive_kernel_launches=int(m["inclusive_kernel_launches"])) for m in snapshots),
        notes=tuple(head["notes"].split("\n")) if head["notes"] else ())
    if compute_report_id(report) != report_id:
        raise RegistryError(f"report {report_id}: the stored rows do not reproduce the report (content hash differs)")
    return report


def stored_report_count(registry: Registry) -> int:
    """How many reports the registry holds."""
    with registry.begin() as conn:
        return conn.execute(sa.text("SELECT COUNT(*) FROM reports")).scalar_one()


def report_is_stored(registry: Registry, report_id: str) -> bool:
    """Whether the registry holds the report with this content hash."""
    with registry.begin() as conn:
        return conn.execute(sa.text("SELECT COUNT(*) FROM reports WHERE report_id = :r"),
                            {"r": report_id}).scalar_one() > 0


def _report_row(conn, report_key: int | str):
    """(reports.id, report_id, schema_version, matmul_weight_bytes, architecture_id) of a stored report, by its
    primary key (reports.id, what the pricing views call report_pk) or its report_id."""
    column = "id" if isinstance(report_key, int) else "report_id"
    row = conn.execute(sa.text(f"SELECT id, report_id, schema_version, matmul_weight_bytes, architecture_id "
                               f"FROM reports WHERE {column} = :k"), {"k": report_key}).first()
    if row is None:
        raise ReportNotFoundError(f"no report {report_key!r} in the registry")
    return row


def kv_roles_known(conn, report_key: int | str) -> bool:
    """Whether a stored report's operator rows say which of their bytes are KV cache (kv_cache_bytes_read and
    kv_cache_bytes_written): reports of schema version 4 on. An older report's rows hold NULL there (unknown, not
    0), and its operator cost groups -1: price an fp8 KV cache only where this is true (`kv_roles_refusal`).
    `report_key`: reports.id (int) or the report_id (str)."""
    return int(_report_row(conn, report_key).schema_version) >= KV_ROLES_SCHEMA_VERSION


def kv_roles_refusal(conn, report_key: int | str) -> str | None:
    """None where the report's KV-cache bytes are known; else the one line that refuses pricing an fp8 KV cache."""
    row = _report_row(conn, report_key)
    if int(row.schema_version) >= KV_ROLES_SCHEMA_VERSION:
        return None
    return (f"report {row.report_id} was analyzed before the KV-cache bytes were counted (schema "
            f"{int(row.schema_version)}): re-analyze it to price an fp8 KV cache")


def matmul_weight_bytes(conn, report_key: int | str) -> int:
    """Bytes of the parameters matmul operators read as weights (linear layers, experts, lm_head): what fp8 weights
    halve in the memory fit. Recorded by reports of schema version 4 on (reports.matmul_weight_bytes); derived, to
    the byte, from the stored module tree for older ones (analyzer.report.matmul_weight_bytes_of)."""
    row = _report_row(conn, report_key)
    if row.matmul_weight_bytes is not None:
        return int(row.matmul_weight_bytes)
    modules = conn.execute(sa.text("SELECT path, parent_path, class_name, weight_bytes FROM modules "
                                   "WHERE architecture_id = :a"), {"a": row.architecture_id}).mappings().all()
    return matmul_weight_bytes_of(_TreeNode(m["path"], m["parent_path"], m["class_name"], int(m["weight_bytes"]))
                                  for m in modules)


class _TreeNode:
    __slots__ = ("path", "parent_path", "class_name", "weight_bytes")

    def __init__(self, path, parent_path, class_name, weight_bytes) -> None:
        self.path, self.parent_path, self.class_name, self.weight_bytes = path, parent_path, class_name, weight_bytes

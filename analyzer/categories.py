"""Operator categories and the mapping of aten ops and module classes onto them.

`TargetOperatorList` is the single place where an aten op or a module class is given a category, and the one
table (`CATEGORY_TABLE`) from which the published `OperatorCategory` records, with their `match_classes`, are
generated. Module rules win over op rules (a matmul inside an MoE router is routing work); a fused attention
region (scaled_dot_product_attention) is always `attention`, or `attention_masked` when it is given an explicit
mask or bias (which rules out the flash kernel).

`match_classes` notation: ``"aten.<op>"`` is an aten overload packet (``"aten.addmm"``); ``"module:*<Suffix>"``
takes every op issued inside a module whose class name ends with Suffix (``"module:*RMSNorm"``), except inside
rotary-embedding modules, whose ops keep their own categories.
"""

from __future__ import annotations

import enum

import attrs
from attrs import validators as v


class CategoryId(str, enum.Enum):
    MATMUL = "matmul"
    ATTENTION = "attention"
    ATTENTION_MASKED = "attention_masked"
    CONV = "conv"
    NORM = "norm"
    ELEMENTWISE = "elementwise"
    EMBEDDING = "embedding"
    MOE_ROUTING = "moe_routing"
    SOFTMAX_REDUCTION = "softmax_reduction"
    DATA_MOVEMENT = "data_movement"
    OTHER = "other"


# Each category's position in CategoryId: the order of a snapshot's operator rows in every report, and of the
# TargetOperatorList.
CATEGORY_POSITION = {category: position for position, category in enumerate(CategoryId)}

_C = CategoryId


@attrs.frozen(kw_only=True)
class CategoryDefinition:
    """One row of the category table: how the category is shown and which aten ops fall into it."""

    display_name: str
    description: str
    aten_ops: tuple[str, ...] = ()  # overload-packet names, without the "aten." prefix


# The one table: every category, its display name, description and aten ops (in category-id order).
CATEGORY_TABLE: dict[CategoryId, CategoryDefinition] = {
    _C.MATMUL: CategoryDefinition(
        display_name="Matrix multiply", description="dense matrix products (mm, addmm, bmm, baddbmm)",
        aten_ops=("mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "_scaled_mm", "addmv", "mv", "dot",
                  "_grouped_mm", "grouped_mm")),
    _C.ATTENTION: CategoryDefinition(
        display_name="Attention", description="fused scaled-dot-product attention kernels without an explicit "
                                              "mask (causal or full): the flash kernel",
        aten_ops=("scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
                  "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                  "_scaled_dot_product_flash_attention_for_cpu", "_flash_attention_forward",
                  "_efficient_attention_forward")),
    _C.ATTENTION_MASKED: CategoryDefinition(
        display_name="Attention with a mask or bias",
        description="scaled-dot-product attention given an explicit mask or additive bias (SAM's relative "
                    "positions, the OCR-2 encoder's mask): the flash kernel cannot take it, the bias is read"),
    _C.CONV: CategoryDefinition(
        display_name="Convolution", description="convolutions",
        aten_ops=("convolution", "_convolution", "conv2d", "cudnn_convolution", "_slow_conv2d_forward")),
    _C.NORM: CategoryDefinition(
        display_name="Normalization", description="LayerNorm / RMSNorm and every op inside norm modules",
        aten_ops=("native_layer_norm", "layer_norm", "rms_norm", "_fused_rms_norm", "native_group_norm",
                  "native_batch_norm")),
    _C.ELEMENTWISE: CategoryDefinition(
        display_name="Elementwise", description="activations and pointwise arithmetic",
        aten_ops=("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "neg", "pow", "rsqrt", "sqrt",
                  "exp", "log", "cos", "sin", "tanh", "sigmoid", "silu", "gelu", "relu", "erf", "abs",
                  "clamp", "clamp_min", "clamp_max", "where", "masked_fill", "masked_fill_", "bitwise_and",
                  "bitwise_or", "bitwise_not", "logical_and", "logical_or", "logical_not", "eq", "ne", "lt",
                  "le", "gt", "ge", "reciprocal", "floor", "ceil", "round", "remainder", "fmod", "minimum",
                  "maximum", "lerp", "addcmul", "rsub", "square", "floor_divide", "_to_copy_dtype")),
    _C.EMBEDDING: CategoryDefinition(
        display_name="Embedding", description="embedding lookups", aten_ops=("embedding", "embedding_bag")),
    _C.MOE_ROUTING: CategoryDefinition(
        display_name="MoE routing",
        description="MoE router: gate projection, softmax, top-k, dispatch bookkeeping",
        aten_ops=("one_hot", "histc", "bincount", "sort", "argsort", "nonzero")),
    _C.SOFTMAX_REDUCTION: CategoryDefinition(
        display_name="Softmax and reductions",
        description="softmax, sums, means, max/argmax, top-k outside the router",
        aten_ops=("_softmax", "softmax", "_safe_softmax", "log_softmax", "_log_softmax", "sum", "mean", "amax",
                  "amin", "max", "min", "argmax", "argmin", "topk", "cumsum", "var_mean", "var", "std", "prod",
                  "any", "all", "norm", "linalg_vector_norm")),
    _C.DATA_MOVEMENT: CategoryDefinition(
        display_name="Data movement",
        description="copies, concatenation, indexing, padding, resampling, fills; views and allocations (a host "
                    "call each, no kernel)",
        aten_ops=("cat", "stack", "clone", "copy_", "_to_copy", "contiguous", "index", "index_select", "gather",
                  "scatter", "scatter_", "scatter_add", "scatter_add_", "masked_scatter", "masked_scatter_",
                  "constant_pad_nd", "pad", "repeat", "repeat_interleave", "index_add", "index_add_",
                  "index_put", "index_put_", "index_copy", "slice_scatter", "select_scatter",
                  "upsample_linear1d", "upsample_bilinear2d", "upsample_bicubic2d", "_upsample_bicubic2d_aa",
                  "_upsample_bilinear2d_aa", "flip", "roll", "tril", "triu", "fill_", "fill", "zero_", "zeros",
                  "zeros_like", "ones", "ones_like", "full", "full_like", "new_zeros", "new_ones", "new_full",
                  "arange", "scalar_tensor", "empty_like_fill", "expand_copy", "unfold", "_unsafe_index",
                  "split_with_sizes_copy", "lift_fresh_copy", "alias_copy",
                  # views and allocations: a host call each, no kernel, no bytes
                  "view", "_unsafe_view", "_reshape_alias", "alias", "reshape", "unsqueeze", "squeeze", "t",
                  "transpose", "permute", "expand", "slice", "select", "narrow", "split", "split_with_sizes",
                  "unbind", "chunk", "as_strided", "diagonal", "view_as_real", "view_as_complex", "unflatten",
                  "empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "detach",
                  "lift_fresh")),
    _C.OTHER: CategoryDefinition(display_name="Other", description="ops not mapped to a category"),
}

# Module class-name suffixes -> category; applied to every op issued inside such a module.
_MODULE_RULES: tuple[tuple[str, CategoryId], ...] = (
    ("TopkRouter", _C.MOE_ROUTING),
    ("RMSNorm", _C.NORM),
    ("LayerNorm", _C.NORM),
    ("Embedding", _C.EMBEDDING),
)

ATEN_PREFIX = "aten."
MODULE_PREFIX = "module:*"


def _strings(instance, attribute, value):
    if not isinstance(value, tuple) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{attribute.name} must be a list of strings, got {value!r}")


def _text(instance, attribute, value):
    if not isinstance(value, str):
        raise ValueError(f"{attribute.name} must be a string, got {value!r}")


@attrs.frozen(kw_only=True)
class OperatorCategory:
    """An operator category as a report publishes it (the spec's record).

    `match_classes`: what falls into the category, module rules first (they win), then aten ops; see the
    module docstring for the notation. "other" matches nothing: it is what no rule maps.
    """

    category_id: CategoryId = attrs.field(validator=v.instance_of(CategoryId))
    display_name: str = attrs.field(validator=_text)
    description: str = attrs.field(validator=_text)
    match_classes: tuple[str, ...] = attrs.field(converter=tuple, validator=_strings, metadata={"description": (
        "what falls into the category: 'module:*<Suffix>' every op inside a module whose class name ends with "
        "Suffix (these rules win), 'aten.<op>' an aten operator")})


class TargetOperatorList:
    """Maps aten ops and module classes to a `CategoryId`, and publishes the categories it maps to.

    `category_for(op_name, module_classes)` takes the overload-packet name (e.g. ``"addmm"``) and the classes
    of the enclosing modules, innermost last.
    """

    def __init__(self) -> None:
        self.op_to_category: dict[str, CategoryId] = {}
        for category, definition in CATEGORY_TABLE.items():
            for name in definition.aten_ops:
                self.op_to_category[name] = category
        self.module_rules = _MODULE_RULES

    def module_category(self, module_class_name: str) -> CategoryId | None:
        for suffix, category in self.module_rules:
            if module_class_name.endswith(suffix):
                return category
        return None

    def category_for(self, op_name: str, module_class_names: tuple[str, ...] = ()) -> CategoryId:
        # Rotary "embeddings" compute cos/sin tables: their ops keep their own categories.
        for class_name in reversed(module_class_names):
            if "Rotary" in class_name:
                break
            category = self.module_category(class_name)
            if category is not None:
                return category
        return self.op_to_category.get(op_name, CategoryId.OTHER)

    def match_classes(self, category: CategoryId) -> tuple[str, ...]:
        """What falls into `category`, in the rules' own order: module rules (they win), then aten ops."""
        modules = tuple(MODULE_PREFIX + suffix for suffix, c in self.module_rules if c is category)
        ops = tuple(ATEN_PREFIX + name for name in CATEGORY_TABLE[category].aten_ops)
        return modules + ops

    def categories(self) -> tuple[OperatorCategory, ...]:
        """Every category as a published record, in category-id order."""
        return tuple(OperatorCategory(category_id=category, display_name=definition.display_name,
                                      description=definition.description,
                                      match_classes=self.match_classes(category))
                     for category, definition in CATEGORY_TABLE.items())


TARGET_OPERATORS = TargetOperatorList()

"""Operator categories and the mapping of aten ops and module classes onto them.

`TargetOperatorList` is the single place where an aten op or a module class is given a category.
Module rules win over op rules (a matmul inside an MoE router is routing work); a fused attention
region (scaled_dot_product_attention) is always `attention`.
"""

from __future__ import annotations

import enum


class OperatorCategory(str, enum.Enum):
    MATMUL = "matmul"
    ATTENTION = "attention"
    CONV = "conv"
    NORM = "norm"
    ELEMENTWISE = "elementwise"
    EMBEDDING = "embedding"
    MOE_ROUTING = "moe_routing"
    SOFTMAX_REDUCTION = "softmax_reduction"
    DATA_MOVEMENT = "data_movement"
    OTHER = "other"


_C = OperatorCategory

# aten overload-packet names (without the "aten." prefix) -> category.
_OPS_BY_CATEGORY: dict[OperatorCategory, tuple[str, ...]] = {
    _C.MATMUL: ("mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "_scaled_mm", "addmv", "mv", "dot",
                "_grouped_mm"),
    _C.ATTENTION: ("scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
                   "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                   "_scaled_dot_product_flash_attention_for_cpu", "_flash_attention_forward",
                   "_efficient_attention_forward"),
    _C.CONV: ("convolution", "_convolution", "conv2d", "cudnn_convolution", "_slow_conv2d_forward"),
    _C.NORM: ("native_layer_norm", "layer_norm", "rms_norm", "_fused_rms_norm", "native_group_norm",
              "native_batch_norm"),
    _C.ELEMENTWISE: ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "neg", "pow", "rsqrt", "sqrt",
                     "exp", "log", "cos", "sin", "tanh", "sigmoid", "silu", "gelu", "relu", "erf", "abs",
                     "clamp", "clamp_min", "clamp_max", "where", "masked_fill", "masked_fill_", "bitwise_and",
                     "bitwise_or", "bitwise_not", "logical_and", "logical_or", "logical_not", "eq", "ne", "lt",
                     "le", "gt", "ge", "reciprocal", "floor", "ceil", "round", "remainder", "fmod", "minimum",
                     "maximum", "lerp", "addcmul", "rsub", "square", "floor_divide", "_to_copy_dtype"),
    _C.EMBEDDING: ("embedding", "embedding_bag"),
    _C.MOE_ROUTING: ("one_hot", "histc", "bincount", "sort", "argsort", "nonzero"),
    _C.SOFTMAX_REDUCTION: ("_softmax", "softmax", "_safe_softmax", "log_softmax", "_log_softmax", "sum", "mean",
                           "amax", "amin", "max", "min", "argmax", "argmin", "topk", "cumsum", "var_mean", "var",
                           "std", "prod", "any", "all", "norm", "linalg_vector_norm"),
    _C.DATA_MOVEMENT: ("cat", "stack", "clone", "copy_", "_to_copy", "contiguous", "index", "index_select",
                       "gather", "scatter", "scatter_", "scatter_add", "scatter_add_", "masked_scatter",
                       "masked_scatter_", "constant_pad_nd", "pad", "repeat", "repeat_interleave", "index_add",
                       "index_add_", "index_put", "index_put_", "index_copy", "slice_scatter", "select_scatter",
                       "upsample_linear1d", "upsample_bilinear2d", "upsample_bicubic2d", "_upsample_bicubic2d_aa",
                       "_upsample_bilinear2d_aa", "flip", "roll", "tril", "triu", "fill_", "fill", "zero_",
                       "zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "new_zeros", "new_ones",
                       "new_full", "arange", "scalar_tensor", "empty_like_fill", "expand_copy", "unfold",
                       "_unsafe_index", "split_with_sizes_copy", "lift_fresh_copy", "alias_copy"),
}

# Module class-name suffixes -> category; applied to every op issued inside such a module.
_MODULE_RULES: tuple[tuple[str, OperatorCategory], ...] = (
    ("TopkRouter", _C.MOE_ROUTING),
    ("RMSNorm", _C.NORM),
    ("LayerNorm", _C.NORM),
    ("Embedding", _C.EMBEDDING),
)


class TargetOperatorList:
    """Maps aten ops and module classes to `OperatorCategory`.

    `category_for(op_name, module_classes)` takes the overload-packet name (e.g. ``"addmm"``) and the classes
    of the enclosing modules, innermost last.
    """

    def __init__(self) -> None:
        self.op_to_category: dict[str, OperatorCategory] = {}
        for category, names in _OPS_BY_CATEGORY.items():
            for name in names:
                self.op_to_category[name] = category
        self.module_rules = _MODULE_RULES

    def module_category(self, module_class_name: str) -> OperatorCategory | None:
        for suffix, category in self.module_rules:
            if module_class_name.endswith(suffix):
                return category
        return None

    def category_for(self, op_name: str, module_class_names: tuple[str, ...] = ()) -> OperatorCategory:
        # Rotary "embeddings" compute cos/sin tables: their ops keep their own categories.
        for class_name in reversed(module_class_names):
            if "Rotary" in class_name:
                break
            category = self.module_category(class_name)
            if category is not None:
                return category
        return self.op_to_category.get(op_name, OperatorCategory.OTHER)


TARGET_OPERATORS = TargetOperatorList()

"""Family adapters: which linears of a decoder block are lifted, how they group, where norms sit.

Data only: transformers' own modeling code runs the blocks. A *group* is a set of linears that
read the same input (q/k/v; gate/up) and therefore share one lifted transform, so a runtime
computes the lifted activation once for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedModelError


@dataclass(frozen=True)
class Group:
    name: str  # group key inside a block, e.g. "attn_in"
    linears: tuple[str, ...]  # module paths relative to the block
    input_norm: str | None = None  # norm whose output is the group's only input (s1 folds into it)
    fold_into_rows_of: str | None = None  # linear whose output rows feed this group elementwise


@dataclass(frozen=True)
class Family:
    model_types: tuple[str, ...]
    groups: tuple[Group, ...]
    layers_path: str = "model.layers"
    norm_offset: float = 0.0  # Gemma's RMSNorm scales by (1 + weight)

    @property
    def linears(self) -> tuple[str, ...]:
        return tuple(name for g in self.groups for name in g.linears)


_ATTN_IN = Group("attn_in", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "input_layernorm")
_ATTN_OUT = Group("attn_out", ("self_attn.o_proj",))
_MLP_OUT = Group("mlp_out", ("mlp.down_proj",), fold_into_rows_of="mlp.up_proj")

LLAMA_LIKE = Family(
    ("llama", "mistral", "qwen2", "qwen3"),
    (_ATTN_IN, _ATTN_OUT, Group("mlp_in", ("mlp.gate_proj", "mlp.up_proj"), "post_attention_layernorm"), _MLP_OUT),
)
GEMMA = Family(
    ("gemma2", "gemma3_text"),
    (_ATTN_IN, _ATTN_OUT, Group("mlp_in", ("mlp.gate_proj", "mlp.up_proj"), "pre_feedforward_layernorm"), _MLP_OUT),
    norm_offset=1.0,
)

FAMILIES = (LLAMA_LIKE, GEMMA)
SUPPORTED = tuple(t for f in FAMILIES for t in f.model_types)


def family_for(model_type: str) -> Family:
    for f in FAMILIES:
        if model_type in f.model_types:
            return f
    hint = ""
    if model_type == "gemma3":
        hint = " (a multimodal Gemma 3 checkpoint: use its text-only model, model_type gemma3_text)"
    raise UnsupportedModelError(
        f"model_type {model_type!r} is not supported{hint}; supported: {', '.join(SUPPORTED)}"
    )

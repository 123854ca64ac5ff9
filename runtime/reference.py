"""Reference execution of the IR in torch: the semantics every export is checked against.

The decoder itself is transformers' own modeling code for the family (built from the IR's
config, with the IR's kept tensors); each quantized linear is replaced by a module that runs the
decode math of spec/container.md (LiftLinear) or the integer baseline (RTNLinearModule).
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..errors import FormatError
from ..ir import LiftedLinear, QuantizedModel, RTNLinear, unpack_codes
from ..transform import fused_factors, lift_with_factors


class LiftLinear(nn.Module):
    """y = s * (Q u) + bias with u = L X~ R (float32; Q held as +-1 floats)."""

    def __init__(self, lin: LiftedLinear, tf, dtype=torch.float32):
        super().__init__()
        L, R = fused_factors(tf.M, tf.a, tf.b, tf.n1, tf.n2, torch.float32)
        self.in_features, self.out_features = tf.in_features, lin.out_features
        self.n1, self.n2 = tf.n1, tf.n2
        self.register_buffer("L", L.to(dtype))
        self.register_buffer("R", R.to(dtype))
        self.register_buffer("s1", None if tf.s1 is None else tf.s1.to(dtype))
        q = unpack_codes(lin.codes, tf.lifted).to(dtype) * 2 - 1
        self.register_buffer("Q", q)
        self.register_buffer("scales", lin.scales.to(dtype))
        self.register_buffer("bias", None if lin.bias is None else lin.bias.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = x.dtype
        u = lift_with_factors(x.to(self.L.dtype), self.L, self.R, self.s1, self.in_features, self.n1, self.n2)
        y = torch.matmul(u, self.Q.T) * self.scales
        if self.bias is not None:
            y = y + self.bias
        return y.to(dt)


class RTNLinearModule(nn.Module):
    def __init__(self, lin: RTNLinear):
        super().__init__()
        self.register_buffer("weight", lin.weight())
        self.register_buffer("bias", lin.bias)

    def forward(self, x):
        return nn.functional.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


def build_tokenizer(ir: QuantizedModel):
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as d:
        for name, data in ir.tokenizer.items():
            if "/" in name or name.startswith("."):
                raise FormatError(f"tokenizer file name {name!r} is not a plain file name")
            Path(d, name).write_bytes(data)
        return AutoTokenizer.from_pretrained(d)


def build_model(ir: QuantizedModel, device: str | torch.device = "cpu", dtype=torch.float32, lifted=None):
    """A transformers causal LM that executes the IR (kept tensors + quantized linears).

    ``lifted(name, lin, tf) -> nn.Module`` replaces LiftLinear for the lifted layers (e.g. trainable
    modules for distillation); the module is moved to ``device`` with the rest."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..models.families import family_for

    family_for(ir.model_type)
    cfg_dict = copy.deepcopy(ir.config)
    cfg_dict.pop("quantization_config", None)
    model_type = cfg_dict.pop("model_type")
    cfg = AutoConfig.for_model(model_type, **cfg_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    for name in ir.linears:  # placeholders: the quantized modules are attached once weights are real
        model.get_submodule(name)  # raises if the IR names a module the family does not have
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, nn.Identity())
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    need = set(model.state_dict().keys())
    missing = [k for k in need if k not in ir.kept and not (tied and k == "lm_head.weight")]
    if missing:
        raise FormatError(f"model tensors missing: {sorted(missing)[:5]}")
    model.to_empty(device="cpu")
    for mod in model.modules():
        model._init_weights(mod)  # non-persistent buffers (rotary tables, embedding scale)
    state = {k: ir.kept[k] for k in need if k in ir.kept}
    if tied and "lm_head.weight" not in state:
        state["lm_head.weight"] = ir.kept["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True)
    for name, lin in ir.linears.items():
        parent_name, _, child = name.rpartition(".")
        if isinstance(lin, LiftedLinear):
            tf = ir.transforms.get(lin.transform)
            if tf is None:
                raise FormatError(f"{name}: transform {lin.transform!r} missing")
            mod = LiftLinear(lin, tf) if lifted is None else lifted(name, lin, tf)
        else:
            mod = RTNLinearModule(lin)
        setattr(model.get_submodule(parent_name), child, mod)
    if tied:
        model.tie_weights()
    return model.to(device=device).eval()

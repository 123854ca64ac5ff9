"""Round-to-nearest baseline: asymmetric min-max integer quantization per group of input channels."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..ir import RTNLinear


def rtn_quantize(W: torch.Tensor, bits: int, group: int, bias: torch.Tensor | None = None) -> RTNLinear:
    if bits not in (2, 3, 4, 8):
        raise ConfigError(f"--method rtn --bits {bits}: expected 2, 3, 4 or 8")
    if group < 1:
        raise ConfigError(f"--group {group}: must be >= 1")
    OC, IC = W.shape
    ng = -(-IC // group)
    Wp = torch.nn.functional.pad(W.float(), (0, ng * group - IC), value=float("nan")).view(OC, ng, group)
    lo = torch.nan_to_num(Wp, nan=float("inf")).amin(-1)
    hi = torch.nan_to_num(Wp, nan=float("-inf")).amax(-1)
    levels = (1 << bits) - 1
    scale = ((hi - lo) / levels).clamp_min(1e-12)
    g = torch.arange(IC) // group
    q = torch.round((W.float() - lo[:, g]) / scale[:, g]).clamp(0, levels).to(torch.uint8)
    h = lambda t: t.float().half().float()  # noqa: E731  (stored as float16)
    return RTNLinear(bits, group, IC, OC, q, h(scale), h(lo), None if bias is None else h(bias))


def rtn_storage_bits(lin: RTNLinear) -> int:
    """Codes + an fp16 scale and fp16 zero per group (+ fp16 bias)."""
    ng = lin.scale.shape[1]
    b = lin.out_features * lin.in_features * lin.bits + lin.out_features * ng * 32
    if lin.bias is not None:
        b += lin.out_features * 16
    return b

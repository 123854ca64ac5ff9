"""The IR: one in-memory representation of a quantized model that every format writes and reads.

Plain data (dataclasses of tensors, ints and strings), versioned together with spec/container.md.
``runtime/reference.py`` executes it; that execution is the semantics every export is checked
against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .transform import choose_shape  # noqa: F401  (re-exported for formats)

IR_VERSION = 1
#: Each row of packed codes is padded to a multiple of this many bits.
ROW_ALIGN_BITS = 8


@dataclass
class LiftTransform:
    """The lifted transform shared by the linears of one group (see liftexport.transform)."""

    D: int
    d: int
    in_features: int
    n1: int
    n2: int
    M: torch.Tensor  # float32 [d, D]
    a: torch.Tensor  # float32 [n1]
    b: torch.Tensor  # float32 [n2 // d]
    s1: torch.Tensor | None = None  # float32 [n1 * n2] or None (= ones)
    mix: str = "dct2"

    @property
    def n(self) -> int:
        return self.n1 * self.n2

    @property
    def chunks(self) -> int:
        return self.n // self.d

    @property
    def lifted(self) -> int:
        """K: length of the lifted activation, (n/d)*D."""
        return self.chunks * self.D

    @property
    def bits(self) -> float:
        return self.D / self.d


@dataclass
class LiftedLinear:
    """y = scales * (Q u) + bias, u = the transform's lifted activation, Q in {+-1}."""

    transform: str  # key into QuantizedModel.transforms
    out_features: int
    codes: torch.Tensor  # uint8 [out_features, row_bytes]; bit k of row r: byte k//8, bit k%8 (LSB first)
    scales: torch.Tensor  # float32 [out_features]
    bias: torch.Tensor | None = None  # float32 [out_features]


@dataclass
class RTNLinear:
    """Asymmetric min-max integer quantization per group of ``group`` input channels (a baseline)."""

    bits: int
    group: int
    in_features: int
    out_features: int
    q: torch.Tensor  # uint8 [out, in] integer codes in [0, 2^bits)
    scale: torch.Tensor  # float32 [out, n_groups]
    zero: torch.Tensor  # float32 [out, n_groups] (the group minimum)
    bias: torch.Tensor | None = None

    def weight(self) -> torch.Tensor:
        g = torch.arange(self.in_features) // self.group
        return self.q.float() * self.scale[:, g] + self.zero[:, g]


@dataclass
class QuantizedModel:
    config: dict  # the HF config (config.to_dict())
    tokenizer: dict[str, bytes]  # files as save_pretrained writes them
    transforms: dict[str, LiftTransform] = field(default_factory=dict)
    linears: dict[str, LiftedLinear | RTNLinear] = field(default_factory=dict)  # key: module path
    kept: dict[str, torch.Tensor] = field(default_factory=dict)  # non-quantized tensors by HF name
    meta: dict = field(default_factory=dict)

    @property
    def model_type(self) -> str:
        return self.config["model_type"]


def row_bytes(k_bits: int) -> int:
    return -(-k_bits // ROW_ALIGN_BITS) * ROW_ALIGN_BITS // 8


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """bool [rows, K] -> uint8 [rows, row_bytes(K)], LSB-first, zero padding bits."""
    rows, K = codes.shape
    nb = row_bytes(K)
    padded = torch.zeros(rows, nb * 8, dtype=torch.uint8, device=codes.device)
    padded[:, :K] = codes.to(torch.uint8)
    w = (1 << torch.arange(8, dtype=torch.int32, device=codes.device)).to(torch.uint8)
    return (padded.view(rows, nb, 8) * w).sum(-1, dtype=torch.int32).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, K: int) -> torch.Tensor:
    """uint8 [rows, row_bytes] -> bool [rows, K]."""
    bits = (packed[..., None] >> torch.arange(8, dtype=torch.uint8, device=packed.device)) & 1
    return bits.reshape(packed.shape[0], -1)[:, :K].bool()

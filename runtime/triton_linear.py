"""A group of lifted linears (sharing one transform) executed by the Triton kernels.

``TritonLiftGroup`` holds the group's transform factors and the codes of all its linears
concatenated along the output dimension (q/k/v become one GEMV), in the K-major word layout the
kernels read. ``forward(x)`` returns one output per linear.

Up to 4 tokens with float32 activations, or with ``DECODE_ROUTE`` "table": transform straight to
4-bit tables -> split-K table GEMV + reduction (fp32 throughout). Up to 4 tokens of fp16/bf16 on a GPU
with the CUDA library built (the decode default): transform + 16 bit planes per 256 values in one CUDA
kernel (lift_planes) -> binary-tensor-core GEMV (kernels/cuda/binary_gemv.cu). Otherwise (more tokens, prefill, no library):
transform -> u in bit-plane order in the activation dtype ->
``gemm_planes`` (codes decoded to +-1 in registers, tensor cores; IEEE dots for float32; split-K when
the output tiles alone would not fill the GPU, ``planes_split``). RMSNorm or
SwiGLU before the transform and the residual add after the GEMV are fused on both routes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..ir import LiftedLinear, LiftTransform
from ..kernels import cuda_binary as CB
from ..kernels.triton import lift_linear as K
from ..transform import fused_factors

#: token counts up to this can take the table route (gemv_lut_split's limit)
TABLE_MAX_TOKENS = 4
#: gemm_planes launch settings: (token tile, wide output) -> settings; best of bench/gpu_gemv.py --sweep
#: on the H100 (8192x8192 and 28672x8192, M = 1 and 16).
PLANES_CFG = {(16, False): dict(BN=64, BM=16, BKW=16, num_warps=4, num_stages=4),
              (16, True): dict(BN=128, BM=16, BKW=16, num_warps=4, num_stages=4),
              (64, False): dict(BN=64, BM=64, BKW=16, num_warps=4, num_stages=3),
              (64, True): dict(BN=128, BM=64, BKW=16, num_warps=8, num_stages=3)}
WIDE_N = 16384
#: fp16/bf16 activations with at most BINARY_MAX_TOKENS tokens: "binary" (the binary-tensor-core GEMV of
#: kernels/cuda/binary_gemv.cu when its library is built, the GPU is sm_80+ and N % 4 == 0; otherwise
#: "planes"), "planes", or "table" (4-bit tables, split-K table GEMV; slower on the H100: 57 vs 50 us on
#: 8192x8192, 182 vs 99 us on 28672x8192, bench/gpu_gemv.py --sweep).
DECODE_ROUTE = "binary"
BINARY_MAX_TOKENS = 4
#: k-steps (256 lifted values) per block of the fused transform + planes kernel (kernels/cuda/binary_gemv.cu);
#: 1 is fastest in a decode step (7B shape, 24/10: 140.9 us of kernels per layer vs 144.4 with 2 and 155.0
#: with 4, bench/gpu_decode_profile.py --lift-spc, bench/results/lift_threads/)
LIFT_SPC = 1
TABLE_CFG = dict(SW=32, BN=64, num_warps=4)


def planes_cfg(M: int, N: int) -> dict:
    return PLANES_CFG[(16 if M <= 16 else 64, N >= WIDE_N)]


def planes_split(M: int, N: int, KW: int, sms: int) -> int:
    """Split-K for gemm_planes: about two programs per SM when the output tiles alone are fewer
    (bench/gpu_splitk_probe.py on the H100: 4096x4096 29.0 -> 19.5 us at 4 splits, 8192x8192 50.6 -> 45.3
    and 8192x28672 153 -> 127 at 2, 28672x8192 best unsplit), never below one BKW tile per split."""
    cfg = planes_cfg(M, N)
    tiles = -(-N // cfg["BN"]) * -(-M // cfg["BM"])
    return max(1, min((2 * sms) // tiles, KW // cfg["BKW"]))


class TritonLiftGroup(nn.Module):
    def __init__(self, lins: list[LiftedLinear], tf: LiftTransform, device="cuda"):
        super().__init__()
        if not lins:
            raise ValueError("TritonLiftGroup needs at least one linear")
        L, R = fused_factors(tf.M, tf.a, tf.b, tf.n1, tf.n2, torch.float64)
        self.in_features, self.n1, self.n2, self.K = tf.in_features, tf.n1, tf.n2, tf.lifted
        self.KW = -(-self.K // 32)
        self.splits = [lin.out_features for lin in lins]
        self.N = sum(self.splits)
        self.fused_tables = R.shape[1] % K.GROUP == 0
        inv = torch.ones(tf.n, dtype=torch.float64) if tf.s1 is None else 1.0 / tf.s1.double()
        dev = torch.device(device)
        self.register_buffer("L", L.float().to(dev))
        self.register_buffer("R", R.float().to(dev))
        self.register_buffer("R4", K.table_factor(R).float().to(dev) if self.fused_tables else None)
        self.register_buffer("inv_s1", inv.float().to(dev))
        self.register_buffer("words", torch.cat([K.kmajor_words(lin.codes.to(dev), self.K) for lin in lins], 1))
        self.register_buffer("scales", torch.cat([lin.scales.float() for lin in lins]).to(dev))
        has_bias = any(lin.bias is not None for lin in lins)
        bias = None
        if has_bias:
            bias = torch.cat([lin.bias.float() if lin.bias is not None else torch.zeros(lin.out_features)
                              for lin in lins]).to(dev)
        self.register_buffer("bias", bias)
        self._ws: dict = {}
        self._lift_fits: bool | None = None  # whether the fused transform + planes kernel takes this input
        # True once a binary-route call has waited for everything queued before it (so the kernels that
        # wrote L, R, inv_s1 and the code words are complete): later launches may read them before their
        # PDL wait
        self._weights_settled = False

    def _apply(self, fn, *args, **kwargs):  # .to()/.half()/...: the buffers are new tensors
        self._weights_settled = False
        return super()._apply(fn, *args, **kwargs)

    @staticmethod
    def _sms(device) -> int:
        """Streaming multiprocessors of a CUDA device (4 for the CPU interpreter)."""
        device = torch.device(device)
        return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4

    def _workspace(self, key, shape, dtype, device):
        """Buffers reused across calls (static addresses for CUDA graphs); tables start zeroed."""
        k = (key, shape, dtype, str(device))
        buf = self._ws.get(k)
        if buf is None:
            buf = torch.zeros(shape, dtype=dtype, device=device)
            self._ws[k] = buf
        return buf

    def _tables(self, x2, M, rms=None, glu=False):
        """The 4-bit tables of the lifted activation of x2 (float32 [M, KW * 128], zero past the last group)."""
        tabs = self._workspace("tabs", (M, self.KW * 128), torch.float32, x2.device)
        if self.fused_tables:
            K.transform(x2, self.inv_s1, self.L, self.R4, self.in_features, tabs[:, : self.n1 * self.R4.shape[1]],
                        rms=rms, glu=glu)
        else:
            u = self._workspace("u", (M, self.K), torch.float32, x2.device)
            K.transform(x2, self.inv_s1, self.L, self.R, self.in_features, u, rms=rms, glu=glu)
            K.tables(u, self.K, tabs)
        return tabs

    def lifted(self, x2: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        u = torch.empty(x2.shape[0], self.n1 * self.R.shape[1], dtype=dtype, device=x2.device)
        return K.transform(x2, self.inv_s1, self.L, self.R, self.in_features, u)

    def forward(self, x: torch.Tensor, rms=None, glu: bool = False, residual: torch.Tensor | None = None,
                split: bool = True):
        """Outputs of the group's linears for x [..., in_features] (split=False: one concatenated output).

        rms=(weight, eps): RMSNorm x first; glu: x is [..., 2 * in_features] = [gate | up] and the
        input is SiLU(gate) * up; residual: added to the (single) output. All fused into the kernels."""
        lead = x.shape[:-1]
        width = 2 * self.in_features if glu else self.in_features
        x2 = x.reshape(-1, width)
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        M = x2.shape[0]
        res2 = None
        if residual is not None:
            if len(self.splits) != 1:
                raise ValueError("residual applies to a group with one linear")
            res2 = residual.reshape(M, self.N)
        y = torch.empty(M, self.N, dtype=x.dtype, device=x.device)
        route = self.route(x, M)
        if route == "binary":
            zf = self._ws.get(("binary", M, str(x.device)))
            if zf is None:
                zf = self._ws[("binary", M, str(x.device))] = CB.workspace(M, self.K, x.device)
            if self._lift_fits is None:
                self._lift_fits = CB.lift_fits(self.n1, self.n2, self.R.shape[1], LIFT_SPC, x.device)
            if self._lift_fits:  # transform + planes in one CUDA launch
                CB.lift_planes(x2, self.in_features, self.inv_s1, self.L, self.R, zf, rms=rms, glu=glu,
                               spc=LIFT_SPC, static_weights=self._weights_settled)
            else:
                u = self._workspace("u", (M, self.n1 * self.R.shape[1]), torch.float32, x.device)
                K.transform(x2, self.inv_s1, self.L, self.R, self.in_features, u, rms=rms, glu=glu)
                CB.planes(u, self.K, zf)
            CB.gemv(self.words, zf, self.scales, self.bias, y, residual=res2, static_weights=self._weights_settled)
            self._weights_settled = True
        elif route == "table":
            tabs = self._tables(x2, M, rms, glu)
            S = -(-self.KW // TABLE_CFG["SW"])
            part = self._workspace("part", (S * M * self.N,), torch.float32, x.device)
            K.gemv_lut_split(tabs, self.words, self.scales, self.bias, y, residual=res2, part=part, **TABLE_CFG)
        else:
            shape = (M, self.KW * 32)
            u = (self._workspace("planes", shape, x.dtype, x.device) if M <= 16
                 else torch.zeros(shape, dtype=x.dtype, device=x.device))
            K.transform(x2, self.inv_s1, self.L, self.R, self.in_features, u, planes=True, rms=rms, glu=glu)
            ks = planes_split(M, self.N, self.KW, self._sms(x.device))
            part = self._workspace("planes_part", (ks * M * self.N,), torch.float32, x.device) if ks > 1 else None
            K.gemm_planes(u, self.words, self.scales, self.bias, y, residual=res2, split_k=ks, part=part,
                          **planes_cfg(M, self.N))
        return self._split(y, lead, split)

    def route(self, x: torch.Tensor, M: int) -> str:
        """The decode route for M tokens of x's dtype and device: "table", "binary" or "planes"."""
        if M <= TABLE_MAX_TOKENS and (x.dtype == torch.float32 or DECODE_ROUTE == "table"):
            return "table"
        if (DECODE_ROUTE == "binary" and M <= BINARY_MAX_TOKENS and self.N % 4 == 0
                and CB.available(x.device)):
            return "binary"
        return "planes"

    def _split(self, y, lead, split):
        if not split:
            return (y.reshape(*lead, self.N),)
        return tuple(o.reshape(*lead, o.shape[-1]) for o in y.split(self.splits, dim=-1))


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim in float32 math, returned in x's dtype."""
    return (F.rms_norm(x.float(), (x.shape[-1],), eps=eps) * w.float()).to(x.dtype)


def torch_prologue(x: torch.Tensor, rms=None, glu: bool = False, in_features: int | None = None) -> torch.Tensor:
    """The input transformations the kernels fuse, in torch: RMSNorm (float32 math) or SiLU(gate) * up."""
    if rms is not None:
        x = rms_norm(x, *rms)
    if glu:
        g, u = x.float().split(in_features, dim=-1)
        x = (F.silu(g) * u).to(x.dtype)
    return x

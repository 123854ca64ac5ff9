"""The binary route's planes format and arithmetic, specified in torch (kernels/cuda_binary.py's
planes_reference / gemv_reference), against float64 on the CPU. The GPU test checks the CUDA kernels
bit-exactly against the same specification."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from collections import Counter

import pytest
import torch

from liftexport.errors import LiftExportError
from liftexport.kernels import cuda_binary as CB
from liftexport.kernels.triton import lift_linear as K


def _case(M, Kl, N, seed):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(M, Kl, generator=g) * torch.logspace(-2, 1, Kl)
    codes = torch.randint(0, 256, (N, -(-Kl // 8)), dtype=torch.uint8, generator=g)
    return u, K.kmajor_words(codes, Kl), torch.rand(N, generator=g) + 0.1, torch.randn(N, generator=g)


def test_planes_round_trip_and_product_match_float64():
    for M, Kl, N in ((1, 1, 4), (2, 300, 12), (3, 1000, 36), (1, 9840, 8)):
        u, words, scales, bias = _case(M, Kl, N, seed=Kl)
        u[0, : min(Kl, 256)] = 0.0  # an all-zero k-step
        zf = CB.planes_reference(u, Kl)
        assert zf.shape == (M, CB.steps(Kl), 33, 4) and not zf[:, :, 32, 2:].any()
        y = CB.gemv_reference(words, zf, Kl, scales, bias)
        q = K.kmajor_bits(words, Kl).double() * 2 - 1
        ref = (u.double() @ q) * scales.double() + bias.double()
        err = float((y - ref).abs().max() / ref.abs().max())
        assert err < 2e-4, (M, Kl, err)


def test_planes_encode_twos_complement_per_step():
    u = torch.zeros(1, 512)
    u[0, 0], u[0, 1], u[0, 300] = 1.0, -0.5, -3.0  # step 0: max 1; step 1: max 3
    zf = CB.planes_reference(u, 512)
    zs = zf[0, :, 32, 0].view(torch.float32)
    assert torch.allclose(zs, torch.tensor([1.0, 3.0]) / CB.QMAX)
    # value 1 (index 0: word 0, bit 0) is +QMAX = 0x7FFF: planes 0..14 set, plane 15 (sign) clear
    lane0 = zf[0, 0, 0]  # g = 0, t = 0: planes 0 and 8, word 0
    assert lane0[0] & 1 == 1 and lane0[2] & 1 == 1
    lane28 = zf[0, 0, 28]  # g = 7, t = 0: planes 7 and 15, word 0
    assert lane28[0] & 1 == 1 and lane28[2] & 1 == 0
    # value -0.5 (index 1: word 0, bit 1) is round(-0.5 * QMAX) = -16384 = 0xC000: planes 14, 15 set only
    assert (lane28[2] >> 1) & 1 == 1 and (zf[0, 0, 24][2] >> 1) & 1 == 1 and (lane0[0] >> 1) & 1 == 0
    assert zf[0, 1, 32, 1].view(torch.float32) == zs[1] * -CB.QMAX


def _wavefronts(G: int, shift: int) -> int:
    """Shared-memory wavefronts of one warp load: 32 / G consecutive outputs, each in G parts `shift` words
    apart (equal addresses broadcast; distinct ones in one bank serialise)."""
    addrs = {(lane % G) * shift + lane // G for lane in range(32)}
    return max(Counter(a % 32 for a in addrs).values())


@pytest.mark.skipif(CB.load() is None, reason="needs build/cuda/libliftquant_cuda.so (built by install.sh with nvcc)")
def test_lift_split_mappings_take_the_fewer_wavefronts():
    """The library's host rule for the lift's split sums against an independent model of the banks: blocked
    parts exactly where they need fewer wavefronts than interleaved ones; the 7B shapes at 24/10."""
    assert CB.lift_mappings(367, 30, 72) == (0b1110, 0)  # 11008 wide: L X 4-way at G = 4 interleaved, none blocked
    assert CB.lift_mappings(82, 50, 120) == (0, 0)  # 4096 wide: 2-way either way
    rng = random.Random(0)
    shapes = [(rng.randint(1, 400), rng.randint(1, 130), rng.randint(1, 330)) for _ in range(60)]
    for n1, n2, C in shapes:
        want_lx = want_wr = 0
        for b in range(1, 6):
            G = 1 << b
            want_lx |= (_wavefronts(G, math.ceil(n1 / G) * n2) < _wavefronts(G, n2)) << b
            want_wr |= (_wavefronts(G, math.ceil(n2 / G) * C) < _wavefronts(G, C)) << b
        assert CB.lift_mappings(n1, n2, C) == (want_lx, want_wr), (n1, n2, C)
    with pytest.raises(LiftExportError):
        CB.lift_mappings(0, 30, 72)


CARVEOUT_VALUES = [(None, 100), ("100", 100), ("-1", -1), ("0", 0), ("57", 57), ("101", 100), ("-2", 100),
                   ("abc", 100), ("12abc", 100), ("", 100)]


@pytest.mark.skipif(CB.load() is None, reason="needs build/cuda/libliftquant_cuda.so (built by install.sh with nvcc)")
def test_smem_carveout_setting():
    """LIFTEXPORT_SMEM_CARVEOUT as the library reads it, once per process (so each value in a fresh one): an
    integer in [-1, 100], else the default 100; the decode attention's one-sequence kernel asks for the same."""
    code = ("from liftexport.kernels import cuda_binary as CB; from liftexport.kernels.triton import "
            "decode_attention as DA; print(CB.smem_carveout(), DA._carveout_pct())")
    for value, want in CARVEOUT_VALUES:
        env = {k: v for k, v in os.environ.items() if k != "LIFTEXPORT_SMEM_CARVEOUT"}
        if value is not None:
            env["LIFTEXPORT_SMEM_CARVEOUT"] = value
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.split() == [str(want), str(want)], (value, out.stdout, out.stderr[-500:])

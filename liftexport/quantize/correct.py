"""Intra-block correction: after the search, train the block's lifted layers to reproduce the
full-precision block output on calibration data (method doc section 4.3).

Trainable per group: the mapping matrix M (the group's own copy), log a, log b (s2 = a (x) b),
log |s1| (signs fixed); per layer: log row scales and latent lifted values whose sign is the code
(straight-through estimator). Adam with cosine decay, MSE of the block output.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..ir import LiftTransform
from .lift import dequantize


class GroupParams(nn.Module):
    def __init__(self, tf: LiftTransform, device):
        super().__init__()
        self.tf = tf
        self.M = nn.Parameter(tf.M.clone().to(device))
        self.log_a = nn.Parameter(tf.a.log().to(device))
        self.log_b = nn.Parameter(tf.b.log().to(device))
        s1 = tf.s1 if tf.s1 is not None else torch.ones(tf.n)
        self.register_buffer("s1_sign", torch.sign(s1).to(device))
        self.log_s1 = nn.Parameter(s1.abs().log().to(device))

    def s1(self):
        return self.s1_sign * self.log_s1.exp()

    def export(self) -> LiftTransform:
        tf = self.tf
        return LiftTransform(D=tf.D, d=tf.d, in_features=tf.in_features, n1=tf.n1, n2=tf.n2,
                             M=self.M.detach().float().cpu(), a=self.log_a.detach().exp().float().cpu(),
                             b=self.log_b.detach().exp().float().cpu(), s1=self.s1().detach().float().cpu())


class LiftFakeQuant(nn.Module):
    """A lifted linear during correction: the weight is decoded from sign(latent) every forward."""

    def __init__(self, group: GroupParams, latent: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.group = group
        self.latent = nn.Parameter(latent.clone())
        self.log_scale = nn.Parameter(scale.abs().clamp_min(1e-12).log())
        self.register_buffer("scale_sign", torch.sign(scale) + (scale == 0).float())
        self.register_buffer("bias", None if bias is None else bias.clone())
        self.frozen: torch.Tensor | None = None

    def codes(self) -> torch.Tensor:
        return self.latent.detach() >= 0

    def scale(self):
        return self.scale_sign * self.log_scale.exp()

    def weight(self) -> torch.Tensor:
        lat = self.latent
        q = torch.where(lat >= 0, 1.0, -1.0)
        q = lat + (q - lat).detach()  # straight-through
        g = self.group
        return dequantize(g.tf, q, self.scale(), M=g.M, a=g.log_a.exp(), b=g.log_b.exp(), s1=g.s1())

    def freeze(self):
        with torch.no_grad():
            self.frozen = self.weight().detach()

    def forward(self, x):
        W = self.frozen if self.frozen is not None else self.weight()
        return nn.functional.linear(x, W.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


def adam_cosine(params: list[dict], steps: int):
    """Adam over parameter groups with the learning rates decayed to 0 on a cosine over ``steps``."""
    opt = torch.optim.Adam(params)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)))


def run_block(block, X: torch.Tensor, kwargs: dict, batch: int) -> torch.Tensor:
    outs = []
    for i in range(0, X.shape[0], batch):
        o = block(X[i : i + batch], **kwargs)
        outs.append((o[0] if isinstance(o, tuple) else o))
    return torch.cat(outs)


def correct_block(block, fakes: list[LiftFakeQuant], groups: list[GroupParams], X: torch.Tensor,
                  Y: torch.Tensor, kwargs: dict, steps: int, batch: int, seed: int,
                  lr_latent: float = 1e-3, lr_transform: float = 5e-4, lr_scale: float = 1e-3) -> dict:
    """Adam over the lifted parameters of one block; returns loss before/after (relative MSE)."""
    if steps <= 0:
        return {}
    params = [
        {"params": [f.latent for f in fakes], "lr": lr_latent},
        {"params": [p for g in groups for p in (g.M, g.log_a, g.log_b, g.log_s1)], "lr": lr_transform},
        {"params": [f.log_scale for f in fakes], "lr": lr_scale},
    ]
    opt, sched = adam_cosine(params, steps)
    gen = torch.Generator().manual_seed(seed)
    denom = Y.pow(2).mean().clamp_min(1e-20)
    for t in range(steps):
        idx = torch.randint(0, X.shape[0], (batch,), generator=gen)
        out = block(X[idx], **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        loss = (out - Y[idx]).pow(2).mean() / denom
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return {}

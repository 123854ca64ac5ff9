"""End-to-end distillation: the pass after the block-by-block quantization.

The quantized model's continuous parameters are tuned so that its next-token distribution matches
the full-precision model's on the calibration tokens: KL(teacher || student) at every position,
Adam with cosine decay, codes fixed. Tuned: every lifted linear's row scales and the decoder's norm
weights; with ``transforms=True`` also each group's s2 (a, b) and mapping matrix M. Block-wise
correction only sees one block's output; this pass sees what the errors of all blocks do to the
logits. It works on the IR in place, so what it tunes is exactly what every export stores (scales
and transforms rounded to the container's float16 afterwards, norms to the kept dtype).

A sixteenth of the calibration sequences (at least one) is held out of training; the KL on them
before and after is reported.
"""

from __future__ import annotations

import os
import time

import torch
from torch import nn
from tqdm import tqdm

from ..errors import ConfigError
from ..ir import LiftedLinear, QuantizedModel, unpack_codes
from .correct import GroupParams, LiftFakeQuant, adam_cosine
from .lift import dequantize


def default_steps(device) -> int:
    """100 on CUDA (50, 100 and 200 measured within 0.3% of each other on the example model, 800 over-fit
    the calibration sequences; with a larger pool, --distill-tokens, 400 beat 100 by 0.7%: bench/RESULTS.md),
    40 on the CPU (one sequence per step there)."""
    return 100 if torch.device(device).type == "cuda" else 40


def default_batch(device) -> int:
    """Sequences per step."""
    return 4 if torch.device(device).type == "cuda" else 1


def param_estimate(config: dict) -> int:
    """Parameter count of a decoder from its HF config (embeddings, attention, MLP; norms ignored)."""
    h, L, V = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    nh = config["num_attention_heads"]
    nkv = config.get("num_key_value_heads") or nh
    hd = config.get("head_dim") or h // nh
    per_layer = h * hd * 2 * (nh + nkv) + 3 * h * config["intermediate_size"]
    return L * per_layer + V * h * (1 if config.get("tie_word_embeddings") else 2)


def memory_needed(config: dict, batch: int, seq_len: int, transforms: bool = False) -> int:
    """Bytes: fp32 teacher, the student's weights (unscaled, decoded once; with ``transforms`` its +-1
    codes in float32 instead, up to 4 per weight at 3 bits, and a decoded copy per step), activations
    of one step, and two [batch, seq, vocab] logits (+ their softmax copies). The student's
    gradients and Adam state (scales, norms, transforms) are small."""
    p = param_estimate(config)
    act = batch * seq_len * config["num_hidden_layers"] * config["hidden_size"] * 4 * 24
    logits = batch * seq_len * config["vocab_size"] * 4 * 6
    return (3 + (5 if transforms else 0)) * 4 * p + act + logits


def memory_available(device) -> int:
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def check_fits(config: dict, batch: int, seq_len: int, device, transforms: bool = False) -> str | None:
    """None if distillation fits in the device's free memory, else why not."""
    need, have = memory_needed(config, batch, seq_len, transforms), memory_available(device)
    if need <= have:
        return None
    return (f"end-to-end distillation needs about {need / 2**30:.1f} GiB on {torch.device(device).type} "
            f"(teacher + student in float32), {have / 2**30:.1f} GiB free")


class _Tuned(nn.Module):
    """A lifted linear with fixed codes: W = scale * base, base decoded once (its +-1 codes then
    dropped), or W decoded every forward when the group's transform trains."""

    def __init__(self, fq: LiftFakeQuant, cache_base: bool):
        super().__init__()
        self.fq = fq
        base = None
        if cache_base:
            g = fq.group
            with torch.no_grad():
                base = dequantize(g.tf, fq.latent, torch.ones_like(fq.log_scale), M=g.M, a=g.log_a.exp(),
                                  b=g.log_b.exp(), s1=g.s1())
            fq.latent = None
        self.register_buffer("base", base)

    def forward(self, x):
        if self.base is None:
            W = self.fq.weight()
        else:
            W = self.base * self.fq.scale()[:, None]
        b = self.fq.bias
        return nn.functional.linear(x, W.to(x.dtype), None if b is None else b.to(x.dtype))


def _kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(teacher || student)."""
    s = student_logits.float().log_softmax(-1)
    t = teacher_logits.float().log_softmax(-1)
    return (t.exp() * (t - s)).sum(-1).mean()


@torch.no_grad()
def _held_out_kl(student, teacher, ids: torch.Tensor, device) -> float:
    total = 0.0
    for i in range(ids.shape[0]):
        x = ids[i : i + 1].to(device)
        total += float(_kl(student(input_ids=x).logits, teacher(input_ids=x).logits))
    return total / ids.shape[0]


def _is_norm(name: str) -> bool:
    return "norm" in name.rsplit(".", 2)[-2] if "." in name else False


def distill(ir: QuantizedModel, teacher, tokens: torch.Tensor, steps: int, batch: int, lr: float, seed: int,
            device, transforms: bool = False, progress: bool = True) -> dict:
    """Tune ``ir`` in place against ``teacher`` (a causal LM on ``device``); returns a summary."""
    from ..runtime.reference import build_model
    from .pipeline import _r16

    if steps <= 0:
        return {"steps": 0}
    if tokens.shape[0] < 2:
        raise ConfigError("end-to-end distillation needs at least 2 calibration sequences (one is held out)")
    t0 = time.time()
    device = torch.device(device)
    n_hold = max(1, tokens.shape[0] // 16)
    train, hold = tokens[:-n_hold], tokens[-n_hold:]
    groups = {key: GroupParams(tf, "cpu") for key, tf in ir.transforms.items()}
    tuned: dict[str, _Tuned] = {}

    def lifted(name, lin, tf):
        q = unpack_codes(lin.codes, tf.lifted).float() * 2 - 1
        fq = LiftFakeQuant(groups[lin.transform], q, lin.scales.float(), None if lin.bias is None else lin.bias.float())
        tuned[name] = _Tuned(fq, cache_base=not transforms)
        return tuned[name]

    student = build_model(ir, device, lifted=lifted)
    if not tuned:
        return {"steps": 0}
    student.requires_grad_(False)
    norms = {n: p for n, p in student.named_parameters() if _is_norm(n) and n in ir.kept}
    params = [{"params": [t.fq.log_scale for t in tuned.values()] + list(norms.values()), "lr": lr}]
    if transforms:
        params.append({"params": [p for g in groups.values() for p in (g.M, g.log_a, g.log_b)], "lr": lr / 2})
    for group in params:
        for p in group["params"]:
            p.requires_grad_(True)
    teacher.eval()
    kl_before = _held_out_kl(student, teacher, hold, device)
    opt, sched = adam_cosine(params, steps)
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc="end-to-end distillation", disable=not progress)
    for _ in bar:
        ids = train[torch.randint(0, train.shape[0], (batch,), generator=gen)].to(device)
        with torch.no_grad():
            t_logits = teacher(input_ids=ids).logits
        loss = _kl(student(input_ids=ids).logits, t_logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(kl=f"{float(loss.detach()):.4f}")
    kl_after = _held_out_kl(student, teacher, hold, device)
    with torch.no_grad():
        for name, t in tuned.items():
            ir.linears[name].scales = _r16(t.fq.scale())
        if transforms:
            for key, g in groups.items():
                tf = ir.transforms[key]
                tf.M, tf.a, tf.b = _r16(g.M), _r16(g.log_a.exp()), _r16(g.log_b.exp())
        for n, p in norms.items():
            ir.kept[n] = p.detach().cpu().to(ir.kept[n].dtype)
    return {"steps": steps, "batch": batch, "lr": lr, "transforms": transforms, "pool_tokens": int(tokens.numel()),
            "held_out_sequences": n_hold, "held_out_kl_before": round(kl_before, 5),
            "held_out_kl_after": round(kl_after, 5), "seconds": round(time.time() - t0, 1)}

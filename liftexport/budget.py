"""Fit a memory budget: byte sizes, the runtime reserve, per-group sensitivities and the (D, d) allocation.

The unit of allocation is a *group* (the linears of one block that share an input and so one lifted
transform, e.g. q/k/v). For every group and every candidate lattice the artifact's bytes are known
exactly (codes, scales, bias, transform tensors as the container stores them); the quality cost is
predicted as ``sensitivity[group] * mse(lattice) / NOISE_MSE`` where the sensitivity is measured on
calibration data: the full-precision model's second-order loss increase when the group's weights get
noise of relative variance NOISE_MSE, with the empirical Fisher (squared per-sequence gradients) as
the Hessian's diagonal. A Lagrangian sweep over the trade-off price picks one lattice per group so that the
predicted artifact bytes stay under the budget, then a greedy pass spends what is left.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from tqdm import tqdm

from .errors import ConfigError
from .ir import row_bytes
from .lattice.config import LatticeConfig
from .lattice.menu import load_shipped, shipped_configs
from .transform import choose_shape

UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
NOISE_MSE = 0.05  # relative weight-noise variance used to measure sensitivities (≈ the 2.4-bit level)
LP_BYTES = 2  # scales, bias and transform tensors are stored as float16
HEADER_MARGIN = 4 << 10  # bytes kept free for the error of the header estimate


def parse_size(text: str | int) -> int:
    """'24GiB', '1.5 GB', '300MB', '4096' (bytes) -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = (m.group(2) if m else "").upper() or "B"
    if not m or unit not in UNITS:
        raise ConfigError(f"size {text!r}: expected a number with a unit among {', '.join(UNITS)} (e.g. 24GiB)")
    return int(float(m.group(1)) * UNITS[unit])


def fmt_size(n: float) -> str:
    for u, v in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= v:
            return f"{n / v:.2f} {u}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class GroupShape:
    key: str  # "model.layers.{i}.{group}": the IR's transform key
    in_features: int
    outs: tuple[int, ...]
    biases: tuple[bool, ...]
    keeps_s1: bool  # s1 cannot be folded into a norm or feeding rows
    linears: tuple[str, ...] = ()  # module paths of the group's linears

    @property
    def weights(self) -> int:
        return self.in_features * sum(self.outs)


def group_bytes(g: GroupShape, cfg: LatticeConfig) -> int:
    """Bytes the container stores for this group at ``cfg`` (codes, scales, bias, M, a, b, s1)."""
    n1, n2 = choose_shape(g.in_features, cfg.d)
    rb = row_bytes(n1 * n2 // cfg.d * cfg.D)
    lin = sum(o * rb + LP_BYTES * o * (2 if b else 1) for o, b in zip(g.outs, g.biases))
    tf = LP_BYTES * (cfg.d * cfg.D + n1 + n2 // cfg.d + (n1 * n2 if g.keeps_s1 else 0))
    return lin + tf


def group_shapes(src) -> list[GroupShape]:
    fam = src.family
    names = set(src.names())
    out = []
    for i in range(src.num_layers):
        prefix = f"{fam.layers_path}.{i}."
        for g in fam.groups:
            shapes = [tuple(src.tensor(prefix + n + ".weight").shape) for n in g.linears]
            out.append(GroupShape(key=prefix + g.name, in_features=shapes[0][1], outs=tuple(s[0] for s in shapes),
                                  biases=tuple(prefix + n + ".bias" in names for n in g.linears),
                                  keeps_s1=g.input_norm is None and g.fold_into_rows_of is None,
                                  linears=tuple(prefix + n for n in g.linears)))
    return out


def fixed_bytes(src, shapes: list[GroupShape]) -> tuple[int, int]:
    """(kept tensors + tokenizer files, header estimate): everything but the lifted groups' data.

    The header (safetensors JSON: one entry and one SHA-256 line per tensor, plus the config and quant
    metadata) is estimated from the tensor names; measured within 0.2% on real containers.
    """
    import json

    lifted = {f"{n}.{w}" for g in shapes for n in g.linears for w in ("weight", "bias")}
    tied = getattr(src.config, "tie_word_embeddings", False)
    esize = torch.tensor([], dtype=src.kept_dtype).element_size()
    kept = [n for n in src.names() if n not in lifted and not (tied and n == "lm_head.weight")]
    data = sum(math.prod(src.tensor(n).shape) * esize for n in kept)
    toks = src.tokenizer_files()
    names = [f"kept.{n}" for n in kept] + [f"tokenizer.{f}" for f in toks]
    quant = sum(len(n) + 12 for n in kept) + sum(len(f) + 4 for f in toks)
    for g in shapes:
        names += [f"tf.{g.key}.{t}" for t in ("M", "a", "b") + (("s1",) if g.keeps_s1 else ())]
        quant += len(g.key) + 110
        for lin, b in zip(g.linears, g.biases):
            names += [f"lin.{lin}.{t}" for t in ("codes", "scales") + (("bias",) if b else ())]
            quant += len(lin) + len(g.key) + 90
    header = 2 * sum(len(n) for n in names) + 153 * len(names) + quant
    header += len(json.dumps(src.config.to_dict(), sort_keys=True)) + 1024
    return data + sum(len(v) for v in toks.values()), header


def reserve_auto(config, context: int, batch: int) -> tuple[int, str]:
    """Runtime memory beside the weights: fp16 KV cache plus prefill activations and logits (fp32)."""
    c = config
    layers = c.num_hidden_layers
    heads = c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    kv = 2 * layers * kv_heads * head_dim * context * batch * 2
    act = batch * context * (3 * c.hidden_size + 2 * c.intermediate_size) * 4 + batch * c.vocab_size * 4
    return kv + act, (f"KV cache {fmt_size(kv)} (fp16, context {context}, batch {batch}) + activations "
                      f"{fmt_size(act)} = {fmt_size(kv + act)}")


def lifted_room(target_bytes: int, fixed_data: int, header: int) -> int:
    """Bytes left for the lifted groups; the header is estimated, not built, so keep a margin."""
    return target_bytes - fixed_data - header - HEADER_MARGIN - header // 100


def candidate_configs(max_pad: int = 16) -> list[LatticeConfig]:
    """Shipped lattices whose search stays affordable (2^(D-d) <= 2^max_pad candidates per chunk)."""
    return [c for c in shipped_configs() if c.pad <= max_pad and load_shipped(c).mse is not None]


def measure_sensitivity(model, shapes: list[GroupShape], tokens: torch.Tensor, device,
                        progress: bool = True) -> dict[str, float]:
    """Predicted loss increase per group under relative weight noise of variance NOISE_MSE.

    Second order with the empirical Fisher as the Hessian's diagonal (one backward pass per
    calibration sequence, all groups at once): dL ~ 1/2 * NOISE_MSE * sum_ij F_ij * var(row i of W).
    """
    model = model.to(device).eval()
    mods = {g.key: [model.get_submodule(n) for n in g.linears] for g in shapes}
    params = [m.weight for ms in mods.values() for m in ms]
    fisher = {id(p): torch.zeros_like(p, dtype=torch.float32) for p in params}
    req = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    try:
        for ids in tqdm(tokens.to(device), desc="sensitivity", disable=not progress):
            model.zero_grad(set_to_none=True)
            model(input_ids=ids[None], labels=ids[None]).loss.backward()
            for p in params:
                fisher[id(p)] += p.grad.float().pow(2)
    finally:
        for p, r in zip(model.parameters(), req):
            p.requires_grad_(r)
            p.grad = None
    n = tokens.shape[0]
    return {key: max(sum(0.5 * NOISE_MSE * float((fisher[id(m.weight)] / n * m.weight.detach().float().var(
        dim=1, keepdim=True)).sum()) for m in ms), 1e-30) for key, ms in mods.items()}


def allocate(shapes: list[GroupShape], sens: dict[str, float], target: int,
             menu: list[LatticeConfig]) -> dict[str, LatticeConfig]:
    """One lattice per group minimising sum(sens * mse) subject to sum(group bytes) <= target."""
    mse = {c: load_shipped(c).mse for c in menu}
    opts = [[(group_bytes(g, c), sens[g.key] * mse[c] / NOISE_MSE, c) for c in menu] for g in shapes]
    smallest = sum(min(o[0] for o in row) for row in opts)
    if smallest > target:
        raise ConfigError(f"budget too small: even the smallest lattice everywhere needs {fmt_size(smallest)} "
                          f"for the quantized layers, {fmt_size(target)} are left for them")

    def pick(lam):
        return [min(row, key=lambda o: (o[1] + lam * o[0], o[0])) for row in opts]

    lo, hi = 0.0, 1.0
    while sum(o[0] for o in pick(hi)) > target:
        hi *= 4
    if sum(o[0] for o in pick(lo)) <= target:
        hi = lo
    for _ in range(100):
        mid = (lo + hi) / 2
        if sum(o[0] for o in pick(mid)) > target:
            lo = mid
        else:
            hi = mid
    choice = pick(hi)
    left = target - sum(o[0] for o in choice)
    while True:  # spend what is left on the best error-per-byte upgrades that still fit
        best = None
        for k, row in enumerate(opts):
            cur = choice[k]
            for o in row:
                extra = o[0] - cur[0]
                if 0 < extra <= left and o[1] < cur[1]:
                    gain = (cur[1] - o[1]) / extra
                    if best is None or gain > best[0]:
                        best = (gain, k, o)
        if best is None:
            break
        _, k, o = best
        left -= o[0] - choice[k][0]
        choice[k] = o
    return {g.key: o[2] for g, o in zip(shapes, choice)}


def mean_bits(shapes: list[GroupShape], alloc: dict[str, LatticeConfig]) -> float:
    w = sum(g.weights for g in shapes)
    return sum(g.weights * alloc[g.key].bits for g in shapes) / w


def plan_allocation(src, *, target_bytes: int | None = None, match: LatticeConfig | None = None,
                    calib_text=(), seed: int = 0, device: str = "cpu", max_pad: int = 16,
                    calib_tokens: int | None = None, calib_seq_len: int = 512, progress: bool = True,
                    sens: dict[str, float] | None = None) -> dict:
    """Choose a lattice per group so the artifact fits ``target_bytes`` (or the size of the uniform
    ``match`` lattice). Returns the plan: allocation (key -> "D/d"), predicted bytes, per-group rows."""
    from .calibrate import self_generated, text_windows

    shapes = group_shapes(src)
    fixed_data, header = fixed_bytes(src, shapes)
    fixed = fixed_data + header
    menu = candidate_configs(max_pad)
    if match is not None:
        target_bytes = fixed + sum(group_bytes(g, match) for g in shapes)
    if target_bytes is None:
        raise ConfigError("a budget needs a size (--budget) or a uniform rate to match (--bits X --mixed)")
    if sens is None:  # measured unless the caller re-uses an earlier plan's ("groups"[*]["sensitivity"])
        # 16 sequences of 256 tokens, never more than the calibration set itself
        sens_seq_len = min(256, calib_seq_len)
        sens_seqs = min(16, max(1, (calib_tokens or 1 << 30) // calib_seq_len))
        model = src.full_model()
        if calib_text:
            tokens = text_windows(src.tokenizer, calib_text, sens_seqs, sens_seq_len, seed)
        else:
            tokens = self_generated(model.to(device), src.tokenizer, sens_seqs, sens_seq_len, seed, device=device,
                                    progress=progress)
        sens = measure_sensitivity(model, shapes, tokens, device, progress=progress)
        model.to("cpu")
    alloc = allocate(shapes, sens, lifted_room(target_bytes, fixed_data, header), menu)
    lifted = sum(group_bytes(g, alloc[g.key]) for g in shapes)
    return {
        "target_bytes": int(target_bytes), "predicted_bytes": int(fixed + lifted), "fixed_bytes": int(fixed),
        "mean_bits": round(mean_bits(shapes, alloc), 5), "menu": [c.name for c in menu],
        "allocation": {g.key: alloc[g.key].name for g in shapes},
        "groups": [{"group": g.key, "config": alloc[g.key].name, "bits": round(alloc[g.key].bits, 4),
                    "weights": g.weights, "bytes": group_bytes(g, alloc[g.key]), "sensitivity": sens[g.key]}
                   for g in shapes],
    }


def plan_table(plan: dict) -> str:
    """Human summary: how many groups and weights got each lattice, and the predicted size."""
    by: dict[str, list[int]] = {}
    for r in plan["groups"]:
        e = by.setdefault(r["config"], [0, 0, 0])
        e[0] += 1
        e[1] += r["weights"]
        e[2] += r["bytes"]
    tot = sum(e[1] for e in by.values())
    lines = [f"{'lattice':>8} {'bits':>6} {'groups':>7} {'weights':>8} {'bytes':>12}"]
    for name in sorted(by, key=lambda n: LatticeConfig.parse(n).bits):
        e = by[name]
        lines.append(f"{name:>8} {LatticeConfig.parse(name).bits:>6.3f} {e[0]:>7} {e[1] / tot:>7.1%} {e[2]:>12,}")
    lines.append(f"mean {plan['mean_bits']:.3f} bits/weight; predicted artifact {plan['predicted_bytes']:,} B "
                 f"({fmt_size(plan['predicted_bytes'])}) for a target of {plan['target_bytes']:,} B")
    return "\n".join(lines)

"""The block-by-block quantization pipeline: source model -> IR (QuantizedModel).

load -> calibrate -> for each decoder block: capture inputs, fp target, input statistics,
whiten + lifted search per group, intra-block correction, fold s1 where exact, propagate the
quantized block's output to the next block -> IR -> end-to-end distillation of the IR's row scales
and norms against the original model (distill.py; it needs both models in memory, so it is skipped
when they do not fit). The block pass materialises only one block's weights at a time (an HF
directory is streamed shard by shard); the calibration activations stay resident.
A finished block is checkpointed so a killed run resumes where it stopped (checkpoint.py).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from ..errors import ConfigError
from ..ir import LiftedLinear, QuantizedModel, pack_codes
from ..lattice.config import LatticeConfig
from ..lattice.menu import load_shipped, select_config
from ..models.load import ModelSource
from . import distill as e2e
from .correct import GroupParams, LiftFakeQuant, correct_block, run_block
from .lift import ALPHA, DAMP, dequantize, quantize_group
from .rtn import rtn_quantize


@dataclass
class QuantizeOptions:
    method: str = "liftquant"  # liftquant | rtn
    bits: float = 2.4
    config: str | None = None  # explicit D/d, overrides bits
    group: int = 128  # rtn group size
    calib_text: tuple[str, ...] = ()
    calib_tokens: int | None = None  # None: 32768 on CUDA, 16384 on CPU
    calib_seq_len: int = 512
    correction_steps: int | None = None  # None: 200 on CUDA, 32 on CPU
    correction_batch: int = 4
    distill_steps: int | None = None  # None: 100 on CUDA, 40 on CPU (skipped if the model does not fit)
    distill_batch: int | None = None  # sequences per step; None: 4 on CUDA, 1 on CPU
    distill_lr: float = 1e-3
    distill_transforms: bool = False  # also tune each group's s2 and M end to end
    distill_tokens: int | None = None  # distillation's pool (calibration tokens + fresh ones); None: calibration alone
    seed: int = 0
    device: str | None = None
    search: str = "auto"
    alpha: float = ALPHA  # s1 exponent (quantize/lift.py)
    beta: float = 0.0
    damp: float = DAMP  # LDLQ damping
    checkpoint_dir: str | None = None
    allocation: dict | None = None  # per group ("model.layers.{i}.{group}") "D/d"; overrides bits/config
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def lattice_config(self) -> LatticeConfig:
        if self.config:
            return LatticeConfig.parse(self.config)
        return select_config(self.bits)

    def key(self) -> dict:
        """What must match for a checkpoint to be resumed."""
        d = asdict(self)
        for k in ("checkpoint_dir", "progress", "device"):
            d.pop(k)
        return d


def correction_steps(opts, device) -> int:
    if opts.correction_steps is not None:
        return int(opts.correction_steps)
    return 200 if torch.device(device).type == "cuda" else 32


def calib_tokens(opts, device) -> int:
    if opts.calib_tokens is not None:
        return int(opts.calib_tokens)
    return 32768 if torch.device(device).type == "cuda" else 16384


def distill_plan(src, opts, device) -> tuple[int, int, str | None]:
    """(steps, sequences per step, why skipped) of the end-to-end distillation pass, decided up front:
    an explicit --distill-steps that does not fit in memory is an error before any work."""
    steps = e2e.default_steps(device) if opts.distill_steps is None else int(opts.distill_steps)
    batch = e2e.default_batch(device) if opts.distill_batch is None else int(opts.distill_batch)
    if steps < 0 or batch < 1:
        raise ConfigError(f"distillation steps {steps} / batch {batch}: expected steps >= 0, batch >= 1")
    if opts.distill_tokens is not None and int(opts.distill_tokens) < 0:
        raise ConfigError(f"--distill-tokens {opts.distill_tokens}: expected >= 0")
    if steps == 0:
        return 0, batch, None
    why = e2e.check_fits(src.config.to_dict(), batch, opts.calib_seq_len, device, opts.distill_transforms)
    if why is None:
        return steps, batch, None
    if opts.distill_steps is not None:
        raise ConfigError(f"{why}; lower --distill-steps to 0 or use a larger device")
    tqdm.write(f"note: {why}; skipped (block-wise correction only)")
    return 0, batch, why


def _device(opts) -> torch.device:
    if opts.device:
        return torch.device(opts.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _layers(model, family):
    root = model
    for p in family.layers_path.split("."):
        root = getattr(root, p)
    return root


def capture_layer_inputs(skeleton, family, tokens: torch.Tensor, batch: int, device):
    """Per-layer forward kwargs (from a batch-1 pass) and the hidden states entering block 0."""
    layers = _layers(skeleton, family)
    kwargs: dict[int, dict] = {}
    first: list[torch.Tensor] = []
    saved = [layer.forward for layer in layers]

    def make(i):
        def fwd(hidden_states, *args, **kw):
            if i not in kwargs:
                kwargs[i] = {k: v for k, v in kw.items() if k not in ("past_key_values", "use_cache", "past_key_value")}
            if i == 0:
                first.append(hidden_states.detach())
            return hidden_states

        return fwd

    for i, layer in enumerate(layers):
        layer.forward = make(i)
    try:
        with torch.no_grad():
            skeleton.model(input_ids=tokens[:1], use_cache=False)
            first.clear()
            for b0 in range(0, tokens.shape[0], batch):
                skeleton.model(input_ids=tokens[b0 : b0 + batch], use_cache=False)
    finally:
        for layer, f in zip(layers, saved):
            layer.forward = f
    moved = {i: {k: (v.to(device) if torch.is_tensor(v) else
                     tuple(t.to(device) for t in v) if isinstance(v, tuple) else v) for k, v in kw.items()}
             for i, kw in kwargs.items()}
    return moved, torch.cat(first).to(device)


def calibration_tokens(src: ModelSource, opts: QuantizeOptions, device, n_seq: int | None = None,
                       seed: int | None = None, model=None) -> torch.Tensor:
    """``n_seq`` (default: --calib-tokens worth of) sequences: windows of the calibration text, or samples of
    the full-precision model (``model`` if given, else loaded and moved back to the CPU after)."""
    from ..calibrate import self_generated, text_windows

    if n_seq is None:
        n_seq = max(1, calib_tokens(opts, device) // opts.calib_seq_len)
    seed = opts.seed if seed is None else seed
    if opts.calib_seq_len < 16:
        raise ConfigError(f"--calib-seq-len {opts.calib_seq_len}: must be >= 16")
    if opts.calib_text:
        return text_windows(src.tokenizer, opts.calib_text, n_seq, opts.calib_seq_len, seed)
    m = src.full_model().to(device) if model is None else model
    sampling = {k: opts.extra[k] for k in ("top_p", "temperature", "first") if k in opts.extra}
    toks = self_generated(m, src.tokenizer, n_seq, opts.calib_seq_len, seed, device=str(device),
                          progress=opts.progress, **sampling)
    if model is None:
        m.to("cpu")
    return toks


def distill_pool(src, opts, device, tokens: torch.Tensor, teacher) -> torch.Tensor:
    """The distillation's sequences: the calibration ``tokens``, followed by fresh ones (another seed: new
    samples, or other windows of the calibration text) up to --distill-tokens. Opt-in: on the example model
    at 2.4 bits a pool 4x the calibration tokens gives 49.22 -> 48.49 at the default 100 steps and 48.17 at
    400 (text calibration at 400: 40.94 -> 39.76), but the self-generated run with 400 steps took 384 s on
    the H100, over the 5-minute bar, and the 100-step one was not timed (bench/RESULTS.md)."""
    if opts.distill_tokens is None:
        return tokens
    n_more = int(opts.distill_tokens) // opts.calib_seq_len - tokens.shape[0]
    if n_more <= 0:
        return tokens
    more = calibration_tokens(src, opts, device, n_seq=n_more, seed=opts.seed + 0x5EED, model=teacher)
    return torch.cat([tokens, more.to(tokens.device, tokens.dtype)])


def _input_second_moments(block, family, X, kwargs, batch):
    """E[x x^T] of each group's input over all calibration tokens, with the block's fp weights."""
    stats, hooks = {}, []
    for g in family.groups:
        mod = block.get_submodule(g.linears[0])

        def hook(m, inp, out, name=g.name):
            x = inp[0].detach().reshape(-1, inp[0].shape[-1]).float()
            H, n = stats.get(name, (0, 0))
            stats[name] = (H + x.T @ x, n + x.shape[0])

        hooks.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            run_block(block, X, kwargs, batch)
    finally:
        for h in hooks:
            h.remove()
    return {k: H / n for k, (H, n) in stats.items()}


def _rel_err(W, Wh, H) -> float:
    E = W - Wh
    return float(((E @ H) * E).sum().clamp_min(0).sqrt() / ((W @ H) * W).sum().clamp_min(1e-30).sqrt())


def quantize_block_liftquant(src, block, i, X, kwargs, lattices, opts, device, report):
    """Quantize block i in place; ``lattices`` holds one Lattice per group of the family."""
    fam = src.family
    H = _input_second_moments(block, fam, X, kwargs, opts.correction_batch)
    with torch.no_grad():
        Y = run_block(block, X, kwargs, opts.correction_batch)
    groups, fakes, rows = [], [], []
    for gi, (g, lattice) in enumerate(zip(fam.groups, lattices)):
        mods = [block.get_submodule(n) for n in g.linears]
        t0 = time.time()
        gq = quantize_group([m.weight.detach().float() for m in mods], H[g.name], lattice,
                            seed=opts.seed * 1000003 + i * 16 + gi, alpha=opts.alpha, method=opts.search,
                            beta=opts.beta, damp=opts.damp)
        gp = GroupParams(gq.transform, device)
        groups.append(gp)
        for name, m, lat, sc in zip(g.linears, mods, gq.latent, gq.scales):
            Wh = dequantize(gq.transform, torch.where(lat >= 0, 1.0, -1.0), sc.to(device),
                            M=gp.M, a=gp.log_a.exp(), b=gp.log_b.exp(), s1=gp.s1()).detach()
            f = LiftFakeQuant(gp, lat.to(device), sc.to(device), None if m.bias is None else m.bias.detach().float())
            f.fp_weight = m.weight.detach().float()
            rows.append({"layer": f"{fam.layers_path}.{i}.{name}", "group": g.name, "D": lattice.D, "d": lattice.d,
                         "bits": round(lattice.bits, 4), "out": m.out_features, "in": m.in_features,
                         "rel_err_before": round(_rel_err(f.fp_weight, Wh, H[g.name]), 5),
                         "search": gq.search, "search_seconds": round(time.time() - t0, 2)})
            parent, _, child = name.rpartition(".")
            setattr(block.get_submodule(parent), child, f)
            f._hname = g.name
            fakes.append(f)
    t0 = time.time()
    block.requires_grad_(False)
    for f in fakes:
        f.latent.requires_grad_(True)
        f.log_scale.requires_grad_(True)
    for gp in groups:
        for p in (gp.M, gp.log_a, gp.log_b, gp.log_s1):
            p.requires_grad_(True)
    with torch.no_grad():
        before = float((run_block(block, X, kwargs, opts.correction_batch) - Y).pow(2).mean() / Y.pow(2).mean())
    correct_block(block, fakes, groups, X, Y, kwargs, correction_steps(opts, device), opts.correction_batch,
                  seed=opts.seed * 7919 + i)
    for f in fakes:
        f.freeze()
    with torch.no_grad():
        Xn = run_block(block, X, kwargs, opts.correction_batch)
    after = float((Xn - Y).pow(2).mean() / Y.pow(2).mean())
    for f, r in zip(fakes, rows):
        r["rel_err_after"] = round(_rel_err(f.fp_weight, f.frozen, H[f._hname]), 5)
        r["block_rel_mse_before"] = round(before, 6)
        r["block_rel_mse_after"] = round(after, 6)
        r["correction_seconds"] = round(time.time() - t0, 2)
    report.extend(rows)
    return groups, fakes, Xn


def _r16(t):
    """Round to the float16 values the container stores, so the IR and the file agree exactly."""
    return None if t is None else t.detach().float().cpu().half().float()


def export_block(ir: QuantizedModel, src, block, i, groups, fakes):
    """IR entries of block i; s1 is folded into the input norm / the feeding rows where exact."""
    fam = src.family
    prefix = f"{fam.layers_path}.{i}."
    lifted = {n for g in fam.groups for n in g.linears}
    kept = {k: v.detach().float().cpu() for k, v in block.state_dict().items()
            if not any(k.startswith(n + ".") for n in lifted)}
    fi = 0
    entries = {}
    for g, gp in zip(fam.groups, groups):
        tf = gp.export()
        key = f"{prefix}{g.name}"
        ir.transforms[key] = tf
        for name in g.linears:
            f = fakes[fi]
            fi += 1
            entries[name] = LiftedLinear(transform=key, out_features=f.latent.shape[0],
                                         codes=pack_codes(f.codes().cpu()), scales=f.scale().detach().float().cpu(),
                                         bias=None if f.bias is None else f.bias.float().cpu())
    for g in fam.groups:
        tf = ir.transforms[f"{prefix}{g.name}"]
        s1 = tf.s1[: tf.in_features] if tf.s1 is not None else None
        if s1 is None:
            continue
        if g.input_norm is not None:
            w = kept[f"{g.input_norm}.weight"]
            kept[f"{g.input_norm}.weight"] = (w + fam.norm_offset) / s1 - fam.norm_offset
            tf.s1 = None
        elif g.fold_into_rows_of is not None:
            feeder = entries[g.fold_into_rows_of]
            feeder.scales = feeder.scales / s1
            if feeder.bias is not None:
                feeder.bias = feeder.bias / s1
            tf.s1 = None
    for g in fam.groups:
        tf = ir.transforms[f"{prefix}{g.name}"]
        tf.M, tf.a, tf.b, tf.s1 = _r16(tf.M), _r16(tf.a), _r16(tf.b), _r16(tf.s1)
    for name, e in entries.items():
        e.scales, e.bias = _r16(e.scales), _r16(e.bias)
        ir.linears[prefix + name] = e
    for k, v in kept.items():
        ir.kept[prefix + k] = v.to(src.kept_dtype)


def quantize_model(src: ModelSource, opts: QuantizeOptions) -> tuple[QuantizedModel, list[dict]]:
    from .checkpoint import Checkpoint

    device = _device(opts)
    torch.manual_seed(opts.seed)
    ir = QuantizedModel(config=src.config.to_dict(), tokenizer=src.tokenizer_files())
    report: list[dict] = []
    if opts.method == "liftquant":  # before anything is written (the checkpoint directory included)
        d_steps, d_batch, d_note = distill_plan(src, opts, device)
    ckpt = Checkpoint.open(opts.checkpoint_dir, opts.key()) if opts.checkpoint_dir else None
    skeleton = src.skeleton()
    fam = src.family
    n_layers = src.num_layers
    t_start = time.time()
    if opts.method == "rtn":
        for i in tqdm(range(n_layers), desc="rtn", disable=not opts.progress):
            block = src.block(skeleton, i)
            prefix = f"{fam.layers_path}.{i}."
            for name in fam.linears:
                m = block.get_submodule(name)
                ir.linears[prefix + name] = rtn_quantize(m.weight.detach(), int(opts.bits), opts.group,
                                                         None if m.bias is None else m.bias.detach())
            for k, v in block.state_dict().items():
                if not any(k.startswith(n + ".") for n in fam.linears):
                    ir.kept[prefix + k] = v.detach().to(src.kept_dtype).clone()
            _layers(skeleton, fam)[i] = torch.nn.Identity()
        ir.meta.update(method="rtn", bits=int(opts.bits), group=opts.group)
    elif opts.method == "liftquant":
        cfg = opts.lattice_config()
        prefix = fam.layers_path

        def lattices_of(i):
            if opts.allocation is None:
                return [load_shipped(cfg)] * len(fam.groups)
            try:
                return [load_shipped(LatticeConfig.parse(opts.allocation[f"{prefix}.{i}.{g.name}"]))
                        for g in fam.groups]
            except KeyError as e:
                raise ConfigError(f"allocation has no lattice for group {e.args[0]}") from None

        start = 0
        if ckpt is not None and ckpt.done >= 0:
            tokens, X = ckpt.load_activations()
            start = ckpt.done + 1
            ckpt.load_blocks_into(ir, report)
        else:
            tokens = calibration_tokens(src, opts, device)
        kwargs, X0 = capture_layer_inputs(skeleton, fam, tokens, opts.correction_batch, device)
        if start == 0:
            X = X0
        X = X.to(device)
        label = "mixed" if opts.allocation is not None else cfg.name
        bar = tqdm(range(n_layers), desc=f"LiftQuant {label} blocks", disable=not opts.progress, initial=0)
        for i in bar:
            if i < start:
                continue
            block = src.block(skeleton, i).to(device)
            rows_before = len(report)
            groups, fakes, X = quantize_block_liftquant(src, block, i, X, kwargs[i], lattices_of(i), opts, device,
                                                       report)
            export_block(ir, src, block, i, groups, fakes)
            del block, groups, fakes
            _layers(skeleton, fam)[i] = torch.nn.Identity()
            if ckpt is not None:
                ckpt.save_block(i, ir, report[rows_before:], tokens, X)
                if os.environ.get("LIFTEXPORT_KILL_AFTER_BLOCK") == str(i):  # test hook: a real SIGKILL
                    os.kill(os.getpid(), signal.SIGKILL)
            bar.set_postfix(block_err=report[-1]["block_rel_mse_after"])
        if opts.allocation is not None:
            w = {r["layer"]: r["out"] * r["in"] for r in report}
            bits = sum(w[r["layer"]] * r["bits"] for r in report) / sum(w.values())
            ir.meta.update(config="mixed")  # the per-group lattices are in each transform's (D, d)
        else:
            bits = cfg.bits
            ir.meta.update(config=cfg.name)
        ir.meta.update(method="liftquant", bits=round(bits, 5), calibration="text" if opts.calib_text
                       else "self-generated", calib_tokens=int(tokens.numel()), seed=opts.seed,
                       correction_steps=correction_steps(opts, device))
        del X, kwargs, X0
    else:
        raise ConfigError(f"--method {opts.method!r}: expected liftquant or rtn")
    for k, v in skeleton.state_dict().items():
        if not k.startswith(fam.layers_path + "."):
            ir.kept[k] = v.detach().to(src.kept_dtype).cpu()
    if getattr(src.config, "tie_word_embeddings", False):
        ir.kept.pop("lm_head.weight", None)
    if opts.method == "liftquant":
        del skeleton
        summary = {"steps": 0, "skipped": d_note} if d_note else {"steps": 0}
        if d_steps > 0:
            teacher = src.full_model().to(device)
            pool = distill_pool(src, opts, device, tokens, teacher)
            summary = e2e.distill(ir, teacher, pool, d_steps, d_batch, opts.distill_lr, opts.seed * 7 + 1, device,
                                  transforms=opts.distill_transforms, progress=opts.progress)
            teacher.to("cpu")  # a GGUF source caches its model
            del teacher
        ir.meta["distill"] = summary
    ir.meta["quantize_seconds"] = round(time.time() - t_start, 1)
    ir.meta["source"] = str(src.path)
    return ir, report

"""The `liftexport` command line (click). Errors of liftexport's own types become one line + exit 2."""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path

import click

from .artifacts import holds_ir, load_artifact
from .errors import ConfigError, LiftExportError


def _friendly(fn):
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LiftExportError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)

    return wrapper


@click.group()
@click.version_option(package_name="liftexport")
def main() -> None:
    """Quantize decoder LLMs with LiftQuant and export them (container, ONNX, GGUF)."""


# ----------------------------------------------------------------------------- lattice


@main.group()
def lattice() -> None:
    """Inspect, benchmark and train the LiftQuant lattices (mapping matrices M)."""


@lattice.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_friendly
def lattice_list(as_json: bool) -> None:
    """The shipped configurations: rate, MSE on N(0,1), search used."""
    from .lattice.menu import load_shipped, shipped_configs

    rows = []
    for c in shipped_configs():
        lat = load_shipped(c)
        rows.append({"config": c.name, "D": c.D, "d": c.d, "bits": round(c.bits, 4), "mse": lat.mse,
                     "search": lat.meta.get("search"), "candidates_per_chunk": 1 << c.pad})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'config':>7} {'bits':>6} {'mse':>8} {'search':>16}")
    for r in rows:
        click.echo(f"{r['config']:>7} {r['bits']:>6.3f} {r['mse']:>8.5f} {str(r['search']):>16}")


@lattice.command("bench")
@click.option("--config", "configs", default="16/8,32/16,30/14,24/10,32/20", show_default=True,
              help="Comma-separated D/d list.")
@click.option("--samples", default=100_000, show_default=True, help="N(0, I_d) sample vectors (d-chunks) per config.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default=None, help="cpu or cuda (default: cuda when present).")
@click.option("--search", "method", type=click.Choice(["auto", "exact", "nullspace"]), default="auto",
              show_default=True)
@click.option("--no-polish", is_flag=True, help="Skip the single-bit-flip refinement after the search.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_friendly
def lattice_bench(configs, samples, seed, device, method, no_polish, as_json) -> None:
    """MSE, info bits and search throughput of shipped lattices on N(0,1) samples."""
    import torch

    from .lattice.bench import bench_config
    from .lattice.config import parse_config_list

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = [bench_config(c, samples, seed, device, method, not no_polish) for c in parse_config_list(configs)]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'config':>7} {'bits':>6} {'mse':>8} {'info':>6} {'search':>16} {'params/s':>12}")
    for r in rows:
        click.echo(f"{r['config']:>7} {r['bits']:>6.3f} {r['mse']:>8.5f} {r['info_bits']:>6.3f} "
                   f"{r['search']:>16} {r['params_per_s']:>12.4g}")


@lattice.command("train")
@click.option("--config", "config", required=True, help="D/d, e.g. 24/10.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output file (default: the shipped data folder's lq_D_d.safetensors).")
@click.option("--steps", default=2000, show_default=True, help="Adam steps per restart.")
@click.option("--restarts", default=3, show_default=True)
@click.option("--lloyd-iters", default=12, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default=None, help="cpu or cuda (default: cuda when present).")
@_friendly
def lattice_train(config, output, steps, restarts, lloyd_iters, seed, device) -> None:
    """Train the mapping matrix M of one configuration and write a lattice file."""
    import torch

    from .lattice.config import LatticeConfig
    from .lattice.menu import lattice_path
    from .lattice.train import TrainOptions, train_lattice

    cfg = LatticeConfig.parse(config)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    opts = TrainOptions(steps=steps, restarts=restarts, lloyd_iters=lloyd_iters, seed=seed, device=device)
    lat = train_lattice(cfg, opts)
    path = lat.save(output or lattice_path(cfg))
    click.echo(f"{cfg}: held-out MSE {lat.mse:.5f} ({lat.meta['search']}) -> {path}")


# ----------------------------------------------------------------------------- model / eval


def _budget_plan(ms, opts, budget, reserve, context, batch_size, mixed, bits, lattice_config, method) -> dict:
    """--budget / --mixed: measure sensitivities, pick a lattice per group, print the plan."""
    import torch

    from .budget import fmt_size, parse_size, plan_allocation, plan_table, reserve_auto

    if method != "liftquant":
        raise ConfigError("--budget/--mixed allocate LiftQuant lattices; they do not apply to --method rtn")
    if lattice_config:
        raise ConfigError("--config fixes one lattice for every layer; drop it to use --budget/--mixed")
    if budget is not None and mixed:
        raise ConfigError("give either --budget SIZE or --bits X --mixed, not both")
    target = None
    if budget is not None:
        total = parse_size(budget)
        if reserve == "auto":
            res, note = reserve_auto(ms.config, context, batch_size)
            click.echo(f"reserve auto: {note}", err=True)
        else:
            res = parse_size(reserve)
        target = total - res
        if target <= 0:
            raise ConfigError(f"--budget {budget} leaves nothing for the weights after the reserve {fmt_size(res)}")
    dev = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    plan = plan_allocation(ms, target_bytes=target, match=opts.lattice_config() if mixed else None,
                           calib_text=opts.calib_text,
                           seed=opts.seed, device=dev, calib_tokens=opts.calib_tokens,
                           calib_seq_len=opts.calib_seq_len, progress=opts.progress)
    click.echo(plan_table(plan), err=True)
    return plan


@main.command("model")
@click.argument("src", required=False)
@click.option("--to", "fmt", type=click.Choice(["lqt", "onnx", "gguf"]), default="lqt", show_default=True,
              help="Output format: lqt (container file), gguf (one file) or onnx (a directory).")
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Output file or directory (default: out/<model>-<config>.lqt or out/<model>-<config>-onnx/).")
@click.option("--onnx-ops", type=click.Choice(["custom", "contrib", "standard"]), default="custom", show_default=True,
              help="How lifted layers are lowered to ONNX (see README).")
@click.option("--onnx-lut", type=click.Choice(["none", "int8"]), default="none", show_default=True,
              help="With --onnx-ops custom: int8 sets lut_bits=8 on LiftMatMul, the library's approximate "
                   "int8 lookup-table kernel (faster on CPU; spec/onnx-ops.md).")
@click.option("--method", type=click.Choice(["liftquant", "rtn"]), default="liftquant", show_default=True)
@click.option("--bits", type=float, default=2.4, show_default=True, help="Rate: LiftQuant maps it to the menu; rtn takes 2/3/4.")
@click.option("--config", "lattice_config", default=None, help="Explicit LiftQuant D/d (overrides --bits).")
@click.option("--group", default=128, show_default=True, help="RTN group size.")
@click.option("--calib-text", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Calibration text file(s); default: sequences sampled from the model itself.")
@click.option("--calib-tokens", type=int, default=None, help="Calibration tokens [default: 32768 on CUDA, 16384 on CPU].")
@click.option("--calib-seq-len", default=512, show_default=True)
@click.option("--correction-steps", type=int, default=None,
              help="Adam steps of block-wise correction per block [default: 200 on CUDA, 32 on CPU].")
@click.option("--no-correction", is_flag=True, help="Skip block-wise correction.")
@click.option("--distill-steps", type=int, default=None,
              help="Adam steps of end-to-end distillation (row scales and norms against the original model's "
                   "logits) after the blocks [default: 100 on CUDA, 40 on CPU; skipped when teacher and student "
                   "do not fit in memory].")
@click.option("--distill-tokens", type=int, default=None,
              help="Tokens the distillation draws from: the calibration tokens, then fresh samples (or other "
                   "windows of --calib-text) up to this many [default: the calibration tokens alone].")
@click.option("--no-distill", is_flag=True, help="Skip end-to-end distillation.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default=None, help="cpu or cuda (default: cuda when present).")
@click.option("--search", type=click.Choice(["auto", "exact", "nullspace"]), default="auto", show_default=True)
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Write the per-layer JSON report here.")
@click.option("--eval-text", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Evaluate the quantized model on these files afterwards (the eval protocol).")
@click.option("--no-resume", is_flag=True, help="Ignore (and replace) an existing checkpoint of this run.")
@click.option("--no-verify", is_flag=True,
              help="Skip checking the written artifact against the in-memory model (logits + 32 greedy tokens).")
@click.option("--budget", default=None,
              help="Memory budget (e.g. 24GiB, 300MB): a lattice per layer group so the artifact fits "
                   "budget - reserve, chosen by measured sensitivity.")
@click.option("--reserve", default="auto", show_default=True,
              help="With --budget: memory kept for the runtime, a size or 'auto' (KV cache + activations).")
@click.option("--context", default=4096, show_default=True, help="With --reserve auto: context length.")
@click.option("--batch", "batch_size", default=1, show_default=True, help="With --reserve auto: batch size.")
@click.option("--mixed", is_flag=True, help="With --bits X: the bytes of uniform X, allocated per layer group.")
@_friendly
def model_cmd(src, fmt, output, onnx_ops, onnx_lut, method, bits, lattice_config, group, calib_text, calib_tokens,
              calib_seq_len, correction_steps, no_correction, distill_steps, distill_tokens, no_distill, seed, device,
              search, report, eval_text, no_resume, no_verify, budget, reserve, context, batch_size, mixed) -> None:
    """Quantize SRC (HF dir, .gguf, or the example model) and write an artifact.

    SRC may also be a .lqt container: it is then converted (no quantization) to --to.
    """
    import shutil
    import time
    from pathlib import Path

    from .models.load import ModelSource
    from .quantize.pipeline import QuantizeOptions, quantize_model

    if src and holds_ir(Path(src)):
        from .formats import read_artifact

        ir = read_artifact(src)
        out = Path(output) if output else Path("out") / (Path(src).stem + ("-onnx" if fmt == "onnx" else f".{fmt}"))
        _emit(ir, fmt, out, onnx_ops, onnx_lut)
        click.echo(json.dumps({"output": str(out), "from": src, **ir.meta}, default=str))
        _check(ir, out, fmt, no_verify, approx=onnx_lut != "none" and fmt == "onnx")
        return
    ms = ModelSource(src)
    opts = QuantizeOptions(method=method, bits=bits, config=lattice_config, group=group, calib_text=tuple(calib_text),
                           calib_tokens=calib_tokens, calib_seq_len=calib_seq_len,
                           correction_steps=0 if no_correction else correction_steps,
                           distill_steps=0 if no_distill else distill_steps, distill_tokens=distill_tokens, seed=seed,
                           device=device, search=search)
    plan = None
    if budget is not None or mixed:
        plan = _budget_plan(ms, opts, budget, reserve, context, batch_size, mixed, bits, lattice_config, method)
        opts.allocation = plan["allocation"]
    tag = f"rtn{int(bits)}g{group}" if method == "rtn" else (
        f"lq-mixed{plan['mean_bits']:.2f}" if plan else "lq" + opts.lattice_config().name.replace("/", "_"))
    name = f"{ms.path.stem}-{tag}" + ("-onnx" if fmt == "onnx" else f".{fmt}")
    out = Path(output) if output else Path("out") / name
    if fmt != "onnx" and (out.is_dir() or str(output or "").endswith("/")):
        out = out / name
    if fmt == "onnx" and out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: output directory exists and is not empty")
    ckpt_dir = out.with_name(out.name + ".ckpt")
    if no_resume and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    opts.checkpoint_dir = str(ckpt_dir) if method == "liftquant" else None
    t0 = time.time()
    ir, rows = quantize_model(ms, opts)
    _emit(ir, fmt, out, onnx_ops, onnx_lut)
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    size = sum(p.stat().st_size for p in out.iterdir()) if out.is_dir() else out.stat().st_size
    summary = {"output": str(out), "bytes": size, "seconds": round(time.time() - t0, 1), **ir.meta}
    if plan is not None:
        summary.update(budget_target_bytes=plan["target_bytes"], predicted_bytes=plan["predicted_bytes"])
        if fmt == "lqt" and size > plan["target_bytes"]:
            click.echo(f"warning: {out} is {size:,} B, over the target {plan['target_bytes']:,} B "
                       f"(predicted {plan['predicted_bytes']:,} B)", err=True)
    if report:
        Path(report).write_text(json.dumps({"summary": summary, "layers": rows,
                                            **({"plan": plan} if plan else {})}, indent=1))
    click.echo(json.dumps(summary, default=str))
    if method == "liftquant" or fmt == "lqt":
        _check(ir, out, fmt, no_verify, approx=onnx_lut != "none" and fmt == "onnx")
    if eval_text:
        from .evaluate import eval_windows, perplexity
        from .runtime.reference import build_model

        dev = opts.device or ("cuda" if __import__("torch").cuda.is_available() else "cpu")
        res = perplexity(build_model(ir, dev), eval_windows(ms.tokenizer, eval_text), device=dev)
        click.echo(json.dumps({"eval": res}))


def _check(ir, out, fmt: str, no_verify: bool, approx: bool = False) -> None:
    if no_verify:
        return
    from .verify import verify_export

    res = verify_export(ir, out, fmt)
    if approx:  # --onnx-lut: an approximate kernel, reported but not held to the exact tolerance
        click.echo(json.dumps({"verify": res, "approximate": "--onnx-lut int8: not held to the exact tolerance"}))
        return
    click.echo(json.dumps({"verify": res}))
    if not res["ok"]:
        click.echo(f"error: {out} does not reproduce the in-memory model (see verify above)", err=True)
        sys.exit(1)


def _emit(ir, fmt: str, out, onnx_ops: str, onnx_lut: str = "none") -> None:
    if fmt == "lqt":
        from .formats.container import write_container

        write_container(ir, out)
    elif fmt == "gguf":
        from .formats.gguf import write_gguf

        write_gguf(ir, out)
    else:
        from .formats.onnx import export_onnx

        export_onnx(ir, out, ops=onnx_ops, lut=onnx_lut)


@main.command("eval")
@click.argument("src", required=False)
@click.option("--text", "texts", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
@click.option("--device", default=None)
@click.option("--batch", default=8, show_default=True)
@_friendly
def eval_cmd(src, texts, as_json, device, batch) -> None:
    """Perplexity of SRC (.lqt, .gguf, HF dir, or the example model) by the project's protocol."""
    import torch

    from .evaluate import eval_windows, perplexity

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok, desc = load_artifact(src, device)
    res = perplexity(model, eval_windows(tok, texts), batch=batch, device=device, progress=not as_json)
    res.update(source=src or "example", texts=list(texts))
    if as_json:
        click.echo(json.dumps(res))
    else:
        click.echo(f"PPL {res['ppl']:.3f}  (mean NLL {res['nll']:.4f} over {res['predicted']} predictions)")


@main.command("sweep")
@click.argument("src", required=False)
@click.option("--bits", "bits_range", default="1.6:3.2:0.2", show_default=True,
              help="Rates LO:HI:STEP or a comma list; each maps to the menu (duplicates dropped).")
@click.option("--baselines", default="", help="Comma list of rtn2, rtn3, rtn4 and/or GGUF files to evaluate too.")
@click.option("--eval-text", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Directory for artifacts and results.")
@click.option("--no-mixed", is_flag=True, help="Only uniform rates (no per-group allocation at equal bytes).")
@click.option("--calib-text", multiple=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--calib-tokens", type=int, default=None)
@click.option("--calib-seq-len", default=512, show_default=True)
@click.option("--correction-steps", type=int, default=None)
@click.option("--distill-steps", type=int, default=None)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default=None)
@_friendly
def sweep_cmd(src, bits_range, baselines, eval_text, output, no_mixed, calib_text, calib_tokens, calib_seq_len,
              correction_steps, distill_steps, seed, device) -> None:
    """Quantize and evaluate SRC at many rates (uniform and mixed) plus baselines: CSV, JSON and a PNG plot."""
    from .sweep import parse_bits_range, run_sweep

    kw = dict(calib_text=tuple(calib_text), calib_tokens=calib_tokens, calib_seq_len=calib_seq_len,
              correction_steps=correction_steps, distill_steps=distill_steps, seed=seed)
    rows = run_sweep(src, parse_bits_range(bits_range), eval_text, output,
                     baselines=[b.strip() for b in baselines.split(",") if b.strip()], mixed=not no_mixed,
                     quant_kwargs=kw, device=device)
    click.echo(f"{'point':<22} {'bytes':>13} {'bits':>7} {'PPL':>10}")
    for r in rows:
        bits = "-" if r["mean_bits"] is None else f"{r['mean_bits']:.3f}"
        click.echo(f"{r['label']:<22} {r['bytes']:>13,} {bits:>7} {r['ppl']:>10.3f}")
    click.echo(f"wrote {output}/sweep.csv, sweep.json, sweep.png")


@main.command("inspect")
@click.argument("art", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
@click.option("--tensors", "show_tensors", is_flag=True, help="List every tensor in the table output.")
@_friendly
def inspect_cmd(art, as_json, show_tensors) -> None:
    """Per-tensor bytes and the effective bits per weight (all overheads included) of ART."""
    from .inspect import inspect_container

    info = inspect_container(art)
    if as_json:
        click.echo(json.dumps(info, indent=1, default=str))
        return
    if show_tensors:
        for r in info["tensors"]:
            dd = f"{r['D']}/{r['d']}" if "D" in r else ""
            click.echo(f"{r['tensor']:<60} {r['kind']:<12} {dd:>6} {r['dtype']:>5} {r['bytes']:>12,}")
    click.echo(f"file {info['file_bytes']:,} bytes (accounted {info['accounted_bytes']:,}: header "
               f"{info['header_bytes']:,})")
    for k, v in info["categories"].items():
        click.echo(f"  {k:<12} {v:>14,} bytes")
    click.echo(f"effective bits per decoder-linear weight: {info['effective_bits']:.4f} "
               f"over {info['linear_weights']:,} weights")
    for k, v in info["effective_bits_items"].items():
        click.echo(f"  {k:<18} {v:.5f}")


@main.command("run")
@click.argument("art", required=False)
@click.option("--prompt", required=True)
@click.option("--max-new-tokens", default=64, show_default=True)
@click.option("--device", default=None)
@click.option("--sample", is_flag=True, help="Sample (temperature 1) instead of greedy decoding.")
@click.option("--seed", default=0, show_default=True)
@click.option("--runtime", type=click.Choice(["auto", "engine", "hf"]), default="auto", show_default=True,
              help="auto: the CUDA engine for LiftQuant artifacts on CUDA (greedy), else transformers.")
@_friendly
def run_cmd(art, prompt, max_new_tokens, device, sample, seed, runtime) -> None:
    """Generate text from ART (.lqt, .gguf, HF dir, or the example model), streaming tokens.

    On CUDA a LiftQuant artifact of a Llama-family model runs on the fast engine (Triton kernels,
    fp16, static KV cache, CUDA-graph decode; greedy); --runtime hf forces the reference runtime."""
    import torch
    from transformers import TextStreamer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if runtime != "hf" and device.startswith("cuda") and art and holds_ir(Path(art)) and not sample:
        from .formats import read_artifact
        from .runtime.engine import ENGINE_TYPES, engine_from_ir
        from .runtime.reference import build_tokenizer

        ir = read_artifact(Path(art))
        if ir.model_type in ENGINE_TYPES and ir.meta.get("method", "liftquant") != "rtn":
            tok = build_tokenizer(ir)
            ids = tok(prompt, return_tensors="pt")["input_ids"]
            eng = engine_from_ir(ir, device=device, max_len=ids.shape[1] + max_new_tokens)
            new = eng.generate(ids, max_new_tokens, eos_token_id=tok.eos_token_id)
            click.echo(tok.decode(torch.cat([ids, new.cpu()], 1)[0], skip_special_tokens=True))
            return
        if runtime == "engine":
            raise ConfigError(f"the CUDA engine runs LiftQuant {', '.join(ENGINE_TYPES)} artifacts")
    elif runtime == "engine":
        raise ConfigError("--runtime engine needs a LiftQuant artifact, --device cuda and greedy decoding")
    model, tok, _ = load_artifact(art, device)
    torch.manual_seed(seed)
    ids = tok(prompt, return_tensors="pt").to(device)
    streamer = TextStreamer(tok, skip_prompt=False)
    with torch.no_grad():
        model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=sample, streamer=streamer,
                       pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)


@main.command("verify")
@click.argument("art")
@click.option("--against", "ref", required=True, help="Reference: an artifact, a GGUF file or an HF dir.")
@click.option("--tokens", "n_tokens", default=32, show_default=True, help="Greedy tokens per prompt.")
@click.option("--json", "as_json", is_flag=True)
@_friendly
def verify_cmd(art, ref, n_tokens, as_json) -> None:
    """Max relative logit error and greedy-token agreement of ART against REF on fixed prompts."""
    from .verify import verify

    res = verify(art, ref, n_tokens)
    if as_json:
        click.echo(json.dumps(res))
    else:
        click.echo(f"max relative logit error {res['max_rel_logit_err']:.3e}; greedy tokens identical: "
                   f"{res['greedy_identical']} ({res['greedy_agree']}/{res['greedy_total']})")
    if not res["greedy_identical"]:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()

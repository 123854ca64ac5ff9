"""The Pareto sweep: quantize and evaluate a model at many rates (uniform and mixed allocation) plus
baselines, with one protocol; writes CSV, JSON and a perplexity-vs-bytes plot."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import torch
from tqdm import tqdm

from .artifacts import load_artifact
from .errors import ConfigError, FormatError

FIELDS = ("label", "kind", "config", "mean_bits", "bytes", "ppl", "path")


def parse_bits_range(text: str) -> list[float]:
    """'1.6:3.2:0.2' -> [1.6, 1.8, ..., 3.2]; '2.0,2.4,3.0' -> the list."""
    try:
        if ":" in text:
            lo, hi, step = (float(x) for x in text.split(":"))
            if step <= 0 or hi < lo:
                raise ValueError
            n = int(round((hi - lo) / step))
            return [round(lo + i * step, 6) for i in range(n + 1)]
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--bits {text!r}: expected LO:HI:STEP (e.g. 1.6:3.2:0.2) or a comma list") from None


def run_sweep(src_path, bits: list[float], eval_text, out_dir, baselines=(), mixed: bool = True,
              quant_kwargs: dict | None = None, device: str | None = None, progress: bool = True,
              eval_tokens: int | None = None) -> list[dict]:
    """Quantize + evaluate every point; results are rewritten after each one. ``eval_tokens`` shortens
    the protocol (tests only)."""
    from .budget import plan_allocation
    from .evaluate import eval_windows, perplexity
    from .formats.container import write_container
    from .lattice.config import LatticeConfig
    from .lattice.menu import select_config
    from .models.load import ModelSource
    from .quantize.pipeline import QuantizeOptions, quantize_model
    from .runtime.reference import build_model
    from .verify import verify_export

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    src = ModelSource(src_path)
    windows = eval_windows(src.tokenizer, eval_text, **({"n_tokens": eval_tokens} if eval_tokens else {}))
    kw = dict(quant_kwargs or {})
    configs = list(dict.fromkeys(select_config(b).name for b in bits))  # one point per distinct lattice
    jobs = [("uniform", c) for c in configs] + ([("mixed", c) for c in configs] if mixed else [])
    for b in baselines:
        if not (b in ("rtn2", "rtn3", "rtn4") or (b.endswith(".gguf") and Path(b).is_file())):
            raise ConfigError(f"--baselines {b!r}: expected rtn2, rtn3, rtn4 or an existing .gguf file")
        jobs.append(("baseline", b))
    rows: list[dict] = []
    sens = None

    def ppl_of(model) -> float:
        return perplexity(model, windows, device=dev, progress=False)["ppl"]

    for kind, what in tqdm(jobs, desc="sweep", disable=not progress, unit="point"):
        if kind == "baseline" and what.endswith(".gguf"):
            model, _, _ = load_artifact(what, dev)
            row = {"label": Path(what).name, "kind": kind, "config": "gguf", "mean_bits": None,
                   "bytes": os.path.getsize(what), "path": what}
            row["ppl"] = ppl_of(model)
        else:
            if kind == "baseline":
                opts = QuantizeOptions(method="rtn", bits=int(what[3]), group=128, device=dev, progress=False)
            elif kind == "uniform":
                opts = QuantizeOptions(config=what, device=dev, progress=False, **kw)
            else:
                plan = plan_allocation(src, match=LatticeConfig.parse(what),
                                       calib_text=kw.get("calib_text", ()), seed=kw.get("seed", 0), device=dev,
                                       calib_tokens=kw.get("calib_tokens"), calib_seq_len=kw.get("calib_seq_len", 512),
                                       progress=False, sens=sens)
                sens = {g["group"]: g["sensitivity"] for g in plan["groups"]}
                opts = QuantizeOptions(allocation=plan["allocation"], device=dev, progress=False, **kw)
            ir, _ = quantize_model(src, opts)
            name = f"{kind}-{what.replace('/', '_')}.lqt"
            p = write_container(ir, out / name)
            check = verify_export(ir, p, "lqt", n_tokens=8)  # the file, not only the in-memory model
            if not check["ok"]:
                raise FormatError(f"{p}: written container does not reproduce the quantized model: {check}")
            row = {"label": f"{kind} {what}", "kind": kind, "config": ir.meta.get("config", what),
                   "mean_bits": ir.meta.get("bits"), "bytes": p.stat().st_size, "path": name}
            row["ppl"] = ppl_of(build_model(ir, dev))
        rows.append(row)
        write_outputs(rows, out)
    return rows


def write_outputs(rows: list[dict], out: Path) -> None:
    (out / "sweep.json").write_text(json.dumps(rows, indent=1))
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in FIELDS})
    plot(rows, out / "sweep.png")


def plot(rows: list[dict], path: Path, title: str = "perplexity vs bytes") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, style in (("uniform", "o-"), ("mixed", "s--")):
        pts = sorted((r["bytes"] / 1e6, r["ppl"]) for r in rows if r["kind"] == kind)
        if pts:
            ax.plot(*zip(*pts), style, label=f"LiftQuant {kind}")
    for r in rows:
        if r["kind"] == "baseline":
            ax.plot(r["bytes"] / 1e6, r["ppl"], "x", markersize=9)
            ax.annotate(r["label"], (r["bytes"] / 1e6, r["ppl"]), textcoords="offset points", xytext=(5, 4),
                        fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    for axis in (ax.xaxis, ax.yaxis):  # plain numbers on the log axes, also inside one decade
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(FormatStrFormatter(""))
    ax.set_xlabel("model file size (MB, log scale)")
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

"""The `liftexport` command line (click). Errors of liftexport's own types become one line + exit 2."""

from __future__ import annotations

import json
import sys
from functools import wraps

import click

from .errors import LiftExportError


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


if __name__ == "__main__":  # pragma: no cover
    main()

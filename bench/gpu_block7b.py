"""Time LiftQuant on one Llama-2-7B-shaped decoder block (random weights; time does not depend on values).

    python bench/gpu_block7b.py [--config 24/10] [--tokens 32768] [--steps 200] [--json out.json]

Runs the same per-block code as the pipeline (statistics, whitening, LDL search, correction,
propagation) on random calibration activations and prints the time per block and its parts.
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import torch
import transformers

from liftexport.lattice.config import LatticeConfig
from liftexport.lattice.menu import load_shipped
from liftexport.models.families import family_for
from liftexport.quantize.pipeline import QuantizeOptions, quantize_block_liftquant


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="24/10")
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = transformers.LlamaConfig(hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                                   num_key_value_heads=32, num_hidden_layers=1, vocab_size=32000,
                                   max_position_embeddings=4096)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    block = model.model.layers[0].to(dev).float()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.02) if p.ndim == 2 else torch.nn.init.ones_(p)
    seq = 512
    X = torch.randn(a.tokens // seq, seq, 4096, device=dev)
    pos = torch.arange(seq, device=dev)[None]
    rot = model.model.rotary_emb.to(dev)
    kwargs = {"position_embeddings": rot(X[:1], pos), "attention_mask": None, "position_ids": pos}
    src = SimpleNamespace(family=family_for("llama"))
    lat = load_shipped(LatticeConfig.parse(a.config))
    opts = QuantizeOptions(config=a.config, correction_steps=a.steps, progress=False)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.time()
    report = []
    _, _, Xn = quantize_block_liftquant(src, block, 0, X, kwargs, [lat] * len(src.family.groups), opts, dev, report)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    total = time.time() - t0
    groups = {}
    for r in report:
        groups[r["group"]] = r["search_seconds"]
    res = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "config": a.config,
           "tokens": a.tokens, "correction_steps": a.steps, "block_seconds": round(total, 2),
           "search_seconds_by_group": groups, "correction_seconds": report[-1]["correction_seconds"],
           "block_rel_mse_before": report[-1]["block_rel_mse_before"],
           "block_rel_mse_after": report[-1]["block_rel_mse_after"], "finite": bool(torch.isfinite(Xn).all())}
    print(json.dumps(res))
    if a.json:
        open(a.json, "w").write(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

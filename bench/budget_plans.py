"""Budget plans for the example model: measured sensitivities once, then the allocation for several budgets.

    python bench/budget_plans.py [--src MODEL] [--budgets 146MB,150MB,154MB] [--json bench/results/budget_plans.json]

Prints, per budget, the lattices chosen (groups and weight share per lattice) and the predicted artifact
bytes against the budget (reserve 0). Predicted bytes are exact for the lifted tensors and an
over-estimate of the header (see liftexport.budget.fixed_bytes); the quantization itself is not run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    from liftexport.budget import (allocate, candidate_configs, fixed_bytes, group_bytes, group_shapes,
                                   lifted_room, mean_bits, measure_sensitivity, parse_size)
    from liftexport.calibrate import self_generated
    from liftexport.lattice.config import LatticeConfig
    from liftexport.models.load import ModelSource

    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=None)
    ap.add_argument("--budgets", default="")
    ap.add_argument("--json", default="bench/results/budget_plans.json")
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    src = ModelSource(a.src)
    shapes = group_shapes(src)
    data, header = fixed_bytes(src, shapes)
    fixed = data + header
    uni = {c: fixed + sum(group_bytes(g, LatticeConfig.parse(c)) for g in shapes) for c in ("32/16", "24/10", "24/8")}
    budgets = [parse_size(b) for b in a.budgets.split(",") if b] or [
        int(uni["32/16"] + f * (uni["24/8"] - uni["32/16"])) for f in (0.25, 0.5, 0.75)]
    model = src.full_model()
    tokens = self_generated(model.to(dev), src.tokenizer, 16, 256, 0, device=dev, progress=False)
    sens = measure_sensitivity(model, shapes, tokens, src.family, dev, progress=False)
    rows = []
    for b in budgets:
        alloc = allocate(shapes, sens, lifted_room(b, data, header), candidate_configs())
        pred = fixed + sum(group_bytes(g, alloc[g.key]) for g in shapes)
        share = {}
        for g in shapes:
            share[alloc[g.key].name] = share.get(alloc[g.key].name, 0) + g.weights
        tot = sum(share.values())
        rows.append({"budget": b, "predicted_bytes": pred, "fill": round(pred / b, 5),
                     "mean_bits": round(mean_bits(shapes, alloc), 4),
                     "weight_share": {k: round(v / tot, 4) for k, v in sorted(share.items())}})
        print(json.dumps(rows[-1]), flush=True)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"uniform_bytes": uni, "rows": rows}, indent=1))
    print(f"\nuniform sizes: " + ", ".join(f"{k} {v:,}" for k, v in uni.items()))
    print(f"{'budget':>13} {'predicted':>13} {'fill':>7} {'mean bits':>9}")
    for r in rows:
        print(f"{r['budget']:>13,} {r['predicted_bytes']:>13,} {r['fill']:>7.4f} {r['mean_bits']:>9.3f}")


if __name__ == "__main__":
    main()

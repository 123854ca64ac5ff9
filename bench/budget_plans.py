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
    from liftexport.budget import group_bytes, group_shapes, parse_size, plan_allocation
    from liftexport.lattice.config import LatticeConfig
    from liftexport.models.load import ModelSource

    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=None)
    ap.add_argument("--budgets", default="")
    ap.add_argument("--json", default="bench/results/budget_plans.json")
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    src = ModelSource(a.src)
    first = plan_allocation(src, match=LatticeConfig(24, 10), device=dev, progress=False)
    sens = {g["group"]: g["sensitivity"] for g in first["groups"]}  # measured once, re-used below
    shapes = group_shapes(src)
    uni = {c: first["fixed_bytes"] + sum(group_bytes(g, LatticeConfig.parse(c)) for g in shapes)
           for c in ("32/16", "24/10", "24/8")}
    budgets = [parse_size(b) for b in a.budgets.split(",") if b] or [
        int(uni["32/16"] + f * (uni["24/8"] - uni["32/16"])) for f in (0.25, 0.5, 0.75)]
    rows = []
    for b in budgets:
        plan = plan_allocation(src, target_bytes=b, device=dev, progress=False, sens=sens)
        share: dict[str, int] = {}
        for g in plan["groups"]:
            share[g["config"]] = share.get(g["config"], 0) + g["weights"]
        tot = sum(share.values())
        rows.append({"budget": b, "predicted_bytes": plan["predicted_bytes"],
                     "fill": round(plan["predicted_bytes"] / b, 5), "mean_bits": round(plan["mean_bits"], 4),
                     "weight_share": {k: round(v / tot, 4) for k, v in sorted(share.items())}})
        print(json.dumps(rows[-1]), flush=True)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"uniform_bytes": uni, "rows": rows}, indent=1))
    print("\nuniform sizes: " + ", ".join(f"{k} {v:,}" for k, v in uni.items()))
    print(f"{'budget':>13} {'predicted':>13} {'fill':>7} {'mean bits':>9}")
    for r in rows:
        print(f"{r['budget']:>13,} {r['predicted_bytes']:>13,} {r['fill']:>7.4f} {r['mean_bits']:>9.3f}")


if __name__ == "__main__":
    main()

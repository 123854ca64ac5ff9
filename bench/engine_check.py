"""The CUDA engine on a real artifact: logits and greedy tokens against the float32 reference runtime.

    python bench/engine_check.py ART.lqt [ART2 ...] [--tokens 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import torch

from liftexport.formats.container import read_container
from liftexport.verify import verify_engine


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("arts", nargs="+")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rows = []
    for art in a.arts:
        ir = read_container(art)
        for dt in (torch.float32, torch.float16, torch.bfloat16):
            r = verify_engine(ir, a.tokens, dtype=dt)
            r["artifact"] = art
            rows.append(r)
            print(json.dumps(r), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

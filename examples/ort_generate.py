"""A stand-alone "other app": generate text from a liftexport ONNX export with ONNX Runtime.

Uses only onnxruntime, numpy and tokenizers (no liftexport import):

    python examples/ort_generate.py out/model-onnx --lib build/ort/libliftquant_ort.so \\
        --prompt "The quick brown fox" --max-new-tokens 32

The export directory holds model.onnx (+ .data), tokenizer.json and liftquant_model.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--lib", help="path to libliftquant_ort.so (needed for ops=custom exports)")
    ap.add_argument("--prompt", default="Once upon a time")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    a = ap.parse_args()
    d = Path(a.model_dir)
    desc = json.loads((d / "liftquant_model.json").read_text())
    so = ort.SessionOptions()
    if desc["ops"] == "custom":
        if not a.lib:
            print("this export uses the ai.liftquant custom op: pass --lib", file=sys.stderr)
            return 2
        so.register_custom_ops_library(a.lib)
    sess = ort.InferenceSession(str(d / "model.onnx"), so, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    ids = tok.encode(a.prompt).ids
    L, nkv, hd = desc["num_layers"], desc["num_key_value_heads"], desc["head_dim"]
    past = {f"past_key_values.{i}.{kv}": np.zeros((1, nkv, 0, hd), np.float32) for i in range(L) for kv in ("key", "value")}
    eos = desc.get("eos_token_id")
    eos = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
    out_ids: list[int] = []
    step = np.array([ids], dtype=np.int64)
    total = 0
    sys.stdout.write(a.prompt)
    for _ in range(a.max_new_tokens):
        n = step.shape[1]
        feed = {"input_ids": step, "attention_mask": np.ones((1, total + n), np.int64),
                "position_ids": np.arange(total, total + n, dtype=np.int64)[None]}
        feed.update(past)
        outs = sess.run(None, feed)
        total += n
        past = {f"past_key_values.{i}.{kv}": outs[1 + 2 * i + (kv == "value")] for i in range(L) for kv in ("key", "value")}
        nxt = int(outs[0][0, -1].argmax())
        if nxt in eos:
            break
        out_ids.append(nxt)
        sys.stdout.write(tok.decode(out_ids[-1:]))
        sys.stdout.flush()
        step = np.array([[nxt]], dtype=np.int64)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

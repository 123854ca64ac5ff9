"""ONNX Runtime helpers: the custom-op library's path, sessions with it registered, and a
causal-LM wrapper so exported models run through the same eval/verify code as everything else."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from .errors import FormatError, LiftExportError

LIB_NAME = "libliftquant_ort.so"


def library_path() -> Path:
    """The built custom-op library ($LIFTEXPORT_ORT_LIB, else build/ort/ of the source tree)."""
    env = os.environ.get("LIFTEXPORT_ORT_LIB")
    cands = [Path(env)] if env else []
    cands.append(Path(__file__).resolve().parents[1] / "build" / "ort" / LIB_NAME)
    for p in cands:
        if p.is_file():
            return p
    raise LiftExportError(f"{LIB_NAME} not found (run ./install.sh, or set LIFTEXPORT_ORT_LIB)")


def session(model_path: str | os.PathLike, providers=None, custom_ops: bool = True, threads: int | None = None,
            **opts):
    """An InferenceSession for ``model_path`` with the LiftMatMul library registered."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    for k, v in opts.items():
        setattr(so, k, v)
    if custom_ops:
        so.register_custom_ops_library(str(library_path()))
    return ort.InferenceSession(str(model_path), so, providers=providers or ["CPUExecutionProvider"])


class OrtCausalLM:
    """Calls an exported decoder like a transformers causal LM: model(input_ids, past_key_values, use_cache)."""

    def __init__(self, model_dir: str | os.PathLike, providers=None):
        import json

        model_dir = Path(model_dir)
        desc_p = model_dir / "liftquant_model.json"
        if not desc_p.is_file():
            raise FormatError(f"{model_dir}: no liftquant_model.json (not a liftexport ONNX export)")
        self.desc = json.loads(desc_p.read_text())
        self.sess = session(model_dir / "model.onnx", providers, custom_ops=self.desc.get("ops") == "custom")
        self.L = self.desc["num_layers"]
        self.nkv = self.desc["num_key_value_heads"]
        self.hd = self.desc["head_dim"]

    def __call__(self, input_ids, past_key_values=None, use_cache=False, **_):
        ids = input_ids.cpu().numpy().astype(np.int64)
        b, s = ids.shape
        if past_key_values is None:
            past_key_values = [(np.zeros((b, self.nkv, 0, self.hd), np.float32),) * 2 for _ in range(self.L)]
        past_len = past_key_values[0][0].shape[2]
        feed = {"input_ids": ids, "attention_mask": np.ones((b, past_len + s), np.int64),
                "position_ids": np.broadcast_to(np.arange(past_len, past_len + s, dtype=np.int64), (b, s)).copy()}
        for i, (k, v) in enumerate(past_key_values):
            feed[f"past_key_values.{i}.key"] = k
            feed[f"past_key_values.{i}.value"] = v
        outs = self.sess.run(None, feed)
        present = [(outs[1 + 2 * i], outs[2 + 2 * i]) for i in range(self.L)]
        return SimpleNamespace(logits=torch.from_numpy(outs[0]), past_key_values=present)

    def to(self, *_a, **_k):
        return self

    def eval(self):
        return self

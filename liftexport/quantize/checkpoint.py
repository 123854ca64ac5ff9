"""Checkpoints of a running quantization, so a killed run resumes from the last finished block.

A checkpoint directory holds ``state.json`` (the options key and the last finished block),
``block_NNNN.lqt`` (that block's IR entries, in the container format) and ``acts.safetensors``
(the calibration tokens and the activations entering the next block). Each file is written
atomically and state.json last, so a kill at any point leaves a consistent checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import LiftExportError
from ..ir import QuantizedModel


class Checkpoint:
    def __init__(self, root: Path, key: dict, done: int):
        self.root, self.key, self.done = root, key, done

    @classmethod
    def open(cls, root, key: dict) -> "Checkpoint":
        from liftexport.formats.container import atomic_write

        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        state = root / "state.json"
        key = json.loads(json.dumps(key, default=str))
        if state.is_file():
            s = json.loads(state.read_text())
            if s.get("key") == key:
                return cls(root, key, int(s["done"]))
            for p in root.glob("block_*.lqt"):  # a different run: start over
                p.unlink()
        atomic_write(state, lambda tmp: Path(tmp).write_text(json.dumps({"key": key, "done": -1})))
        return cls(root, key, -1)

    def save_block(self, i: int, ir: QuantizedModel, rows: list[dict], tokens, X) -> None:
        from liftexport.formats.container import atomic_write, write_container

        part = QuantizedModel(config=ir.config, tokenizer={}, meta={"report": rows})
        prefix_keys = [k for k in ir.linears if _block_of(k) == i]
        for k in prefix_keys:
            part.linears[k] = ir.linears[k]
            tk = getattr(ir.linears[k], "transform", None)
            if tk is not None:
                part.transforms[tk] = ir.transforms[tk]
        part.kept = {k: v for k, v in ir.kept.items() if _block_of(k) == i}
        write_container(part, self.root / f"block_{i:04d}.lqt")
        acts = {"tokens": tokens.contiguous().cpu(), "X": X.detach().float().contiguous().cpu()}
        atomic_write(self.root / "acts.safetensors", lambda tmp: save_file(acts, tmp))
        atomic_write(self.root / "state.json",
                     lambda tmp: Path(tmp).write_text(json.dumps({"key": self.key, "done": i})))
        self.done = i

    def load_activations(self):
        t = load_file(str(self.root / "acts.safetensors"))
        return t["tokens"], t["X"]

    def load_blocks_into(self, ir: QuantizedModel, report: list) -> None:
        from liftexport.formats.container import read_container

        for i in range(self.done + 1):
            p = self.root / f"block_{i:04d}.lqt"
            if not p.is_file():
                raise LiftExportError(f"checkpoint {self.root}: {p.name} missing; delete the directory to restart")
            part = read_container(p)
            ir.transforms.update(part.transforms)
            ir.linears.update(part.linears)
            ir.kept.update(part.kept)
            report.extend(part.meta.get("report", []))

    def remove(self) -> None:
        for p in self.root.iterdir():
            p.unlink()
        self.root.rmdir()


def _block_of(name: str) -> int | None:
    parts = name.split(".")
    for a, b in zip(parts, parts[1:]):
        if a == "layers" and b.isdigit():
            return int(b)
    return None

"""Artifact formats: one writer + reader of the IR per format (container, ONNX, GGUF)."""

from __future__ import annotations

from pathlib import Path


def read_artifact(path):
    """The IR of a .lqt container or a LiftQuant .gguf file."""
    p = Path(path)
    if p.suffix.lower() == ".gguf":
        from .gguf import read_gguf

        return read_gguf(p)
    from .container import read_container

    return read_container(p)

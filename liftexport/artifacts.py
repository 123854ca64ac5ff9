"""Open whatever a user points at (container, LiftQuant GGUF, ONNX export, HF dir, GGUF, the example
model) as an executable causal LM with its tokenizer; shared by the CLI, verify and sweep."""

from __future__ import annotations

from pathlib import Path


def holds_ir(p: Path) -> bool:
    """True for files that carry a quantized IR: a .lqt container or a LiftQuant .gguf."""
    if p.suffix == ".lqt":
        return True
    if p.suffix.lower() != ".gguf" or not p.is_file():
        return False
    from .formats.gguf import is_liftquant_gguf

    return is_liftquant_gguf(p)


def load_artifact(src: str | None, device: str = "cpu"):
    """(model, tokenizer, description) for an artifact (.lqt), a GGUF file, an HF dir or the default."""
    p = Path(src) if src else None
    if p is not None and p.is_dir() and (p / "liftquant_model.json").is_file():
        from transformers import AutoTokenizer

        from .ort import OrtCausalLM

        return OrtCausalLM(p), AutoTokenizer.from_pretrained(p), {"kind": "onnx"}
    if p is not None and holds_ir(p):
        from .formats import read_artifact
        from .runtime.reference import build_model, build_tokenizer

        ir = read_artifact(p)
        return build_model(ir, device), build_tokenizer(ir), {"kind": p.suffix.lstrip("."), "meta": ir.meta}
    from .models.load import ModelSource

    ms = ModelSource(p)
    return ms.full_model().to(device), ms.tokenizer, {"kind": ms.kind}

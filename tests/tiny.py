"""Tiny random-init models of every supported family, saved as HF directories (for structure tests)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
import transformers

COMMON = dict(vocab_size=49152, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)

CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(**COMMON),
    "mistral": lambda: transformers.MistralConfig(**COMMON),
    "qwen2": lambda: transformers.Qwen2Config(**COMMON),
    "qwen3": lambda: transformers.Qwen3Config(head_dim=16, **COMMON),
    "gemma2": lambda: transformers.Gemma2Config(head_dim=16, sliding_window=32, **COMMON),
    "gemma3_text": lambda: transformers.Gemma3TextConfig(head_dim=16, sliding_window=32, **COMMON),
}


@lru_cache(maxsize=None)
def _tokenizer():
    from liftexport.models.load import ModelSource

    return ModelSource().tokenizer


def make_tiny(family: str, root: Path, seed: int = 0, dtype=torch.float32) -> Path:
    out = Path(root) / family
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(seed)
    cfg = CONFIGS[family]()
    model = transformers.AutoModelForCausalLM.from_config(cfg).to(dtype)
    with torch.no_grad():  # random init is tiny; scale up so the layers matter
        for name, p in model.named_parameters():
            if p.ndim == 2 and "embed" not in name:
                p.mul_(8.0)
    model.save_pretrained(out)
    _tokenizer().save_pretrained(out)
    return out

"""The project's one evaluation protocol (every perplexity in bench/RESULTS.md comes from here).

Tokenize the text with the model's tokenizer (no special tokens), take the first 40,960 tokens,
split them into 80 non-overlapping windows of 512, and average the next-token NLL over the 511
predicted positions of each window; PPL = exp(mean NLL over all 80 x 511 predictions).
"""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

from .calibrate import read_texts
from .errors import ConfigError

EVAL_TOKENS = 40_960
WINDOW = 512


def eval_windows(tokenizer, files, n_tokens: int = EVAL_TOKENS, window: int = WINDOW) -> torch.Tensor:
    ids = tokenizer(read_texts(files), add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    if ids.numel() < n_tokens:
        raise ConfigError(f"evaluation text has {ids.numel()} tokens; the protocol needs {n_tokens}")
    return ids[:n_tokens].view(-1, window)


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, batch: int = 8, device: str = "cpu", progress: bool = True) -> dict:
    """Mean NLL and perplexity of a causal LM (anything returning ``.logits``) over the windows."""
    total, count = 0.0, 0
    for b0 in tqdm(range(0, windows.shape[0], batch), desc="eval", disable=not progress, unit="batch"):
        ids = windows[b0 : b0 + batch].to(device)
        logits = model(input_ids=ids).logits.float()
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
        )
        total += float(nll)
        count += ids[:, 1:].numel()
    mean = total / count
    return {"nll": mean, "ppl": math.exp(mean), "tokens": int(windows.numel()), "windows": int(windows.shape[0]),
            "predicted": count}

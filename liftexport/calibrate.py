"""Calibration batches: windows of user text, or sequences sampled from the full-precision model.

Both are deterministic given the seed. The default (no text) needs no external data: it samples
``n`` sequences from the model itself, starting from its BOS token, by plain sampling at
temperature 1 (on the example model it beat nucleus sampling with top-p 0.95, a hotter temperature
and random first tokens: bench/RESULTS.md). Those knobs stay available as arguments.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from .errors import ConfigError


def read_texts(files) -> str:
    parts = []
    for f in files:
        p = Path(f)
        try:
            parts.append(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such text file") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not UTF-8 text ({e})") from None
    return "\n\n".join(parts)


def text_windows(tokenizer, files, n_seq: int, seq_len: int, seed: int) -> torch.Tensor:
    """``n_seq`` windows of ``seq_len`` tokens at seeded random offsets of the files' token stream."""
    ids = tokenizer(read_texts(files), add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    if ids.numel() < seq_len + 1:
        raise ConfigError(f"calibration text has {ids.numel()} tokens, fewer than --calib-seq-len {seq_len}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len, (n_seq,), generator=g)
    return torch.stack([ids[s : s + seq_len] for s in starts.tolist()])


@torch.no_grad()
def self_generated(model, tokenizer, n_seq: int, seq_len: int, seed: int, batch: int = 64,
                   top_p: float = 1.0, temperature: float = 1.0, first: str = "bos", device: str = "cpu",
                   progress: bool = True) -> torch.Tensor:
    """``n_seq`` sequences of ``seq_len`` tokens sampled from ``model`` (BOS-started, seeded).

    ``first="random"``: the token after BOS is drawn uniformly from the non-special vocabulary.
    """
    if first not in ("bos", "random"):
        raise ConfigError(f"calibration first token {first!r}: expected 'bos' or 'random'")
    bos = tokenizer.bos_token_id
    if bos is None:
        bos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    g = torch.Generator(device=device).manual_seed(seed)
    if first == "random":
        special = set(tokenizer.all_special_ids)
        vocab = torch.tensor([i for i in range(len(tokenizer)) if i not in special], device=device)
    out = []
    bar = tqdm(total=n_seq * (seq_len - 1), desc="sampling calibration", unit="tok", disable=not progress)
    for b0 in range(0, n_seq, batch):
        nb = min(batch, n_seq - b0)
        ids = torch.full((nb, 1), bos, dtype=torch.long, device=device)
        if first == "random":
            pick = torch.randint(0, vocab.numel(), (nb, 1), generator=g, device=device)
            ids = torch.cat([ids, vocab[pick]], 1)
            bar.update(nb)
        past = None
        cur = ids
        while ids.shape[1] < seq_len:
            o = model(input_ids=cur, past_key_values=past, use_cache=True)
            past = o.past_key_values
            probs = torch.softmax(o.logits[:, -1].float() / temperature, -1)
            sp, si = probs.sort(-1, descending=True)
            keep = sp.cumsum(-1) - sp < top_p
            sp = torch.where(keep, sp, torch.zeros_like(sp))
            nxt = si.gather(1, torch.multinomial(sp, 1, generator=g))
            ids = torch.cat([ids, nxt], 1)
            cur = nxt
            bar.update(nb)
        out.append(ids.cpu())
    bar.close()
    return torch.cat(out)

"""Calibration batches: windows of user text, or sequences sampled from the full-precision model.

Both are deterministic given the seed. The default (no text) needs no external data: it samples
``n`` sequences from the model itself, starting from its BOS token, by plain sampling at
temperature 1 (on the example model it beat nucleus sampling with top-p 0.95, a hotter or cooler
temperature, random first tokens and prompting with generic writing requests: bench/RESULTS.md).
Those knobs stay available as arguments.
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


# Generic writing requests for first="prompts": many genres and registers, no particular domain.
WRITING_PROMPTS = (
    "Write a short story about a family that moves to a new town.",
    "Write the opening chapter of a novel.",
    "Write a long letter to an old friend about what has happened this year.",
    "Write a dialogue between two people who disagree about an important decision.",
    "Write a news report about a flood in a small town.",
    "Explain how the human heart works.",
    "Write an essay on whether money brings happiness.",
    "Describe a walk through a city market on a busy morning.",
    "Tell the history of the printing press.",
    "Write a fairy tale about a clever servant and a proud king.",
    "Write a poem about the sea in winter.",
    "Explain to a beginner how to write a function in Python that sorts a list.",
    "Write a speech for the opening of a new school library.",
    "Write a biography of an inventor.",
    "Write a diary entry of a traveller crossing the mountains.",
    "Write a recipe for bread and explain each step.",
    "Describe the character of a proud but generous woman, in the style of a classic novel.",
    "Write a scene at a dinner party where a secret is revealed.",
    "Summarise the causes of the First World War.",
    "Write a product review of a pair of walking boots.",
    "Explain the theory of evolution in simple terms.",
    "Write a formal complaint to a landlord about a leaking roof.",
    "Write a mystery story set in a country house.",
    "Write a conversation between a doctor and a worried patient.",
    "Write a philosophical reflection on friendship.",
    "Describe a football match from the point of view of a fan.",
    "Write a travel guide to a seaside village.",
    "Write a chapter in which two sisters talk about marriage.",
    "Explain how a bank loan works and what interest is.",
    "Write a legend about the origin of a river.",
    "Write a newspaper editorial about public transport.",
    "Write a love story told in letters.",
)


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt as the model would see it in use: its chat template when it has one, else plain text."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + tokenizer(prompt + "\n\n", add_special_tokens=False)["input_ids"]


@torch.no_grad()
def self_generated(model, tokenizer, n_seq: int, seq_len: int, seed: int, batch: int = 64,
                   top_p: float = 1.0, temperature: float = 1.0, first: str = "bos", device: str = "cpu",
                   progress: bool = True) -> torch.Tensor:
    """``n_seq`` sequences of ``seq_len`` tokens sampled from ``model`` (seeded).

    ``first="bos"``: sampling starts from BOS alone. ``first="random"``: the token after BOS is drawn
    uniformly from the non-special vocabulary. ``first="prompts"``: each sequence starts from one of
    WRITING_PROMPTS (seeded order; through the chat template when the tokenizer has one) and keeps its
    prompt tokens.
    """
    if first not in ("bos", "random", "prompts"):
        raise ConfigError(f"calibration start {first!r}: expected 'bos', 'random' or 'prompts'")
    if first == "prompts":
        return _prompted(model, tokenizer, n_seq, seq_len, seed, batch, top_p, temperature, device, progress)
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
            nxt = _sample(o.logits[:, -1], temperature, top_p, g)
            ids = torch.cat([ids, nxt], 1)
            cur = nxt
            bar.update(nb)
        out.append(ids.cpu())
    bar.close()
    return torch.cat(out)


def _sample(logits: torch.Tensor, temperature: float, top_p: float, g: torch.Generator) -> torch.Tensor:
    probs = torch.softmax(logits.float() / temperature, -1)
    sp, si = probs.sort(-1, descending=True)
    keep = sp.cumsum(-1) - sp < top_p
    sp = torch.where(keep, sp, torch.zeros_like(sp))
    return si.gather(1, torch.multinomial(sp, 1, generator=g))


@torch.no_grad()
def _prompted(model, tokenizer, n_seq, seq_len, seed, batch, top_p, temperature, device, progress) -> torch.Tensor:
    """first="prompts": left-padded prompt batches, sampled until every row has seq_len real tokens."""
    g = torch.Generator(device=device).manual_seed(seed)
    order = torch.randperm(len(WRITING_PROMPTS), generator=torch.Generator().manual_seed(seed)).tolist()
    prompts = [_prompt_ids(tokenizer, WRITING_PROMPTS[order[i % len(order)]])[: seq_len - 1] for i in range(n_seq)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    bar = tqdm(total=n_seq * seq_len, desc="sampling calibration", unit="tok", disable=not progress)
    for b0 in range(0, n_seq, batch):
        rows = prompts[b0 : b0 + batch]
        width = max(map(len, rows))
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        bar.update(sum(map(len, rows)))
        steps = seq_len - min(map(len, rows))  # the shortest prompt's row needs the most new tokens
        past, cur = None, ids
        for _ in range(steps):
            pos = (mask.cumsum(1) - 1).clamp(min=0)[:, -cur.shape[1]:]
            o = model(input_ids=cur, attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True)
            past = o.past_key_values
            cur = _sample(o.logits[:, -1], temperature, top_p, g)
            ids = torch.cat([ids, cur], 1)
            mask = torch.cat([mask, torch.ones_like(cur)], 1)
            bar.update(len(rows))
        for r, m in zip(ids, mask):
            out.append(r[m.bool()][:seq_len].cpu())
    bar.close()
    return torch.stack(out)

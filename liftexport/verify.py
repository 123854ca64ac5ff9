"""Compare two executable models on a fixed prompt set: logits and greedy continuations."""

from __future__ import annotations

import torch

PROMPTS = (
    "The quick brown fox",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):",
    "The capital of France is",
)


@torch.no_grad()
def compare_models(a, b, tokenizer, n_tokens: int = 32, prompts=PROMPTS) -> dict:
    """a, b: callables like HF causal LMs. Relative error = max|la - lb| / max|lb| per prompt."""
    worst, agree, total = 0.0, 0, 0
    for p in prompts:
        ids = tokenizer(p, return_tensors="pt")["input_ids"]
        la = a(input_ids=ids).logits.float()
        lb = b(input_ids=ids).logits.float()
        worst = max(worst, float((la - lb).abs().max() / lb.abs().max().clamp_min(1e-30)))
        ga, gb = greedy(a, ids, n_tokens), greedy(b, ids, n_tokens)
        agree += int((ga == gb).sum())
        total += n_tokens
    return {"max_rel_logit_err": worst, "greedy_agree": agree, "greedy_total": total,
            "greedy_identical": agree == total, "prompts": len(prompts)}


@torch.no_grad()
def greedy(model, ids: torch.Tensor, n: int) -> torch.Tensor:
    """n greedy tokens with a KV cache (works for HF models and runtimes with the same interface)."""
    out = model(input_ids=ids, use_cache=True)
    past = out.past_key_values
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    toks = [nxt]
    for _ in range(n - 1):
        out = model(input_ids=nxt, past_key_values=past, use_cache=True)
        past = out.past_key_values
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        toks.append(nxt)
    return torch.cat(toks, 1)[0]


def verify(art: str, ref: str, n_tokens: int = 32) -> dict:
    from .cli import load_artifact

    a, tok, _ = load_artifact(art)
    b, _, _ = load_artifact(ref)
    res = compare_models(a, b, tok, n_tokens)
    res.update(artifact=art, reference=ref)
    return res

"""Compare two executable models on a fixed prompt set: logits and greedy continuations."""

from __future__ import annotations

import torch

from .artifacts import load_artifact

PROMPTS = (
    "The quick brown fox",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):",
    "The capital of France is",
)


@torch.no_grad()
def _rel_err(la: torch.Tensor, lb: torch.Tensor) -> float:
    """max|la - lb| / max|lb|: the relative logit error of every check here."""
    return float((la - lb).abs().max() / lb.abs().max().clamp_min(1e-30))


def compare_models(a, b, tokenizer, n_tokens: int = 32, prompts=PROMPTS) -> dict:
    """a, b: callables like HF causal LMs. Relative error = max|la - lb| / max|lb| per prompt."""
    worst, agree, total = 0.0, 0, 0
    da, db = _device_of(a), _device_of(b)
    for p in prompts:
        ids = tokenizer(p, return_tensors="pt")["input_ids"]
        la = a(input_ids=ids.to(da)).logits.float().cpu()
        lb = b(input_ids=ids.to(db)).logits.float().cpu()
        worst = max(worst, _rel_err(la, lb))
        ga, gb = greedy(a, ids.to(da), n_tokens).cpu(), greedy(b, ids.to(db), n_tokens).cpu()
        agree += int((ga == gb).sum())
        total += n_tokens
    return {"max_rel_logit_err": worst, "greedy_agree": agree, "greedy_total": total,
            "greedy_identical": agree == total, "prompts": len(prompts)}


def _device_of(model) -> torch.device:
    """Where a torch model's tensors live (CPU for anything else, e.g. an ONNX Runtime wrapper)."""
    for t in (getattr(model, "parameters", lambda: iter(()))(), getattr(model, "buffers", lambda: iter(()))()):
        for x in t:
            return x.device
    return torch.device("cpu")


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
    a, tok, _ = load_artifact(art)
    b, _, _ = load_artifact(ref)
    res = compare_models(a, b, tok, n_tokens)
    res.update(artifact=art, reference=ref)
    return res


#: Largest max-relative logit error an export may show against the in-memory model.
TOLERANCE = {"lqt": 1e-5, "gguf": 1e-5, "onnx": 1e-4}


def verify_export(ir, out, fmt: str, n_tokens: int = 32) -> dict:
    """Check a written artifact against the in-memory quantized model it came from."""
    from .runtime.reference import build_model, build_tokenizer

    # both torch models on the GPU when there is one (same math, so the same results); ONNX Runtime
    # runs on the CPU here, so its reference does too
    device = "cuda" if fmt != "onnx" and torch.cuda.is_available() else "cpu"
    ref = build_model(ir, device)
    tok = build_tokenizer(ir)
    if fmt == "onnx":
        from .ort import OrtCausalLM

        got = OrtCausalLM(out)
    else:
        from .formats import read_artifact

        got = build_model(read_artifact(out), device)
    res = compare_models(got, ref, tok, n_tokens)
    res["tolerance"] = TOLERANCE[fmt]
    res["ok"] = bool(res["greedy_identical"] and res["max_rel_logit_err"] <= TOLERANCE[fmt])
    return res


STEP_CHECK = 4  # decode steps whose logits verify_engine compares


@torch.no_grad()
def verify_engine(ir, n_tokens: int = 32, dtype=torch.float16, device="cuda", prompts=PROMPTS) -> dict:
    """The CUDA engine (Triton kernels, fp16/bf16, graph-captured decode) against the float32 reference.

    Relative error = max|la - lb| / max|lb| over the prompt's last-position logits (the prefill path) and,
    separately, over the logits of the first ``STEP_CHECK`` decode steps (the graph-captured decode path:
    on CUDA the binary GEMV and the decode-attention kernel) fed the reference's greedy tokens; greedy
    tokens of the engine against the reference's greedy continuation with a KV cache.
    """
    from .runtime.engine import engine_from_ir
    from .runtime.reference import build_model, build_tokenizer

    tok = build_tokenizer(ir)
    ref = build_model(ir, device=device)
    eng = engine_from_ir(ir, device=device, dtype=dtype, max_len=256)
    worst, worst_step, agree, total, first_diff = 0.0, 0.0, 0, 0, []
    for p in prompts:
        ids = tok(p, return_tensors="pt")["input_ids"].to(device)
        T = ids.shape[1]
        lb = ref(input_ids=ids).logits[0, -1].float()
        la = eng.prefill(ids)[0]
        worst = max(worst, _rel_err(la, lb))
        gb = greedy(ref, ids, n_tokens)
        k = min(STEP_CHECK, n_tokens)
        full = ref(input_ids=torch.cat([ids[0], gb[:k]])[None]).logits[0].float()
        for j in range(k):
            worst_step = max(worst_step, _rel_err(eng.step(gb[j].view(1, 1), T + j)[0], full[T + j]))
        ga = eng.generate(ids, n_tokens)[0]
        same = (ga == gb)
        agree += int(same.sum())
        total += n_tokens
        first_diff.append(int((~same).nonzero()[0, 0]) if not same.all() else None)
    return {"max_rel_logit_err": worst, "max_rel_step_logit_err": worst_step, "greedy_agree": agree,
            "greedy_total": total, "greedy_identical": agree == total, "first_divergence": first_diff,
            "dtype": str(dtype)}

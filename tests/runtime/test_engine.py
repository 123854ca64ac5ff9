"""The decode engine (own forward, static cache) against transformers on the same weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from liftexport.errors import UnsupportedModelError
from liftexport.formats.container import read_container
from liftexport.runtime.engine import DecoderEngine, dense_groups, engine_from_ir
from liftexport.runtime.reference import build_model

VEC = Path(__file__).resolve().parents[2] / "spec" / "vectors" / "tiny_model.lqt"
SMALL = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256)


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def _hf_parts(cfg):
    """A random-init transformers model of cfg and its weights split as the engine takes them: linear
    weights, linear biases, kept tensors."""
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    sd = model.state_dict()
    lin = {k[: -len(".weight")]: v for k, v in sd.items() if k.endswith("_proj.weight")}
    bias = {k[: -len(".bias")]: v for k, v in sd.items() if k.endswith("_proj.bias")}
    kept = {k: v for k, v in sd.items() if "_proj." not in k}
    return model, lin, bias, kept


def test_lifted_engine_matches_reference_runtime():
    ir = read_container(VEC)
    ref = build_model(ir)
    eng = engine_from_ir(ir, device="cpu", dtype=torch.float32, max_len=48)
    ids = torch.randint(0, ir.config["vocab_size"], (1, 11))
    with torch.no_grad():
        want = ref(ids).logits[0, -1]
    assert rel(eng.prefill(ids)[0], want) < 1e-4
    new = eng.generate(ids, 8)
    hf = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert torch.equal(new, hf[:, 11:])


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3"])
def test_dense_engine_matches_transformers(family):
    cfg = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
           "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config}[family](**SMALL)
    model, lin, bias, kept = _hf_parts(cfg)
    eng = DecoderEngine(cfg.to_dict(), kept, dense_groups(lin, cfg.num_hidden_layers, bias), dtype=torch.float32,
                        device="cpu", max_len=40)
    ids = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        full = model(torch.cat([ids, torch.tensor([[5, 7]])], 1)).logits[0]
    assert rel(eng.prefill(ids)[0], full[8]) < 1e-5
    assert rel(eng.step(torch.tensor([[5]]), 9)[0], full[9]) < 1e-5  # one cached decode step
    assert rel(eng.step(torch.tensor([[7]]), 10)[0], full[10]) < 1e-5


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_fused_decode_attention_matches_transformers(family):
    """Decode steps through kernels/triton/decode_attention (the CUDA default; here in Triton's
    interpreter), batch 2, grouped-query heads, against transformers and the torch path."""
    cfg = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[family](**SMALL)
    model, lin, bias, kept = _hf_parts(cfg)
    ids = torch.randint(0, 300, (2, 9))
    nxt = torch.tensor([[5, 7], [11, 13]])
    with torch.no_grad():
        full = model(torch.cat([ids, nxt], 1)).logits
    logits = {}
    for fused in (False, True):
        eng = DecoderEngine(cfg.to_dict(), kept, dense_groups(lin, cfg.num_hidden_layers, bias),
                            dtype=torch.float32, device="cpu", max_len=40, batch=2)
        eng.fused_attention = fused
        eng.prefill(ids)
        logits[fused] = [eng.step(nxt[:, :1], 9).clone(), eng.step(nxt[:, 1:], 10).clone()]
        assert rel(logits[fused][0], full[:, 9]) < 1e-5 and rel(logits[fused][1], full[:, 10]) < 1e-5
    assert rel(logits[True][1], logits[False][1]) < 1e-6


def test_engine_rejects_other_families():
    cfg = transformers.Gemma2Config(head_dim=16, **SMALL).to_dict()
    with pytest.raises(UnsupportedModelError, match="CUDA engine runs"):
        DecoderEngine(cfg, {}, {}, device="cpu")


def test_graph_warmup_leaves_the_prompt_cache_alone():
    """capture() runs warm-up steps; they must not overwrite cache slots the prompt filled."""
    ir = read_container(VEC)
    eng = engine_from_ir(ir, device="cpu", dtype=torch.float32, max_len=48)
    ids = torch.randint(0, ir.config["vocab_size"], (1, 7))
    eng.prefill(ids)
    before = eng.k_cache[:, :, :, :7].clone()
    eng._tok = torch.zeros(1, 1, dtype=torch.long)
    eng._pos = torch.full((1,), eng.max_len - 1, dtype=torch.long)  # what capture() uses for its warm-up
    eng.forward(eng._tok, eng._pos)
    assert torch.equal(eng.k_cache[:, :, :, :7], before)


def test_verify_engine_checks_decode_steps():
    """verify_engine compares prefill and decode-step logits and greedy tokens (CPU engine here)."""
    from liftexport.verify import verify_engine

    res = verify_engine(read_container(VEC), 4, dtype=torch.float32, device="cpu", prompts=["Hello there", "A b c"])
    assert res["greedy_identical"], res
    assert 0.0 < res["max_rel_step_logit_err"] < 1e-4 and res["max_rel_logit_err"] < 1e-4, res


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_verify_engine_on_cuda():
    """The CUDA engine in fp16 (binary route or Triton GEMVs, one-launch decode attention with its counters,
    programmatic dependent launch on sm_90, graph-captured decode steps) against the float32 reference."""
    from liftexport.verify import verify_engine

    res = verify_engine(read_container(VEC), 12, dtype=torch.float16, device="cuda", prompts=["Hello there", "A b c"])
    assert res["max_rel_step_logit_err"] < 1e-2 and res["max_rel_logit_err"] < 1e-2, res
    assert res["greedy_identical"], res

"""End-to-end distillation after the block pass (liftexport/quantize/distill.py) on a tiny model."""

import pytest
import torch

from liftexport.errors import ConfigError
from liftexport.formats.container import read_container, write_container
from liftexport.models.load import ModelSource
from liftexport.quantize import distill as e2e
from liftexport.quantize.pipeline import QuantizeOptions, calibration_tokens, quantize_model
from liftexport.runtime.reference import build_model

from tiny import make_tiny

FAST = dict(calib_tokens=512, calib_seq_len=64, correction_steps=4, correction_batch=2, progress=False)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return ModelSource(make_tiny("llama", tmp_path_factory.mktemp("tiny")))


def _kl(model, teacher, ids):
    with torch.no_grad():
        return float(e2e._kl(model(input_ids=ids).logits, teacher(input_ids=ids).logits))


def test_distillation_lowers_held_out_kl_of_the_ir(src, tmp_path):
    """The reported held-out KL is the IR's own (recomputed through the reference runtime and the
    container), and it is lower than without the pass; only scales and norms change."""
    opts = QuantizeOptions(bits=2.4, distill_steps=60, distill_lr=3e-3, **FAST)
    ir, _ = quantize_model(src, opts)
    base, _ = quantize_model(src, QuantizeOptions(bits=2.4, distill_steps=0, **FAST))
    s = ir.meta["distill"]
    assert s["steps"] == 60 and s["held_out_sequences"] == 1 and base.meta["distill"] == {"steps": 0}
    hold = calibration_tokens(src, opts, "cpu")[-1:]
    teacher = src.full_model()
    back = build_model(read_container(write_container(ir, tmp_path / "d.lqt")))
    kl_ir, kl_base = _kl(back, teacher, hold), _kl(build_model(base), teacher, hold)
    assert kl_ir == pytest.approx(s["held_out_kl_after"], rel=0.02)
    assert kl_base == pytest.approx(s["held_out_kl_before"], rel=1e-3)
    assert kl_ir < 0.97 * kl_base, (kl_ir, kl_base)
    name = "model.layers.0.self_attn.q_proj"
    assert torch.equal(ir.linears[name].codes, base.linears[name].codes)
    assert not torch.equal(ir.linears[name].scales, base.linears[name].scales)
    assert not torch.equal(ir.kept["model.norm.weight"], base.kept["model.norm.weight"])
    assert ir.kept["model.norm.weight"].dtype == base.kept["model.norm.weight"].dtype
    tf = "model.layers.0.attn_in"
    assert torch.equal(ir.transforms[tf].M, base.transforms[tf].M)  # transforms stay unless asked


def test_distillation_with_transforms(src):
    ir, _ = quantize_model(src, QuantizeOptions(bits=2.4, distill_steps=20, distill_transforms=True, **FAST))
    base, _ = quantize_model(src, QuantizeOptions(bits=2.4, distill_steps=0, **FAST))
    s = ir.meta["distill"]
    assert s["transforms"] and s["held_out_kl_after"] < s["held_out_kl_before"]
    tf = "model.layers.0.attn_in"
    assert not torch.equal(ir.transforms[tf].M, base.transforms[tf].M)
    assert torch.equal(ir.transforms[tf].M, ir.transforms[tf].M.half().float())  # container precision


def test_memory_check(src, monkeypatch):
    """Too little memory: an explicit request fails before any work, the default skips with a note."""
    monkeypatch.setattr(e2e, "memory_available", lambda device: 1 << 20)
    monkeypatch.setattr("liftexport.quantize.pipeline.calibration_tokens",
                        lambda *a: pytest.fail("work started before the memory check"))
    with pytest.raises(ConfigError, match="distillation needs about"):
        quantize_model(src, QuantizeOptions(bits=2.4, distill_steps=5, **FAST))
    monkeypatch.undo()
    monkeypatch.setattr(e2e, "memory_available", lambda device: 1 << 20)
    ir, _ = quantize_model(src, QuantizeOptions(bits=2.4, **FAST))
    assert ir.meta["distill"]["steps"] == 0 and "GiB" in ir.meta["distill"]["skipped"]


def test_param_estimate_matches_the_model(src):
    n = sum(p.numel() for p in src.full_model().parameters())
    assert e2e.param_estimate(src.config.to_dict()) == pytest.approx(n, rel=0.02)


def test_cli_flags(src, tmp_path, monkeypatch):
    """--no-distill is recorded in the artifact; an explicit --distill-steps that cannot fit exits 2 with
    one line naming the problem and writes nothing."""
    import json

    from click.testing import CliRunner

    from liftexport.cli import main

    fast = ["--calib-tokens", "256", "--calib-seq-len", "64", "--correction-steps", "2", "--no-verify"]
    out = tmp_path / "a.lqt"
    r = CliRunner().invoke(main, ["model", str(src.path), "-o", str(out), "--no-distill", *fast])
    assert r.exit_code == 0, r.output
    summary = next(json.loads(line[line.index('{"output"'):]) for line in r.output.splitlines()
                   if '{"output"' in line)  # stderr (progress bars) shares the runner's output
    assert summary["distill"] == {"steps": 0}
    assert read_container(out).meta["distill"] == {"steps": 0}
    monkeypatch.setattr(e2e, "memory_available", lambda device: 1 << 20)
    bad = tmp_path / "b.lqt"
    r = CliRunner().invoke(main, ["model", str(src.path), "-o", str(bad), "--distill-steps", "10", *fast])
    assert r.exit_code == 2 and "distillation needs about" in r.output and "--distill-steps" in r.output
    assert not bad.exists() and not bad.with_name(bad.name + ".ckpt").exists()


def test_distill_pool_adds_fresh_sequences(src):
    """--distill-tokens beyond the calibration tokens: the calibration sequences first, then fresh ones
    (another seed: none repeats a calibration sequence), the same on a second call; the held-out
    sequences come from the pool."""
    from liftexport.quantize.pipeline import distill_pool

    opts = QuantizeOptions(bits=2.4, distill_tokens=1024, **FAST)
    teacher = src.full_model()
    tokens = calibration_tokens(src, opts, "cpu")
    pool = distill_pool(src, opts, "cpu", tokens, teacher)
    assert pool.shape == (16, 64) and torch.equal(pool[:8], tokens)
    assert not any(torch.equal(a, b) for a in pool[8:] for b in tokens)
    assert torch.equal(pool, distill_pool(src, opts, "cpu", tokens, teacher))
    small = QuantizeOptions(bits=2.4, distill_tokens=256, **FAST)  # fewer than calibration: the calibration tokens
    assert distill_pool(src, small, "cpu", tokens, teacher) is tokens
    ir, _ = quantize_model(src, QuantizeOptions(bits=2.4, distill_steps=5, distill_tokens=2048, **FAST))
    assert ir.meta["distill"]["held_out_sequences"] == 2  # 32 // 16 (the calibration's 8 alone: 1)
    assert ir.meta["distill"]["pool_tokens"] == 2048
    with pytest.raises(ConfigError, match="--distill-tokens -1"):
        quantize_model(src, QuantizeOptions(bits=2.4, distill_tokens=-1, **FAST))

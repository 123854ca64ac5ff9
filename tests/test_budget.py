"""Budget fitting (liftexport.budget): sizes, exact byte accounting, the allocation, the CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from liftexport.budget import (GroupShape, allocate, candidate_configs, group_bytes, group_shapes, parse_size,
                               reserve_auto)
from liftexport.cli import main
from liftexport.errors import ConfigError
from liftexport.formats.container import read_container, to_tensors
from liftexport.lattice.config import LatticeConfig
from liftexport.models.load import ModelSource
from liftexport.quantize.pipeline import QuantizeOptions, quantize_model
from tiny import make_tiny

FAST = dict(calib_tokens=256, calib_seq_len=64, correction_steps=2, correction_batch=2, progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny("llama", tmp_path_factory.mktemp("tiny"))


def test_parse_size():
    assert parse_size("24GiB") == 24 * 2**30 and parse_size("1.5 GB") == 1_500_000_000
    assert parse_size("300MB") == 300_000_000 and parse_size("4096") == 4096 and parse_size("2kib") == 2048
    for bad in ("", "12 parsecs", "GiB", "-3MB"):
        with pytest.raises(ConfigError, match="size"):
            parse_size(bad)


def _lifted_bytes(ir) -> int:
    tensors, _ = to_tensors(ir)
    return sum(t.numel() * t.element_size() for k, t in tensors.items() if k.startswith(("lin.", "tf.")))


def test_group_bytes_match_the_container_exactly(tiny):
    src = ModelSource(tiny)
    shapes = group_shapes(src)
    alloc = {g.key: ["24/10", "16/8", "24/8", "32/16"][k % 4] for k, g in enumerate(shapes)}
    ir, _ = quantize_model(src, QuantizeOptions(allocation=alloc, **FAST))
    assert _lifted_bytes(ir) == sum(group_bytes(g, LatticeConfig.parse(alloc[g.key])) for g in shapes)
    assert ir.meta["config"] == "mixed"
    assert {k: f"{tf.D}/{tf.d}" for k, tf in ir.transforms.items()} == alloc


def test_mixed_model_exports_to_gguf_and_onnx(tiny, tmp_path):
    from liftexport.formats.gguf import read_gguf, write_gguf
    from liftexport.formats.onnx import export_onnx
    from liftexport.ort import OrtCausalLM
    from liftexport.runtime.reference import build_model, build_tokenizer
    from liftexport.verify import compare_models

    src = ModelSource(tiny)
    alloc = {g.key: ["24/10", "32/16", "24/8"][k % 3] for k, g in enumerate(group_shapes(src))}
    ir, _ = quantize_model(src, QuantizeOptions(allocation=alloc, **FAST))
    ref, tok = build_model(ir), build_tokenizer(ir)
    back = read_gguf(write_gguf(ir, tmp_path / "m.gguf"))
    assert {k: f"{tf.D}/{tf.d}" for k, tf in back.transforms.items()} == alloc
    for model, tol in ((build_model(back), 1e-5), (OrtCausalLM(export_onnx(ir, tmp_path / "onnx")), 1e-4)):
        res = compare_models(model, ref, tok, n_tokens=8, prompts=("hello world",))
        assert res["max_rel_logit_err"] <= tol and res["greedy_identical"], res


def test_allocation_fits_and_spends_the_budget():
    shapes = [GroupShape(f"model.layers.{i}.g", 576, (576, 192, 192), (False,) * 3, False) for i in range(6)]
    sens = {g.key: 10.0 ** (i % 3) for i, g in enumerate(shapes)}
    menu = candidate_configs()
    lo = sum(group_bytes(g, LatticeConfig(32, 16)) for g in shapes)
    hi = sum(group_bytes(g, LatticeConfig(24, 8)) for g in shapes)
    for frac in (0.2, 0.5, 0.8):
        target = int(lo + frac * (hi - lo))
        alloc = allocate(shapes, sens, target, menu)
        used = sum(group_bytes(g, alloc[g.key]) for g in shapes)
        assert used <= target and used >= 0.99 * target, (frac, used, target)
        bits = {g.key: alloc[g.key].bits for g in shapes}
        # equal shapes: the most sensitive groups (2, 5) never get fewer bits than the least (0, 3)
        assert min(bits[shapes[2].key], bits[shapes[5].key]) >= max(bits[shapes[0].key], bits[shapes[3].key])
    with pytest.raises(ConfigError, match="budget too small"):
        allocate(shapes, sens, lo // 2, menu)


def test_reserve_auto_counts_the_kv_cache(tiny):
    cfg = ModelSource(tiny).config
    r1, note = reserve_auto(cfg, 1024, 1)
    r2, _ = reserve_auto(cfg, 2048, 2)
    kv = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 2
    assert r2 - r1 >= kv * (4096 - 1024) and "KV cache" in note and "context 1024" in note


def test_cli_budget_writes_an_artifact_within_it(tiny, tmp_path):
    out = tmp_path / "b.lqt"
    rep = tmp_path / "r.json"
    budget = 28_740_000  # between the tiny model's uniform 2.0- and 3.0-bit sizes (28.735 / 28.750 MB)
    res = CliRunner().invoke(main, ["model", str(tiny), "--budget", f"{budget}B", "--reserve", "0", "-o", str(out),
                                    "--report", str(rep), "--calib-tokens", "256", "--calib-seq-len", "64",
                                    "--correction-steps", "2"])
    assert res.exit_code == 0, res.output
    size = out.stat().st_size
    assert size <= budget and size >= 0.99 * budget
    plan = json.loads(rep.read_text())["plan"]
    assert plan["target_bytes"] == budget and abs(plan["predicted_bytes"] - size) < 0.001 * size
    assert read_container(out).meta["config"] == "mixed"
    bad = CliRunner().invoke(main, ["model", str(tiny), "--budget", "1MB", "-o", str(tmp_path / "x.lqt")])
    assert bad.exit_code != 0 and "budget" in bad.output and not (tmp_path / "x.lqt").exists()


def test_sweep_writes_csv_json_and_plot(tiny, tmp_path):
    import csv
    import random

    from liftexport.sweep import parse_bits_range, run_sweep

    assert parse_bits_range("1.6:2.0:0.2") == [1.6, 1.8, 2.0] and parse_bits_range("2.4,3") == [2.4, 3.0]
    random.seed(0)
    words = ["the", "house", "was", "quiet", "and", "she", "walked", "to", "garden", "letter", "morning", "of"]
    text = tmp_path / "eval.txt"
    text.write_text(" ".join(random.choice(words) for _ in range(3000)))
    out = tmp_path / "sweep"
    q = dict(calib_tokens=256, calib_seq_len=64, correction_steps=2, correction_batch=2)
    rows = run_sweep(str(tiny), [2.4, 2.45], [str(text)], out, baselines=["rtn4"], quant_kwargs=q, progress=False,
                     eval_tokens=2048)
    assert [(r["kind"], r["config"]) for r in rows] == [("uniform", "24/10"), ("mixed", "mixed"), ("baseline", "rtn")] \
        or [(r["kind"]) for r in rows] == ["uniform", "mixed", "baseline"]
    disk = list(csv.DictReader(open(out / "sweep.csv")))
    assert [r["label"] for r in disk] == [r["label"] for r in rows]
    for r in rows:
        assert r["ppl"] > 1 and r["bytes"] > 0
    assert rows[1]["bytes"] <= rows[0]["bytes"] and rows[1]["bytes"] >= 0.995 * rows[0]["bytes"]  # equal bytes
    assert (out / "sweep.png").stat().st_size > 10_000 and len(json.loads((out / "sweep.json").read_text())) == 3
    bad = CliRunner().invoke(main, ["sweep", str(tiny), "--bits", "3:2:1", "--eval-text", str(text), "-o", str(out)])
    assert bad.exit_code != 0 and "--bits" in bad.output

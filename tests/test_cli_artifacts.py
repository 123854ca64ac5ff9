"""CLI over artifacts: inspect, eval, verify, run on the spec's tiny model; errors are one line + exit 2."""

import json
import random
from pathlib import Path

from click.testing import CliRunner

from liftexport.cli import main

VEC = Path(__file__).resolve().parents[1] / "spec" / "vectors" / "tiny_model.lqt"


def test_inspect_json():
    r = CliRunner().invoke(main, ["inspect", str(VEC), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["accounted_bytes"] == info["file_bytes"]
    assert 2.4 < info["effective_bits"] < 5.0  # tiny layers: scales and transforms weigh a lot
    r = CliRunner().invoke(main, ["inspect", str(VEC), "--tensors"])
    assert r.exit_code == 0 and "lift-codes" in r.output and "effective bits" in r.output


def test_eval_protocol_on_tiny_model(tmp_path):
    rng = random.Random(0)
    words = ["anne", "elliot", "captain", "wentworth", "the", "of", "and", "a", "bath", "lyme"]
    text = " ".join(rng.choice(words) for _ in range(12000))
    f = tmp_path / "t.txt"
    f.write_text(text)
    r = CliRunner().invoke(main, ["eval", str(VEC), "--text", str(f), "--json", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    assert res["windows"] == 80 and res["predicted"] == 80 * 511 and res["ppl"] > 1
    short = tmp_path / "s.txt"
    short.write_text("too short")
    r = CliRunner().invoke(main, ["eval", str(VEC), "--text", str(short)])
    assert r.exit_code == 2 and "40960" in r.output


def test_verify_and_run():
    r = CliRunner().invoke(main, ["verify", str(VEC), "--against", str(VEC), "--json", "--tokens", "8"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["max_rel_logit_err"] == 0.0 and res["greedy_identical"]
    r = CliRunner().invoke(main, ["run", str(VEC), "--prompt", "Lift", "--max-new-tokens", "5", "--device", "cpu"])
    assert r.exit_code == 0, r.output


def test_corrupt_artifact_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.lqt"
    bad.write_bytes(VEC.read_bytes()[:1000])
    for cmd in (["inspect", str(bad)], ["eval", str(bad), "--text", str(bad)], ["run", str(bad), "--prompt", "x"]):
        r = CliRunner().invoke(main, cmd)
        assert r.exit_code == 2, (cmd, r.output)
        assert r.output.strip().startswith("error:") and len(r.output.strip().splitlines()) == 1

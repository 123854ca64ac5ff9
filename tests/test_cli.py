"""The click CLI: lattice list/bench/train, error handling (one line, exit 2)."""

import json

from click.testing import CliRunner

from liftexport.cli import main
from liftexport.lattice.store import Lattice


def test_lattice_list():
    r = CliRunner().invoke(main, ["lattice", "list", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert any(x["config"] == "24/10" for x in rows)


def test_lattice_bench_json():
    r = CliRunner().invoke(main, ["lattice", "bench", "--config", "16/8,24/10", "--samples", "20000",
                                  "--seed", "0", "--json", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [x["config"] for x in rows] == ["16/8", "24/10"]
    for x in rows:
        assert {"D", "d", "bits", "mse", "info_bits", "params_per_s", "search"} <= set(x)
    assert rows[0]["search"].startswith("exact") and rows[1]["search"].startswith("nullspace")
    assert rows[0]["mse"] < 0.0935 and rows[1]["mse"] < 0.0555


def test_lattice_train(tmp_path):
    out = tmp_path / "l.safetensors"
    r = CliRunner().invoke(main, ["lattice", "train", "--config", "8/4", "--steps", "30", "--restarts", "1",
                                  "--lloyd-iters", "2", "-o", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert Lattice.load(out).config.name == "8/4"


def test_bad_config_is_one_line_exit_2():
    r = CliRunner().invoke(main, ["lattice", "bench", "--config", "24/x"])
    assert r.exit_code == 2
    assert r.output.strip().startswith("error:") and "24/x" in r.output
    r = CliRunner().invoke(main, ["lattice", "bench", "--config", "50/10"])
    assert r.exit_code == 2 and "D - d" in r.output

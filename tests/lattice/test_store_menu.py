"""Lattice files (round trip, hostile files) and the shipped menu / bit-width selection."""

import math
from fractions import Fraction

import pytest
import torch
from safetensors.torch import save_file

from liftexport.errors import ConfigError, LatticeError
from liftexport.lattice.config import LatticeConfig
from liftexport.lattice.menu import MENU, lattice_path, load_shipped, select_config, shipped_configs
from liftexport.lattice.search import nearest
from liftexport.lattice.store import Lattice


def test_roundtrip(tmp_path):
    lat = Lattice.from_M(torch.randn(6, 12), {"mse": 0.1, "note": "x"})
    p = lat.save(tmp_path / "a.safetensors")
    back = Lattice.load(p)
    assert torch.equal(back.M, lat.M) and torch.equal(back.N, lat.N)
    assert back.config == LatticeConfig(12, 6) and back.mse == 0.1 and back.meta["note"] == "x"
    assert list(tmp_path.iterdir()) == [p]  # no temp file left behind


@pytest.mark.parametrize("case", ["garbage", "truncated", "noformat", "version", "shape", "nan", "notnull", "missing"])
def test_hostile_lattice_files(tmp_path, case):
    lat = Lattice.from_M(torch.randn(6, 12))
    p = tmp_path / "bad.safetensors"
    meta = {"format": "liftquant-lattice", "version": "1", "D": "12", "d": "6"}
    tensors = {"M": lat.M, "N": lat.N}
    if case == "garbage":
        p.write_bytes(b"\x00" * 100)
    elif case == "truncated":
        lat.save(p)
        p.write_bytes(p.read_bytes()[:-40])
    else:
        if case == "noformat":
            meta.pop("format")
        if case == "version":
            meta["version"] = "99"
        if case == "shape":
            meta["D"] = "13"
        if case == "nan":
            tensors["M"] = lat.M.clone()
            tensors["M"][0, 0] = float("nan")
        if case == "notnull":
            tensors["N"] = torch.randn(6, 12)
        if case == "missing":
            tensors.pop("N")
        save_file(tensors, str(p), metadata=meta)
    with pytest.raises(LatticeError):
        Lattice.load(p)
    with pytest.raises(LatticeError):
        Lattice.load(tmp_path / "nope.safetensors")


def test_menu_is_shipped_and_covers_range():
    have = shipped_configs()
    assert set(have) == set(MENU), sorted(set(MENU) - set(have))
    required = ["32/20", "16/10", "16/8", "32/16", "30/14", "24/10", "25/10", "20/8", "28/10", "24/8", "28/8"]
    assert {LatticeConfig.parse(c) for c in required} <= set(have)
    rates = sorted({c.rate for c in have})
    assert rates[0] <= Fraction(3, 2) and rates[-1] >= Fraction(7, 2)
    assert all(c.pad <= 20 for c in have)
    for a, b in zip(rates, rates[1:]):
        # the one wider step is 3.0 -> 28/9: nothing with D - d <= 20 lies in (3.0, 3.1]
        assert b - a <= Fraction(1, 10) or (a == 3 and b == Fraction(28, 9)), (a, b)
    assert not any(3 < Fraction(D, d) <= Fraction(31, 10) for d in range(1, 40) for D in range(d + 1, d + 21))


def test_shipped_lattices_load_and_match_their_recorded_mse():
    for c in shipped_configs():
        lat = load_shipped(c)
        assert lat.config == c and lat.mse is not None
        assert 2 ** (-2 * c.bits) < lat.mse < 0.25, (c, lat.mse)  # above Shannon, far below no-code
    lat = load_shipped(LatticeConfig(24, 10))
    W = torch.randn(3000, 10, generator=torch.Generator().manual_seed(1))
    mse = float(nearest(lat, W).dist.mean()) / 10
    assert abs(mse - lat.mse) < 0.004


@pytest.mark.parametrize("bits,expect", [(2.4, "24/10"), (2.45, "24/10"), (3.0, "24/8"), (2.0, "32/16"),
                                          (3.5, "28/8"), (9.0, None), (1.6, "32/20"), (2.14, "21/10"),
                                          (2.15, "30/14"), (1.5, "30/20")])
def test_select_config(bits, expect):
    if expect is None:
        with pytest.raises(ConfigError):
            select_config(bits)
    else:
        assert select_config(bits).name == expect


def test_select_config_errors():
    for bad in [1.2, 0, -3, float("nan"), "abc", 4.0]:
        with pytest.raises(ConfigError):
            select_config(bad)


def test_config_parse():
    assert LatticeConfig.parse("LQ-24/10") == LatticeConfig(24, 10)
    assert LatticeConfig(24, 10).bits == 2.4
    for bad in ["24", "10/24", "50/10", "x/y", "24/0"]:
        with pytest.raises(ConfigError):
            LatticeConfig.parse(bad)
    assert math.isclose(LatticeConfig(30, 14).bits, 2.142857, rel_tol=1e-5)
    assert lattice_path(LatticeConfig(24, 10)).name == "lq_24_10.safetensors"

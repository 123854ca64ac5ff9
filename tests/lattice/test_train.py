"""Training of M: improves on its init, deterministic under a seed, writes a loadable file."""

import torch

from liftexport.lattice.config import LatticeConfig
from liftexport.lattice.store import Lattice
from liftexport.lattice.train import TrainOptions, _orthonormal_rows, heldout_mse, train_lattice


def test_training_beats_init_and_is_seeded(tmp_path):
    cfg = LatticeConfig(10, 5)
    opts = TrainOptions(steps=150, batch=256, restarts=2, lloyd_iters=4, lloyd_samples=4096, heldout=4096, seed=3)
    a = train_lattice(cfg, opts, progress=False)
    b = train_lattice(cfg, opts, progress=False)
    assert torch.equal(a.M, b.M)
    Wh = torch.randn(4096, 5, generator=torch.Generator().manual_seed(9))
    init = Lattice.from_M(_orthonormal_rows(5, 10, torch.Generator().manual_seed(3)))
    trained = heldout_mse(a, Wh)
    assert trained < 0.9 * heldout_mse(init, Wh)
    # 2 bits on a Gaussian: Shannon bound 0.0625, scalar 2-level-per-bit code ~0.12; a 10/5 lattice sits between
    assert 0.0625 < trained < 0.11
    p = a.save(tmp_path / "t.safetensors")
    assert Lattice.load(p).meta["trainer"] == "softmin-adam+lloyd"

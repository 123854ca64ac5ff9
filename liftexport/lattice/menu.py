"""The shipped lattice menu and the mapping from a requested bit width to a configuration.

The menu covers 1.5 to 3.5 bits with D - d <= 20. Steps are at most 0.1 bit except between
3.0 and 3.111: no D/d with D - d <= 20 lies in (3.0, 3.1] (it needs d <= 9, and no such D/d
falls there), so 24/8 -> 28/9 is the finest step the constraint allows. 30/10 (also 3.0 bits,
2^20 candidates per chunk) is left out so that --bits 3 means 24/8.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..errors import ConfigError, LatticeError
from .config import LatticeConfig
from .store import Lattice

DATA_DIR = Path(__file__).resolve().parent / "data"

#: Every configuration the project ships a trained lattice for, by rate.
MENU: tuple[LatticeConfig, ...] = tuple(
    LatticeConfig(D, d)
    for D, d in [
        (30, 20), (32, 20), (16, 10), (34, 20), (36, 20), (38, 20),
        (16, 8), (32, 16), (21, 10), (30, 14), (22, 10), (23, 10), (24, 10),
        (20, 8), (25, 10), (26, 10), (27, 10), (28, 10), (29, 10),
        (24, 8), (28, 9), (16, 5), (23, 7), (27, 8), (24, 7), (28, 8),
    ]
)


def lattice_path(config: LatticeConfig) -> Path:
    return DATA_DIR / f"{config.file_stem}.safetensors"


def shipped_configs() -> list[LatticeConfig]:
    """Configurations of the menu whose lattice file is present, sorted by rate then d."""
    return sorted((c for c in MENU if lattice_path(c).is_file()), key=lambda c: (c.rate, c.d))


@lru_cache(maxsize=None)
def load_shipped(config: LatticeConfig) -> Lattice:
    p = lattice_path(config)
    if not p.is_file():
        have = ", ".join(c.name for c in shipped_configs()) or "none"
        raise LatticeError(f"no shipped lattice for {config}; shipped: {have}")
    return Lattice.load(p)


def select_config(bits: float, menu: list[LatticeConfig] | None = None) -> LatticeConfig:
    """Best shipped configuration at or below ``bits``: the highest rate, then the largest d."""
    menu = list(menu if menu is not None else shipped_configs())
    if not menu:
        raise LatticeError("no lattices are shipped (liftexport/lattice/data is empty)")
    try:
        bits = float(bits)
    except (TypeError, ValueError):
        raise ConfigError(f"--bits {bits!r}: expected a number") from None
    lo = min(c.bits for c in menu)
    hi = max(c.bits for c in menu)
    if not (bits == bits) or bits < lo - 1e-9 or bits > 16:
        raise ConfigError(f"--bits {bits}: the lattice menu covers {lo:.3f} to {hi:.3f} bits per weight")
    fits = [c for c in menu if c.bits <= bits + 1e-9]
    if bits > hi + 0.25:
        raise ConfigError(
            f"--bits {bits}: above the menu's largest rate {hi:.3f} (LiftQuant's useful range ends near 3.5 "
            f"bits; use an integer format such as --method rtn --bits 4 beyond it)"
        )
    return max(fits, key=lambda c: (c.rate, c.d))

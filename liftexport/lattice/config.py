"""A lattice configuration (D, d): each d-chunk of a whitened weight row is coded as M q, q in {+-1}^D."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from ..errors import ConfigError

#: Largest D - d for which the null-space search (2^(D-d) candidates per chunk) is offered.
MAX_PAD = 20
#: Largest D whose binary code still fits an int64 bit mask.
MAX_D = 62


@dataclass(frozen=True, order=True)
class LatticeConfig:
    """A LiftQuant configuration: D binary digits code d real weights (rate D/d bits per weight)."""

    D: int
    d: int

    def __post_init__(self) -> None:
        if not (1 <= self.d < self.D <= MAX_D):
            raise ConfigError(f"lattice config {self.D}/{self.d}: need 1 <= d < D <= {MAX_D}")
        if self.D - self.d > MAX_PAD:
            raise ConfigError(
                f"lattice config {self.D}/{self.d}: D - d = {self.D - self.d} > {MAX_PAD}; the "
                f"null-space search would try 2^{self.D - self.d} candidates per chunk"
            )

    @property
    def bits(self) -> float:
        """Rate in bits per weight (before scales, transforms and padding)."""
        return self.D / self.d

    @property
    def rate(self) -> Fraction:
        return Fraction(self.D, self.d)

    @property
    def pad(self) -> int:
        """m = D - d: the null-space search enumerates 2^m paddings z."""
        return self.D - self.d

    @property
    def name(self) -> str:
        return f"{self.D}/{self.d}"

    @property
    def file_stem(self) -> str:
        return f"lq_{self.D}_{self.d}"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str) -> "LatticeConfig":
        """Parse 'D/d' (also 'LQ-D/d' or 'D_d')."""
        m = re.fullmatch(r"\s*(?:lq[-_]?)?(\d+)\s*[/_]\s*(\d+)\s*", str(text), flags=re.IGNORECASE)
        if not m:
            raise ConfigError(f"lattice config {text!r}: expected the form D/d, e.g. 24/10")
        return cls(int(m.group(1)), int(m.group(2)))


def parse_config_list(text: str) -> list[LatticeConfig]:
    """Parse a comma-separated list of 'D/d' configurations."""
    items = [t for t in str(text).split(",") if t.strip()]
    if not items:
        raise ConfigError("empty lattice config list")
    return [LatticeConfig.parse(t) for t in items]

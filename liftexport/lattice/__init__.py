"""LiftQuant lattices: configurations (D, d), mapping matrices M, nearest-point search, the menu."""

from .config import LatticeConfig, parse_config_list
from .search import SearchResult, nearest
from .store import Lattice

__all__ = ["LatticeConfig", "Lattice", "SearchResult", "nearest", "parse_config_list"]

"""Synthesis: one shared optimization loop, one small strategy per method."""

from .loop import distill, select_random
from .strategies import STRATEGIES, Strategy, get_strategy

__all__ = ["STRATEGIES", "Strategy", "distill", "get_strategy", "select_random"]

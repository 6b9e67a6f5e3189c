"""Synthesis and selection: one shared optimization loop, one small strategy per method."""

from .loop import distill, needs_stats, select, select_random
from .strategies import STRATEGIES, Strategy, get_strategy

__all__ = ["STRATEGIES", "Strategy", "distill", "get_strategy", "needs_stats", "select", "select_random"]

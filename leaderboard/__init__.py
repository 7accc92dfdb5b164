"""privbench's static HTML leaderboard: ``render_site(store, out_dir)`` writes it, offline-ready."""

from leaderboard.model import DEFAULT_UTILITY_BUDGET
from leaderboard.render import render_site

__all__ = ["DEFAULT_UTILITY_BUDGET", "render_site"]

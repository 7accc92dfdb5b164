"""privbench's static HTML leaderboard: ``render_site(store, out_dir)`` writes it, offline-ready."""

from leaderboard.render import render_site

__all__ = ["render_site"]

"""`acr analyze`: per-clip metrics, set-level metrics, statistics, plots and a report.

clips -> cache/features (per clip) -> sets (per setting) -> stats -> plots -> report; `run.py` is
the recipe. Analysis reads audio files and their sidecars only; it never imports audiocraft.
"""
from acr.commands.analyze.run import run_analysis

__all__ = ["run_analysis"]

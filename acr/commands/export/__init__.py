"""`acr export`: a shareable, verifiable zip of run folders (run.py) with a rendered README
(readme.py)."""
from acr.commands.export.run import export_runs, verify

__all__ = ["export_runs", "verify"]

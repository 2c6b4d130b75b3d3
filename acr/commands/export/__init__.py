"""`acr export`: a shareable, verifiable zip of run folders (run.py), streamed with its manifest
(archive.py, which also verifies a package), redacted (redact.py), with a rendered README
(readme.py)."""
from acr.commands.export.archive import verify
from acr.commands.export.run import export_runs

__all__ = ["export_runs", "verify"]

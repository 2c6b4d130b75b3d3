"""`acr experiment`: declarative grids, batched, seeded, resumable (plan, batches, manifest, run)."""
from acr.commands.experiment.manifest import add_note
from acr.commands.experiment.run import run_experiment

__all__ = ["run_experiment", "add_note"]

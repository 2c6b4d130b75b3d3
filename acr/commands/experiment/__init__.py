"""`acr experiment`: declarative grids, batched, seeded, resumable (plan, batches, manifest, run),
and launched as shares of a Slurm job array (shares, launch)."""
from acr.commands.experiment.launch import (experiment_status, render_status, submit_experiment,
                                            wait_for_run)
from acr.commands.experiment.manifest import add_note
from acr.commands.experiment.run import run_experiment

__all__ = ["run_experiment", "add_note", "submit_experiment", "wait_for_run",
           "experiment_status", "render_status"]

"""`acr finetune --launcher slurm|local`: one DDP job of `nodes` x `tasks_per_node` ranks,
submitted through submitit. Each rank sets torchrun's variables from its Slurm environment
(acr.core.launch.dist_environment) and runs the ordinary recipe, which joins the process group
as under torchrun. A preempted or timed-out job is requeued and resumes from the run's last
checkpoint, as `acr finetune --resume` does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acr.commands.finetune import data
from acr.commands.finetune.train import run_finetune
from acr.core.config.schema import FinetuneConfig
from acr.core.errors import UsageError
from acr.core.launch import (LAUNCHER_DIR, Resources, check_launcher, dist_environment,
                             make_executor, task_environment)
from acr.core.runs import new_run_dir, open_run, resume_config


@dataclass
class FinetuneSubmission:
    run_dir: Path
    kind: str
    job: str
    ranks: int
    handle: Any  # submitit's job (to wait on it)


def submit_finetune(cfg: FinetuneConfig | None, out: Path | None = None,
                    resume: Path | None = None) -> FinetuneSubmission:
    """Reserve the run folder (a new one holds only launcher/ until rank 0 starts the run) and
    submit the job; a resume is checked here like `acr finetune --resume`, then continued by
    the job from the last checkpoint."""
    if resume is not None:
        run_dir = open_run(resume, "finetune").dir
        cfg = resume_config(run_dir, FinetuneConfig, cfg)
    assert cfg is not None and cfg.launcher.kind != "none"
    launcher = cfg.launcher
    check_launcher(launcher)
    data.scan(Path(cfg.data))  # a missing or empty data folder is named now, not in the job
    if launcher.kind == "local" and launcher.nodes > 1:
        raise UsageError(f"launcher.nodes: {launcher.nodes}: the local launcher runs on this "
                         "machine only; use nodes: 1 (or --launcher slurm)")
    per_node = launcher.tasks_per_node or max(1, launcher.gpus_per_node)
    if resume is None:
        run_dir = new_run_dir(cfg.name, out)
    executor = make_executor(launcher, run_dir / LAUNCHER_DIR, Resources(
        name=f"acr-{cfg.name}", nodes=launcher.nodes, tasks_per_node=per_node,
        gpus_per_node=launcher.gpus_per_node))
    job = executor.submit(FinetuneTask(cfg, str(Path(run_dir).resolve())))
    return FinetuneSubmission(Path(run_dir), launcher.kind, str(job.job_id),
                              launcher.nodes * per_node, job)


@dataclass
class FinetuneTask:
    """One rank of the job. `checkpoint` (submitit calls it on preemption or timeout) requeues
    the same task, which then resumes the run from its last checkpoint."""

    cfg: FinetuneConfig
    run_dir: str

    def __call__(self) -> str:
        env = task_environment()
        if env is not None:
            os.environ.update(dist_environment(env))
        run_dir = Path(self.run_dir)
        started = (run_dir / "config.yaml").is_file() and (run_dir / "meta.json").is_file()
        if started:
            return str(run_finetune(self.cfg, resume=run_dir))
        return str(run_finetune(self.cfg, out=run_dir))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(FinetuneTask(self.cfg, self.run_dir))

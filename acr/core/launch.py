"""submitit launchers shared by experiment and finetune: the executor (Slurm, or local
subprocesses taking the same path), the sbatch parameters of a launcher config, torchrun's
variables from a task's Slurm environment, job states and log tails.

submitit is imported inside the functions: nothing here costs anything to a run without a
launcher (or to `acr --help`).
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acr.core.errors import UsageError

LAUNCHER_DIR = "launcher"  # inside a run folder: submitit's pickles and logs, the share records
# Slurm states after which a job runs no more (sacct); PENDING, RUNNING, REQUEUED, ... are not
SLURM_ENDED = ("BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
               "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT")


@dataclass
class Resources:
    """What one submission asks for, per job (or per array task)."""

    name: str  # the Slurm job name
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0


def slurm_parameters(launcher: Any, resources: Resources) -> dict[str, Any]:
    """submitit SlurmExecutor parameters (sbatch options) for a launcher config section."""
    params: dict[str, Any] = {"job_name": resources.name, "time": launcher.time,
                              "nodes": resources.nodes,
                              "ntasks_per_node": resources.tasks_per_node}
    if resources.gpus_per_node:
        params["gpus_per_node"] = resources.gpus_per_node
    if launcher.partition:
        params["partition"] = launcher.partition
    if launcher.cpus_per_task:
        params["cpus_per_task"] = launcher.cpus_per_task
    if launcher.mem_gb:
        gb = launcher.mem_gb
        params["mem"] = f"{int(gb)}GB" if gb == int(gb) else f"{int(gb * 1024)}MB"
    if launcher.slurm:
        params["additional_parameters"] = dict(launcher.slurm)
    return params


def check_launcher(launcher: Any) -> None:
    """UsageError, before anything is written, when the launcher cannot submit from here."""
    import shutil

    if launcher.kind == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise UsageError("--launcher slurm: no Slurm here (sbatch / srun not found); submit "
                         "from a cluster's login node, or try the config with --launcher local")


def make_executor(launcher: Any, folder: Path, resources: Resources) -> Any:
    """A submitit executor writing its pickles and logs to `folder`: SlurmExecutor for
    kind slurm (UsageError where sbatch / srun are missing), LocalExecutor for kind local."""
    import submitit

    if launcher.kind == "local":
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=launcher.time,
                                   tasks_per_node=resources.tasks_per_node,
                                   gpus_per_node=resources.gpus_per_node)
        return executor
    if launcher.kind != "slurm":
        raise ValueError(f"no executor for launcher kind {launcher.kind!r}")
    try:
        executor = submitit.SlurmExecutor(folder=str(folder))
    except RuntimeError:
        raise UsageError("--launcher slurm: no Slurm here (srun / sbatch not found); submit "
                         "from a cluster's login node, or try the config with --launcher local")
    try:
        executor.update_parameters(**slurm_parameters(launcher, resources))
    except ValueError as exc:
        raise UsageError(f"launcher: {exc}".splitlines()[0])
    return executor


def task_environment() -> Any:
    """submitit's JobEnvironment of the running task (None outside a submitit task)."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    import submitit

    return submitit.JobEnvironment()


# rendezvous ports: below Linux's default range for outgoing connections' ports (32768-60999),
# where a port can already be taken by any connection the node has open (as Lightning's
# 15000 + the job id's last four digits)
MASTER_PORT_BASE, MASTER_PORT_SPAN = 15000, 10000


def master_port(job: str) -> int:
    """A rendezvous port from the job id: one job's ranks agree on it, two jobs on one node
    are unlikely to pick the same, and no outgoing connection holds it (MASTER_PORT_BASE)."""
    digits = "".join(ch for ch in job.split("_")[0] if ch.isdigit()) or "0"
    return MASTER_PORT_BASE + int(digits) % MASTER_PORT_SPAN


def dist_environment(env: Any) -> dict[str, str]:
    """torchrun's variables (MASTER_ADDR / MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK,
    LOCAL_WORLD_SIZE) for a task of a submitit job, from its JobEnvironment: the first node of
    the job is the rendezvous host; acr.core.distributed.init_dist then joins the group."""
    return {"MASTER_ADDR": env.hostnames[0] if env.num_nodes > 1 else "127.0.0.1",
            "MASTER_PORT": str(master_port(env.raw_job_id)),
            "RANK": str(env.global_rank), "WORLD_SIZE": str(env.num_tasks),
            "LOCAL_RANK": str(env.local_rank),
            "LOCAL_WORLD_SIZE": str(max(1, env.num_tasks // max(1, env.num_nodes)))}


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """job id -> Slurm state (sacct, parsed by submitit), for the ids sacct knows; {} where
    sacct cannot be asked (no Slurm here, or it fails)."""
    if not job_ids:
        return {}
    from submitit.slurm.slurm import SlurmInfoWatcher

    command = ["sacct", "-o", "JobID,State,NodeList", "--parsable2"]
    for main in sorted({j.split("_")[0] for j in job_ids}):
        command += ["-j", main]
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return {}
    info = SlurmInfoWatcher().read_info(output.stdout)
    return {j: info[j]["State"].split()[0] for j in job_ids if j in info and info[j].get("State")}


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def log_paths(folder: Path, job: str) -> tuple[Path, Path]:
    """(stdout, stderr) of the first task of a submitit job."""
    from submitit.core.utils import JobPaths

    paths = JobPaths(folder, job_id=job, task_id=0)
    return paths.stdout, paths.stderr


def log_tail(folder: Path, job: str, lines: int = 8) -> list[str]:
    """The last non-empty lines of a job's log (stderr, where errors and progress go; stdout
    when stderr is empty)."""
    for path in reversed(log_paths(folder, job)):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        kept = [line for line in text.splitlines() if line.strip()]
        if kept:
            return kept[-lines:]
    return []

"""The shares of a launched experiment: share k of n is every batch whose index is k modulo n
(the split torchrun's ranks use), so who generates a batch never changes its bytes.

Each share has a record, RUN/launcher/shares/<k>.json, written atomically: `queued` by the
submitter, then `running`, `done`, `failed` (with the error) or `requeued` by its task.
RUN/launcher/jobs.json holds the job id of each share's latest submission. `share_states`
reads both and what the machine (a local process) or Slurm (sacct) says of the job.
"""
from __future__ import annotations

import fcntl
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from acr.commands.experiment.plan import Batch
from acr.core.errors import UsageError
from acr.core.launch import LAUNCHER_DIR, SLURM_ENDED, process_alive, slurm_states
from acr.core.runs import write_json
from acr.core.safe_load import read_json

JOBS = "jobs.json"


def launcher_dir(run_dir: Path) -> Path:
    return Path(run_dir) / LAUNCHER_DIR


def share_batches(batches: list[Batch], share: int, shares: int) -> list[Batch]:
    """The batches of share `share` of `shares`."""
    return [b for b in batches if b.index % shares == share]


def record_path(run_dir: Path, share: int) -> Path:
    return launcher_dir(run_dir) / "shares" / f"{share}.json"


def read_record(run_dir: Path, share: int) -> dict:
    path = record_path(run_dir, share)
    return read_json(path) if path.is_file() else {}


def write_record(run_dir: Path, share: int, **fields) -> None:
    """Replace share `share`'s record (atomically); `fields` must hold its `state`."""
    path = record_path(run_dir, share)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"share": share, **fields})


def read_jobs(run_dir: Path) -> dict:
    path = launcher_dir(run_dir) / JOBS
    return read_json(path) if path.is_file() else {}


def write_jobs(run_dir: Path, jobs: dict) -> None:
    write_json(launcher_dir(run_dir) / JOBS, jobs)


@contextmanager
def shares_lock(run_dir: Path) -> Iterator[None]:
    """The tasks' lock (blocking, held for moments): one task at a time agrees the batch size,
    records a failure or checks whether it finished last. The submitter never takes it, and a
    task takes the run's own lock only inside it, so no one waits on a circle."""
    folder = launcher_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".shares.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class ShareState:
    """What is known of one share now."""

    share: int
    state: str  # queued | running | done | failed | interrupted
    job: str | None = None  # the job id of its latest submission
    slurm_state: str | None = None  # sacct's word for that job (kind slurm)
    error: str | None = None
    record: dict = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")


def share_states(run_dir: Path) -> list[ShareState]:
    """Every share's state: its record, corrected by what the job says. A local task whose
    process is gone, or a Slurm job that ended, without its task recording an end, is failed
    (killed, out of memory, timed out, cancelled, ...)."""
    jobs = read_jobs(run_dir)
    if not jobs:
        return []
    kind, ids = jobs["kind"], {int(k): v for k, v in jobs["jobs"].items()}
    slurm = slurm_states(list(ids.values())) if kind == "slurm" else {}
    host = socket.gethostname()
    out = []
    for share in range(jobs["shares"]):
        record = read_record(run_dir, share)
        job = ids.get(share)
        state = record.get("state", "queued")
        if state == "requeued":  # preempted or timed out: submitit queued it again
            state = "queued"
        error = record.get("error")
        said = slurm.get(job) if job else None
        if state in ("queued", "running"):
            if kind == "local":
                gone = not process_alive(int(record["pid"])) if state == "running" and \
                    record.get("host") == host else state == "queued" and job is not None \
                    and not process_alive(int(job))
                if gone:
                    state, error = "failed", ("its process ended without recording an end "
                                              "(killed?)" if record.get("pid") else
                                              "its job ended before the task started")
            elif said in SLURM_ENDED:
                state, error = "failed", f"Slurm job {job} ended ({said}) without the task " \
                                         "recording an end"
            elif said == "RUNNING" and state == "queued":
                state = "running"
        out.append(ShareState(share, state, job, said, error, record))
    return out


def refuse_active_shares(run_dir: Path) -> None:
    """UsageError naming the shares of a launched run that are still queued or running (a
    resume now would generate their batches twice)."""
    active = [s for s in share_states(run_dir) if s.active]
    if active:
        jobs = ", ".join(f"share {s.share} {s.state} (job {s.job})" for s in active)
        raise UsageError(f"{run_dir}: tasks of this run are still at work: {jobs}; wait for "
                         f"them (acr experiment status {run_dir}), or cancel them (scancel "
                         "JOB) first")


def jobs_alive(run_dir: Path) -> bool:
    """Whether a job of the latest submissions may still run (a local controller process, or
    a Slurm job that has not ended; unknown to sacct counts as running)."""
    jobs = read_jobs(run_dir)
    ids = list(jobs.get("jobs", {}).values())
    if jobs.get("kind") == "local":
        return any(process_alive(int(job)) for job in ids)
    states = slurm_states(ids)
    return any(states.get(job) not in SLURM_ENDED for job in ids)

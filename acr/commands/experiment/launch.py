"""`acr experiment --launcher slurm|local`: the grid as a job array of shares, submitted through
submitit; `acr experiment status`.

The submitter plans the run folder (config.yaml, meta.json, a `queued` record per share) and
submits one task per share, then returns (or follows them with --wait). A task loads the
models, generates its share's missing batches (samples are written atomically, so a killed or
preempted task loses at most its current batch) and records its end. The task that ends last
writes the manifest and runs the analysis, under the run's lock. A resume submits only the
shares that still miss samples.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acr.commands.experiment.batches import HybridBatches, PlainBatches
from acr.commands.experiment.manifest import FINDINGS, write_findings, write_manifest
from acr.commands.experiment.plan import Sample, expand, is_done, plan_batches
from acr.commands.experiment.run import (analyse_and_finish, chosen_batch_size, summary_table,
                                         used_config)
from acr.commands.experiment.shares import (ShareState, jobs_alive, launcher_dir, read_jobs,
                                            read_record, refuse_active_shares, share_batches,
                                            share_states, shares_lock, write_jobs,
                                            write_record)
from acr.commands.experiment.tracked import track_batches
from acr.core import console
from acr.core.config.loader import dump_yaml, load_config, to_dict
from acr.core.config.schema import ExperimentConfig
from acr.core.distributed import Dist
from acr.core.errors import UsageError
from acr.core.launch import (Resources, check_launcher, log_tail, make_executor,
                             task_environment)
from acr.core.runs import (HELD_BY_TASKS, Run, begin_run, is_locked, lock_run, open_run,
                           resume_config, utc_now, write_atomic)
from acr.core.tracking import open_trackers


@dataclass
class Submission:
    """What `submit_experiment` did."""

    run_dir: Path
    kind: str
    shares: int  # shares of the run
    submitted: dict[int, str]  # share -> job id, for the shares submitted now


# ----------------------------------------------------------------------------------------------
# The submitter


def submit_experiment(cfg: ExperimentConfig | None, out: Path | None = None,
                      resume: Path | None = None, argv: list[str] | None = None) -> Submission:
    """Plan the run folder and submit a task per share that misses samples (every share of a
    new run). Nothing heavy happens here: the tasks load the models."""
    resumed = open_run(resume, "experiment") if resume is not None else None
    if resumed is not None:
        cfg = resume_config(resumed.dir, ExperimentConfig, cfg)
        refuse_active_shares(resumed.dir)
    assert cfg is not None and cfg.launcher.kind != "none"
    launcher = cfg.launcher
    check_launcher(launcher)
    recorded = resumed.meta() if resumed is not None else {}
    # a resumed run keeps its split (its shares and their records)
    shares = (recorded.get("launcher") or {}).get("tasks") or launcher.tasks
    samples = expand(cfg)
    batch_size = recorded.get("batch_size") or \
        (cfg.batch_size if cfg.batch_size != "auto" else None)
    run, lock = begin_run("experiment", cfg.name, dump_yaml(to_dict(cfg)), cfg.seed, cfg.device,
                          f"{launcher.kind} launcher", out, argv, resumed)
    try:
        with run.marked_on_error():
            if not (run.dir / FINDINGS).exists():
                write_findings(run.dir, [dict(to_dict(f), source="config")
                                         for f in cfg.findings])
            run.update_meta(launcher={**(recorded.get("launcher") or {}), "kind": launcher.kind,
                                      "tasks": shares}, **{HELD_BY_TASKS: True},
                            **({"batch_size": batch_size} if batch_size else {}))
            todo = [k for k in range(shares)
                    if missing_in_share(run.dir, samples, batch_size, cfg.seed, k, shares)]
            if not todo:  # every sample is there: finish here
                console.info("every share is done: writing the manifest")
                finish_if_last(run, cfg, samples, lock=lock)
                return Submission(run.dir, launcher.kind, shares, {})
            previous = read_jobs(run.dir)
            if previous:  # the jobs before are over: their ids must not speak for the new ones
                write_jobs(run.dir, {**previous, "jobs": {
                    k: v for k, v in previous["jobs"].items() if int(k) not in todo}})
            for share in todo:
                write_record(run.dir, share, state="queued", submitted=utc_now())
            executor = make_executor(launcher, launcher_dir(run.dir), Resources(
                name=f"acr-{cfg.name}", gpus_per_node=launcher.gpus_per_task))
            jobs = executor.submit_array([ShareTask(str(run.dir.resolve()), k, shares)
                                          for k in todo])
            ids = {k: str(job.job_id) for k, job in zip(todo, jobs)}
            write_jobs(run.dir, {
                "kind": launcher.kind, "shares": shares,
                "jobs": {**previous.get("jobs", {}), **{str(k): v for k, v in ids.items()}},
                "submitted": time.time(), "latest": todo,
                "samples_done_at_submit": sum(is_done(run.dir, s) for s in samples)})
            run.event("launcher.submit", launcher=launcher.kind, shares=todo,
                      jobs=list(ids.values()))
    finally:
        lock.close()
    return Submission(run.dir, launcher.kind, shares, ids)


def missing_in_share(run_dir: Path, samples: list[Sample], batch_size: Any, seed: int,
                     share: int, shares: int) -> bool:
    """Whether share `share` still misses a sample (any share does while the batch size is
    not known yet: the first task picks it)."""
    if not batch_size:
        return True
    return any(not is_done(run_dir, s) for b in share_batches(
        plan_batches(samples, batch_size, seed), share, shares) for s in b.samples)


def wait_for_run(run_dir: Path, poll: float = 2.0) -> str:
    """Follow a launched run until its tasks end (and the last one has finished the run);
    returns the run's status then."""
    cfg = load_config(ExperimentConfig, Path(run_dir) / "config.yaml")
    samples = expand(cfg)
    run = Run(Path(run_dir))
    with console.progress("samples", len(samples)) as update:
        while True:
            update(sum(is_done(run.dir, s) for s in samples))
            # (the task that finishes the run holds its lock until its trackers have closed)
            if not any(s.active for s in share_states(run.dir)) and (
                    run.meta().get("status") != "running" or not jobs_alive(run.dir)) and \
                    not is_locked(run.dir):
                return run.meta().get("status")
            time.sleep(poll)


# ----------------------------------------------------------------------------------------------
# A task


@dataclass
class ShareTask:
    """One share of a launched run, as submitit runs it. Its `checkpoint` (called by submitit
    when Slurm preempts the job or its time runs out) requeues the same share: the new task
    finds the samples on disk and generates only the missing batches."""

    run_dir: str
    share: int
    shares: int

    def __call__(self) -> dict:
        return run_share(Path(self.run_dir), self.share, self.shares)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        write_record(Path(self.run_dir), self.share, state="requeued", time=utc_now())
        return submitit.helpers.DelayedSubmission(ShareTask(self.run_dir, self.share,
                                                            self.shares))


def run_share(run_dir: Path, share: int, shares: int) -> dict:
    """Generate the missing batches of one share; the last task to end finishes the run."""
    run = Run(run_dir)
    env = task_environment()
    job = env.job_id if env is not None else None
    started, now = time.perf_counter(), utc_now()
    where = {"job": job, "host": socket.gethostname(), "pid": os.getpid(), "started": now}
    write_record(run_dir, share, state="running", **where)
    run.event("share.start", share=share, **where)
    new_samples, new_audio = 0, 0.0
    try:
        cfg = load_config(ExperimentConfig, run_dir / "config.yaml")
        from acr.core.models import resolve_device

        device = resolve_device(cfg.device)
        samples = expand(cfg)
        runner = HybridBatches(cfg, device, samples) if cfg.hybrid is not None else \
            PlainBatches(cfg, device, samples)
        samples = runner.samples
        batch_size = agreed_batch_size(run, cfg, runner, device, share, shares)
        mine = share_batches(plan_batches(samples, batch_size, cfg.seed), share, shares)
        todo = [b for b in mine if not all(is_done(run.dir, s) for s in b.samples)]
        console.info(f"share {share} of {shares}: {len(todo)} of its {len(mine)} batches to "
                     f"generate on {device}")
        for batch in todo:
            def event(kind: str, **fields: Any) -> None:
                run.event(kind, batch=batch.index, share=share, **fields)

            written = runner.run(run, batch, event)
            new_samples, new_audio = new_samples + len(written), new_audio + sum(written)
    except SystemExit:  # submitit requeues a preempted or timed-out task, then exits
        if read_record(run_dir, share).get("state") != "requeued":
            write_record(run_dir, share, state="interrupted", **where, ended=utc_now())
        raise
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        error = "interrupted" if interrupted else f"{type(exc).__name__}: {exc}"
        with shares_lock(run_dir):
            write_record(run_dir, share, state="interrupted" if interrupted else "failed",
                         **where, ended=utc_now(), error=error)
            run.event("share.end", share=share, state="failed", error=error)
            if run.meta().get("status") == "running":
                if interrupted:
                    run.finish("interrupted")
                else:
                    run.finish("failed", error=f"share {share} (job {job}): {error}")
        try:
            finish_if_last(run, None, None)
        except Exception as late:  # the task's own error is the one to report
            console.warn(f"could not finish the run: {type(late).__name__}: {late}")
        raise
    seconds = time.perf_counter() - started
    write_record(run_dir, share, state="done", **where, ended=utc_now(), samples=new_samples,
                 audio_seconds=round(new_audio, 3), seconds=round(seconds, 3))
    run.event("share.end", share=share, state="done", samples=new_samples,
              seconds=round(seconds, 3))
    finish_if_last(run, cfg, samples)
    return {"share": share, "samples": new_samples, "audio_seconds": new_audio}


def agreed_batch_size(run: Run, cfg: ExperimentConfig, runner: Any, device: str, share: int,
                      shares: int) -> Any:
    """The run's batch size: the one recorded, else this task's choice. The first task to get
    here records it, and config.yaml as used (the strides its models resolved, the device)."""
    with shares_lock(run.dir):
        meta = run.meta()
        launched = meta.get("launcher") or {}
        if not launched.get("config_used"):
            used = used_config(cfg, runner.resolved_params(), device, Dist(share, shares))
            write_atomic(run.dir / "config.yaml", dump_yaml(to_dict(used)))
        batch_size = meta.get("batch_size") or chosen_batch_size(cfg, runner)
        run.update_meta(batch_size=batch_size, launcher={**launched, "config_used": True})
        return batch_size


def finish_if_last(run: Run, cfg: ExperimentConfig | None, samples: list[Sample] | None,
                   lock: Any = None) -> None:
    """When no share is at work any more: the manifest, then, when every sample is there, the
    summary, the analysis and the final status (else the run is failed, if no share said why
    yet), all under the run's lock (`lock`: held already by the caller)."""
    with shares_lock(run.dir):
        if any(s.active for s in share_states(run.dir)):
            return  # another share is still at work: its task ends the run
        own = lock is None
        if own:
            try:
                lock = lock_run(run.dir, wait=120)
            except UsageError:  # a resume holds it: it takes the run on
                console.warn(f"{run.dir}: in use by another acr process; leaving the end of "
                             "the run to it")
                return
        try:
            states = share_states(run.dir)
            if any(s.active for s in states):
                return
            if cfg is None or samples is None:
                cfg = load_config(ExperimentConfig, run.dir / "config.yaml")
                samples = expand(cfg)
            meta = run.meta()
            complete = all(is_done(run.dir, s) for s in samples)
            if meta.get("status") == "completed":
                return
            manifest = write_manifest(run.dir, cfg, samples, complete=complete)
            if not complete:  # a share failed, or its task died: a resume does the rest
                if meta.get("status") == "running":
                    run.finish("failed", error="the tasks ended with samples missing; resume "
                               f"with acr experiment --resume {run.dir}")
                return
            jobs = read_jobs(run.dir)
            done = [s.record for s in states if s.share in jobs.get("latest", [])]
            wall = time.time() - jobs.get("submitted", time.time())
            summary_table(manifest["totals"], sum(r.get("samples", 0) for r in done),
                          sum(r.get("audio_seconds", 0.0) for r in done), wall)
            with run.marked_on_error():
                track_and_finish(run, cfg, samples, meta.get("batch_size"), wall,
                                 manifest["totals"]["audio_seconds"])
        finally:
            if own:
                lock.close()


def track_and_finish(run: Run, cfg: ExperimentConfig, samples: list[Sample], batch_size: Any,
                     wall: float, audio_seconds: float) -> None:
    """The end of a launched run, by its last task: the trackers `tracking:` asks for mirror
    the whole run from its folder now (its tasks, on other machines, do not track): every
    batch's scalars from its sidecars, the clips, then the analysis; then the final status."""
    trackers = open_trackers(run, cfg.tracking, to_dict(cfg))
    try:
        batches = plan_batches(samples, batch_size, cfg.seed) if trackers.active else []
        track_batches(trackers, run.dir, batches)
        analyse_and_finish(run, cfg, samples, len(batches), trackers, wall, audio_seconds)
    finally:
        trackers.close()


# ----------------------------------------------------------------------------------------------
# acr experiment status


@dataclass
class RunStatus:
    """What `acr experiment status` reports."""

    run_dir: Path
    status: str  # the run's (meta.json)
    done: int  # samples on disk
    total: int  # samples planned
    shares: list[ShareState]
    share_totals: list[tuple[int, int]]  # per share: (done, total); empty while unknown
    eta_seconds: float | None  # at the rate since the latest submission
    logs: dict[int, list[str]]  # share -> the tail of its job's log


def experiment_status(run_dir: Path, log_lines: int = 8) -> RunStatus:
    """The progress of an experiment run: samples done of planned, each share's state (with
    Slurm's word for its job, and the tail of its log), and the time left at the rate so
    far."""
    run = open_run(run_dir, "experiment")
    cfg = load_config(ExperimentConfig, run.dir / "config.yaml")
    samples = expand(cfg)
    on_disk = {s.id for s in samples if is_done(run.dir, s)}
    meta = run.meta()
    states = share_states(run.dir)
    batch_size = meta.get("batch_size")
    totals = []
    if states and batch_size:
        batches = plan_batches(samples, batch_size, cfg.seed)
        for state in states:
            mine = [s for b in share_batches(batches, state.share, len(states))
                    for s in b.samples]
            totals.append((sum(s.id in on_disk for s in mine), len(mine)))
    jobs = read_jobs(run.dir)
    eta = None
    if jobs and any(s.active for s in states):
        made = len(on_disk) - jobs.get("samples_done_at_submit", 0)
        elapsed = time.time() - jobs["submitted"]
        if made > 0 and elapsed > 0:
            eta = (len(samples) - len(on_disk)) * elapsed / made
    folder = launcher_dir(run.dir)
    logs = {s.share: log_tail(folder, s.job, log_lines) for s in states if s.job}
    return RunStatus(run.dir, meta.get("status", "unknown"), len(on_disk), len(samples),
                     states, totals, eta, logs)


def render_status(report: RunStatus) -> list[str]:
    """`acr experiment status` as lines: the run, then one line per share, then the log tails
    of the shares that failed."""
    eta = "" if report.eta_seconds is None else \
        f"; about {format_seconds(report.eta_seconds)} left"
    lines = [f"{report.run_dir}: {report.status}; {report.done}/{report.total} samples{eta}"]
    for i, share in enumerate(report.shares):
        counts = f"{report.share_totals[i][0]}/{report.share_totals[i][1]} samples" \
            if report.share_totals else "samples: batch size not chosen yet"
        slurm = f", Slurm {share.slurm_state}" if share.slurm_state else ""
        lines.append(f"  share {share.share}: {share.state} ({counts}; job {share.job}{slurm})"
                     + (f": {share.error}" if share.error else ""))
    for share in report.shares:
        if share.state in ("failed", "interrupted") and report.logs.get(share.share):
            lines.append(f"  log of share {share.share} (job {share.job}), last lines:")
            lines += [f"    {line}" for line in report.logs[share.share]]
    return lines


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"

"""Launchers (issue 16): an experiment as shares of a job array through submitit. The local
executor runs the real path in subprocesses here; the Slurm submission is checked through
submitit's own SlurmExecutor against stand-in sbatch / srun / sacct commands (no cluster here),
which record the sbatch script submitit writes."""
import json
import os
import re
import shutil
import signal
import stat
import time
from pathlib import Path

import pytest

from helpers import run_acr, tensorboard_events

GRID = """\
name: grid
model: tiny-musicgen
device: cpu
seed: 3
samples_per_prompt: 2
batch_size: 2
defaults: {duration: 1.0}
prompt_sets:
  calm: [soft piano, quiet strings]
  loud: [heavy drums]
parameter_sets:
  base: {}
  hot: {temperature: 1.5, top_k: 50}
analyze: false
"""
# batch_size 2 gives 6 batches: share k of 3 generates batches k and k + 3
# (base: calm 0-*, calm 1-*, loud 0-*; hot: the same), e.g. share 1 = base/calm/1-* and
# hot/calm/1-*


def wavs(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*.wav"))}


def record(run: Path, share: int) -> dict:
    path = run / "launcher" / "shares" / f"{share}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def events(run: Path, complete_only: bool = False) -> list[dict]:
    """The run's events; `complete_only`: without a last line still being written (a file read
    while a task appends to it)."""
    text = (run / "events.jsonl").read_text()
    if complete_only:
        text = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The grid and its one-process run (one torch thread, like every task below)."""
    folder = tmp_path_factory.mktemp("grid")
    (folder / "grid.yaml").write_text(GRID)
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the tasks the tests launch inherit it
    proc = run_acr("experiment", folder / "grid.yaml", "--out", folder / "single", cwd=folder)
    assert proc.returncode == 0, proc.stderr[-2000:]
    yield folder
    if saved is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = saved


@pytest.mark.slow
def test_three_local_tasks_are_byte_identical_to_one_process(grid, tmp_path, acr):
    run = tmp_path / "R"
    result = acr("experiment", grid / "grid.yaml", "--out", run, "--launcher", "local",
                 "--tasks", "3", "--wait")
    assert result.exit_code == 0, result.stderr
    assert "submitted 3 of 3 share(s) to local" in result.stdout
    assert wavs(run) == wavs(grid / "single") and len(wavs(run)) == 12
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["launcher"]["tasks"] == 3
    manifest = json.loads((run / "experiment.json").read_text())
    assert manifest["complete"] and manifest["totals"]["samples"] == 12
    # each share generated its own batches (index modulo 3), in its own process
    ends = [e for e in events(run) if e["event"] == "batch.end"]
    assert sorted((e["share"], e["batch"]) for e in ends) == \
        [(0, 0), (0, 3), (1, 1), (1, 4), (2, 2), (2, 5)]
    assert len({record(run, k)["pid"] for k in range(3)}) == 3
    # the first task recorded config.yaml as used: what a one-process run records
    used = (run / "config.yaml").read_text().replace("kind: local", "kind: none") \
        .replace("tasks: 3", "tasks: 1")
    assert used == (grid / "single" / "config.yaml").read_text()
    result = acr("experiment", "status", run)
    assert result.exit_code == 0, result.stderr
    assert f"{run}: completed; 12/12 samples" in result.stdout
    for share, count in ((0, 4), (1, 4), (2, 4)):
        assert f"share {share}: done ({count}/{count} samples; job " in result.stdout


@pytest.mark.slow
def test_a_launched_run_is_tracked_by_the_task_that_finishes_it(grid, tmp_path, acr):
    """Its tasks (on other machines) do not track; the last task mirrors the whole run from its
    folder at the end, as one process would have: every batch's scalars from its sidecars, the
    clips after the last batch, the analysis."""
    run = tmp_path / "T"
    (tmp_path / "t.yaml").write_text(GRID.replace("analyze: false", "analyze: true"))
    result = acr("experiment", tmp_path / "t.yaml", "--out", run, "--launcher", "local",
                 "--tasks", "2", "--wait", "--track", "tensorboard")
    assert result.exit_code == 0, result.stderr
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["tracking"]["sinks"] == ["tensorboard"]
    assert meta["held_by_tasks"] is True  # (`acr runs` lists it as its meta.json says)
    seconds = {}
    for path in run.glob("samples/**/*.json"):
        car = json.loads(path.read_text())
        seconds[car["batch_index"] + 1] = car["batch_seconds"]
    tb = tensorboard_events(run / "tensorboard")
    logged = {e.step: e.value for e in tb.Scalars("generation/seconds")}
    assert sorted(logged) == sorted(seconds) == [1, 2, 3, 4, 5, 6]
    assert logged == pytest.approx(seconds, rel=1e-6)
    assert sorted(tb.Tags()["audio"]) == [f"audio/tiny-musicgen/{s}/{i}"
                                          for s in ("base", "hot") for i in range(3)]
    assert {e.step for tag in tb.Tags()["audio"] for e in tb.Audio(tag)} == {7}
    summary = json.loads((run / "analysis/summary.json").read_text())
    assert tb.Scalars("metrics/loudness_lufs/hot")[0].value == \
        pytest.approx(summary["groups"]["hot"]["loudness_lufs"]["mean"], abs=1e-4)


@pytest.mark.slow
def test_killed_and_failing_tasks_then_resume_gives_the_same_bytes(grid, tmp_path, acr):
    """Share 0's task is killed (SIGKILL) once it has started; share 1's fails writing
    hot/calm/1-1 (a folder sits where the file goes); share 2 completes. `status` tells each
    apart; the run is failed with share 1's error; a resume submits shares 0 and 1 only, and
    the bytes equal the one-process run's."""
    run = tmp_path / "R"
    result = acr("experiment", grid / "grid.yaml", "--out", run, "--launcher", "local",
                 "--tasks", "3")
    assert result.exit_code == 0, result.stderr
    # in place long before a task has imported torch, let alone reached its second batch
    blocked = run / "samples/tiny-musicgen/hot/calm/1-1.wav"
    blocked.mkdir(parents=True)
    deadline = time.monotonic() + 600  # a loaded 2-core machine is slow to start 3 tasks
    # killed as soon as it has started (it still loads its model: far from its last batch;
    # waiting for its first batch raced with its second on a quiet machine)
    while record(run, 0).get("state") != "running":
        assert time.monotonic() < deadline and record(run, 0).get("state") != "done"
        time.sleep(0.02)
    os.kill(record(run, 0)["pid"], signal.SIGKILL)
    done0 = {e["batch"] for e in events(run) if e["event"] == "batch.end"
             and e.get("share") == 0}  # before the kill (usually none)
    status = acr("experiment", "status", run).stdout
    while "share 1: failed" not in status or "share 2: done" not in status:
        assert time.monotonic() < deadline, status
        time.sleep(1)
        status = acr("experiment", "status", run).stdout
    assert "share 0: failed (" in status and "its process ended without recording an end" \
        in status
    assert "share 1: failed (" in status and "IsADirectoryError" in status
    # the tail of share 1's log shows the traceback
    log = status[status.index("log of share 1"):]
    assert "IsADirectoryError" in log.splitlines()[-1]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "failed" and meta["error"].startswith("share 1 (job ")
    assert "IsADirectoryError" in meta["error"]
    assert not (run / "hot/calm/1-1.json").exists()
    blocked.rmdir()
    share2 = record(run, 2)
    result = acr("experiment", "--resume", run, "--launcher", "local", "--wait")
    assert result.exit_code == 0, result.stderr
    assert "submitted 2 of 3 share(s) to local" in result.stdout
    [submit] = [e for e in events(run) if e["event"] == "launcher.submit"][1:]
    assert submit["shares"] == [0, 1]
    assert record(run, 2) == share2  # not run again
    assert wavs(run) == wavs(grid / "single")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and len(meta["resumed"]) == 1
    # the resumed tasks generated only the batches that missed a sample
    again = [(e["share"], e["batch"]) for e in events(run)[events(run).index(submit):]
             if e["event"] == "batch.end"]
    assert sorted(again) == [(0, b) for b in (0, 3) if b not in done0] + [(1, 4)]


@pytest.mark.slow
def test_a_preempted_task_is_requeued_and_loses_at_most_its_batch(grid, tmp_path, acr):
    """SIGUSR2, the signal Slurm sends before preempting a job (or at its time limit), reaches
    the task after its first batch: submitit calls the share's checkpoint and requeues it (the
    local executor restarts it); the new task generates only the batches still missing."""
    run = tmp_path / "R"
    result = acr("experiment", grid / "grid.yaml", "--out", run, "--launcher", "local")
    assert result.exit_code == 0, result.stderr
    deadline = time.monotonic() + 600
    # after the first batch has ended: its files are on disk before its batch.end event, and a
    # signal between the two would leave a batch done without its event
    while not any(e["event"] == "batch.end" and e.get("batch") == 0
                  for e in events(run, complete_only=True)):
        assert time.monotonic() < deadline and record(run, 0).get("state") != "done"
        time.sleep(0.02)
    pid = record(run, 0)["pid"]
    os.kill(pid, signal.SIGUSR2)
    while record(run, 0).get("state") != "done" or \
            json.loads((run / "meta.json").read_text())["status"] == "running":
        assert time.monotonic() < deadline, record(run, 0)
        time.sleep(0.5)
    assert record(run, 0)["pid"] != pid  # a new task finished the share
    assert wavs(run) == wavs(grid / "single")
    assert json.loads((run / "meta.json").read_text())["status"] == "completed"
    log = events(run)
    assert [e["event"] for e in log].count("share.start") == 2
    ended = [e["batch"] for e in log if e["event"] == "batch.end"]
    assert sorted(ended) == [0, 1, 2, 3, 4, 5]  # no batch finished twice
    started = [e["batch"] for e in log if e["event"] == "batch.start"]
    assert len(started) <= 7  # at most the batch it was generating is lost
    out = "".join(p.read_text() for p in (run / "launcher").glob("*_log.*"))
    assert "this job is preempted" in out and "Requeued job" in out


# ---- Slurm: the submission submitit makes, against stand-in commands ------------------------


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch, srun and sacct on PATH: sbatch keeps the script it is given and answers like
    Slurm; sacct answers with the lines of sacct.txt (every task of job 4242 PENDING)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "sbatch": f'#!/bin/sh\ncp "$1" "{tmp_path}/submitted.sh"\n'
                  'echo "Submitted batch job 4242"\n',
        "srun": "#!/bin/sh\nexit 1\n",
        "sacct": f"#!/bin/sh\necho 'JobID|State|NodeList'\ncat {tmp_path}/sacct.txt\n"}
    (tmp_path / "sacct.txt").write_text("4242_[0-2]|PENDING|None assigned\n")
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "submitted.sh"


def sbatch_options(script: Path) -> dict[str, str]:
    lines = [line.removeprefix("#SBATCH --") for line in script.read_text().splitlines()
             if line.startswith("#SBATCH --")]
    return dict(line.partition("=")[::2] for line in lines)


def test_slurm_submission_of_an_experiment(tmp_path, acr, fake_slurm):
    (tmp_path / "grid.yaml").write_text(GRID.replace("device: cpu", "device: auto") +
                                        "launcher: {partition: gpu, time: 90}\n")
    run = tmp_path / "R"
    result = acr("experiment", tmp_path / "grid.yaml", "--out", run, "--launcher", "slurm",
                 "--tasks", "3", "--gpus-per-task", "2", "--slurm-opt", "account=my-lab",
                 "--slurm-opt", "qos=high")
    assert result.exit_code == 0, result.stderr
    assert "jobs by share: 0: 4242_0, 1: 4242_1, 2: 4242_2" in result.stdout
    options = sbatch_options(fake_slurm)
    assert options["partition"] == "gpu" and options["time"] == "90"
    assert options["gpus-per-node"] == "2" and options["nodes"] == "1"
    assert options["ntasks-per-node"] == "1"
    assert options["array"] == "0-2%3"
    assert options["account"] == "my-lab" and options["qos"] == "high"
    assert options["job-name"] == "acr-grid"
    assert options["output"].startswith(str(run.resolve() / "launcher"))
    # the task that runs: submitit's loader of the pickled share task
    assert "-m submitit.core._submit" in fake_slurm.read_text()
    # planned, not generated: the run folder is there, its shares queued
    assert json.loads((run / "meta.json").read_text())["status"] == "running"
    assert [record(run, k)["state"] for k in range(3)] == ["queued"] * 3
    assert not list(run.rglob("*.wav"))
    status = acr("experiment", "status", run)
    assert status.exit_code == 0, status.stderr
    assert f"{run}: running; 0/12 samples" in status.stdout
    assert "share 2: queued (3/3" not in status.stdout  # nothing done yet
    assert "share 2: queued (0/4 samples; job 4242_2, Slurm PENDING)" in status.stdout
    # Slurm's word when a job ends without its task recording an end, with its log's tail
    (fake_slurm.parent / "sacct.txt").write_text(
        "4242_0|RUNNING|gpu07\n4242_1|OUT_OF_MEMORY|gpu08\n4242_2|PENDING|None assigned\n")
    (run / "launcher/4242_1_0_log.err").write_text(
        "share 1 of 3: 2 of its 2 batches to generate on cuda\n\n"
        "slurmstepd: error: Detected 1 oom_kill event in StepId=4242_1.0\n")
    status = acr("experiment", "status", run).stdout
    assert "share 0: running (0/4 samples; job 4242_0, Slurm RUNNING)" in status
    assert "share 1: failed (0/4 samples; job 4242_1, Slurm OUT_OF_MEMORY): Slurm job 4242_1 " \
        "ended (OUT_OF_MEMORY) without the task recording an end" in status
    assert status.splitlines()[-3:] == [
        "  log of share 1 (job 4242_1), last lines:",
        "    share 1 of 3: 2 of its 2 batches to generate on cuda",
        "    slurmstepd: error: Detected 1 oom_kill event in StepId=4242_1.0"]
    # the time left, at the rate since submission: 4 samples in 100 s, 8 to go
    jobs = json.loads((run / "launcher/jobs.json").read_text())
    (run / "launcher/jobs.json").write_text(json.dumps({**jobs,
                                                        "submitted": time.time() - 100}))
    for name in ("base/calm/0-0", "base/calm/0-1", "base/loud/0-0", "base/loud/0-1"):
        for suffix in (".wav", ".json"):
            path = run / "samples/tiny-musicgen" / (name + suffix)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    status = acr("experiment", "status", run).stdout
    head, _, left = status.splitlines()[0].partition("; about ")
    assert head == f"{run}: running; 4/12 samples"
    minutes, seconds = map(int, re.fullmatch(r"(\d+)m(\d+)s left", left).groups())
    assert 200 <= 60 * minutes + seconds <= 230  # 200 s, and the time status took to start
    assert "share 0: running (2/4 samples" in status and "share 2: queued (2/4 samples" \
        in status
    shutil.rmtree(run / "samples")
    (fake_slurm.parent / "sacct.txt").write_text("4242_[0-2]|PENDING|None assigned\n")
    # the same config from the file alone (launcher: kind slurm)
    (tmp_path / "k.yaml").write_text(GRID + "launcher: {kind: slurm, tasks: 2}\n")
    assert acr("experiment", tmp_path / "k.yaml", "--out", tmp_path / "K").exit_code == 0
    assert sbatch_options(fake_slurm)["array"] == "0-1%2"
    result = acr("experiment", "status", tmp_path / "K" / "launcher")
    assert result.exit_code == 2 and "not a run folder" in result.stderr
    # a resume while its tasks are queued is refused, naming them
    result = acr("experiment", "--resume", run, "--launcher", "slurm")
    assert result.exit_code == 2
    assert "still at work: share 0 queued (job 4242_0)" in result.stderr


def test_launcher_errors_are_usage_errors(tmp_path, acr):
    (tmp_path / "grid.yaml").write_text(GRID)
    for args, message in (
            (("--launcher", "pbs"), "launcher.kind: 'pbs' is not one of"),
            (("--launcher", "local", "--tasks", "0"), "launcher.tasks: 0 is out of range"),
            (("--slurm-opt", "account"), "--slurm-opt account: expected KEY=VALUE")):
        result = acr("experiment", tmp_path / "grid.yaml", "--out", tmp_path / "R", *args)
        assert result.exit_code == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert not (tmp_path / "R").exists()
    if shutil.which("srun") is None:
        result = acr("experiment", tmp_path / "grid.yaml", "--out", tmp_path / "R",
                     "--launcher", "slurm")
        assert result.exit_code == 2 and "no Slurm here" in result.stderr


# ---- fine-tunes: one DDP job over nodes --------------------------------------------------------

FINETUNE = """\
name: ft
model: tiny-musicgen
data: {data}
strategy: lora
epochs: 1
lr: 3.0e-3
segment_duration: 2.0
sample_every: 0
device: cpu
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from acr.commands.finetune import make_demo_data

    folder = tmp_path_factory.mktemp("ft") / "demo"
    make_demo_data(folder, files_per_class=2, seconds=3.0)
    return folder


def test_torchrun_variables_from_a_slurm_task(monkeypatch):
    """Rank 5 of a job of 2 nodes x 4 tasks, on the second node: the variables
    acr.core.distributed.init_dist reads, as torchrun would set them."""
    from acr.core.launch import dist_environment, task_environment

    for name, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "31337",
                        "SLURM_NTASKS": "8", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1",
                        "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_PROCID": "5",
                        "SLURM_LOCALID": "1"}.items():
        monkeypatch.setenv(name, value)
    env = dist_environment(task_environment())
    assert env == {"MASTER_ADDR": "gpu07", "MASTER_PORT": str(15000 + 1337),
                   "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    monkeypatch.setenv("SLURM_PROCID", "0")  # another rank of the same job: same rendezvous
    other = dist_environment(task_environment())
    assert (other["MASTER_ADDR"], other["MASTER_PORT"], other["RANK"]) == \
        ("gpu07", env["MASTER_PORT"], "0")


def test_rendezvous_ports_stay_below_the_ports_of_outgoing_connections():
    """A port in Linux's default range for outgoing connections (32768-60999) can be held by
    any connection the first node has open, and the rendezvous then fails: every job id's port
    lies below it; an id written as an array task's (123_4) reads its job's number."""
    from acr.core.launch import master_port

    ports = [master_port(str(job)) for job in [0, 1, 9999, 12768, 19999, 31337, 4294967295,
                                                123456789012]]
    assert all(1024 <= port < 32768 for port in ports), ports
    assert len(set(ports)) == len(ports) - 1  # 19999's port is 9999's
    assert master_port("123_4") == master_port("123") == 15123


def test_slurm_submission_of_a_multi_node_finetune(tmp_path, acr, fake_slurm, demo):
    (tmp_path / "ft.yaml").write_text(FINETUNE.format(data=demo).replace("device: cpu",
                                                                           "device: auto"))
    run = tmp_path / "R"
    result = acr("finetune", tmp_path / "ft.yaml", "--out", run, "--launcher", "slurm",
                 "--nodes", "2", "--gpus-per-node", "4", "--partition", "a100", "--time", "600",
                 "--slurm-opt", "constraint=80gb")
    assert result.exit_code == 0, result.stderr
    assert "submitted job 4242 (8 rank(s)) to slurm" in result.stdout
    options = sbatch_options(fake_slurm)
    assert (options["nodes"], options["ntasks-per-node"], options["gpus-per-node"]) == \
        ("2", "4", "4")
    assert options["partition"] == "a100" and options["time"] == "600"
    assert options["constraint"] == "80gb" and "array" not in options
    # reserved for the job: only the launcher's files, until rank 0 starts the run
    assert [p.name for p in run.iterdir()] == ["launcher"]
    assert (run / "launcher/4242_submitted.pkl").is_file()
    result = acr("finetune", tmp_path / "ft.yaml", "--launcher", "local", "--nodes", "2",
                 "--out", tmp_path / "L")
    assert result.exit_code == 2 and "the local launcher runs on this machine only" \
        in result.stderr


@pytest.mark.slow
def test_two_rank_local_finetune_job(tmp_path, acr, demo, monkeypatch):
    """Two CPU ranks (gloo) of one local job: each sets torchrun's variables from submitit's
    environment, the recipe joins them into one DDP run."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "ft.yaml").write_text(FINETUNE.format(data=demo) +
                                      "launcher: {gpus_per_node: 0, tasks_per_node: 2}\n")
    run = tmp_path / "R"
    result = acr("finetune", tmp_path / "ft.yaml", "--out", run, "--launcher", "local",
                 "--wait")
    assert result.exit_code == 0, result.stderr + "".join(
        p.read_text() for p in (run / "launcher").glob("*.err"))
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["world_size"] == 2
    assert (run / "model/state_dict.bin").is_file()
    logs = sorted((run / "launcher").glob("*_log.err"))
    assert len(logs) == 2  # one per rank


@pytest.mark.slow
def test_submitit_is_imported_only_when_a_launcher_is_used():
    from helpers import run_python

    proc = run_python("import sys\nimport acr.cli, acr.commands.experiment, "
                      "acr.commands.finetune, acr.core.launch\n"
                      "print(sorted(m for m in sys.modules if m.split('.')[0] == 'submitit'))")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"

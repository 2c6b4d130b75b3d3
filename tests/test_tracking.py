"""Tracking sinks (TensorBoard, W&B offline) for experiment and finetune, read back with
TensorBoard's own EventAccumulator and wandb's own protobuf records; kill + resume; failures."""
import contextlib
import csv
import functools
import http.server
import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile
import yaml

from acr.core import child_sink, tracking
from acr.core.child_sink import (CHILD_NICENESS, ChildSink, ChildSinkError, end_idle_children,
                                  start_early)
from acr.core.config.schema import TrackingOptions, WandbOptions
from acr.core.runs import Run
from acr.core.tracking import (Clip, SinkStart, SinkWorker, TensorBoardSink, Trackers,
                               flat_config, masked_crc32c, open_trackers, read_journal,
                               tensorboard_audio, tensorboard_last_step, wandb_mode)
from helpers import (ROOT, fail_to_warm, kill_when, open_disk_full_tensorboard_sink,
                     open_file_recorder, open_recorder_keeping_a_temporary_folder,
                     tensorboard_events, wandb_history, wandb_records, write_pid)


@pytest.fixture(scope="module")
def wandb_home(tmp_path_factory):
    """One folder for wandb's settings for the whole module: wandb loses the history of a
    second run in a process whose WANDB_CONFIG_DIR changed since the first."""
    return tmp_path_factory.mktemp("wandb-home")


@pytest.fixture(autouse=True)
def wandb_without_a_key(monkeypatch, wandb_home):
    """wandb never reaches for the network here: no API key and no netrc, so acr's default mode
    is offline; no WANDB_MODE (which would hide what a user's environment, without it, gets
    from wandb); silent."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(wandb_home / "no-netrc"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(wandb_home / "config"))


GRID = """\
name: grid
model: tiny-musicgen
device: cpu
seed: 3
samples_per_prompt: 2
batch_size: 2
defaults: {duration: 1.0}
prompt_sets:
  calm: [soft piano, quiet strings, low cello]
parameter_sets:
  base: {}
  hot: {temperature: 1.5, top_k: 50}
analyze: false
"""

FINETUNE = """\
name: ft
model: tiny-musicgen
data: demo
strategy: full
epochs: 3
lr: 3.0e-3
segment_duration: 2.0
sample_every: 2
sample_duration: 1.0
device: cpu
"""


def write(folder: Path, text: str, name: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def sidecars(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run / "samples").rglob("*.json"))]


def steps_of(rows: list[dict], key: str) -> list[int]:
    return [row["_step"] for row in rows if key in row]


# ---- unit: the W&B mode and the flattened config -------------------------------------------------

def test_wandb_is_offline_without_an_api_key_and_online_with_one(monkeypatch, tmp_path):
    assert wandb_mode(None) == "offline"
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_mode(None) == "online"
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert wandb_mode(None) == "offline"  # the key is for another host
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    assert wandb_mode(None) == "online"
    assert wandb_mode("disabled") == "disabled" and wandb_mode("offline") == "offline"


def test_wandb_mode_in_the_environment_decides_where_the_config_does_not(monkeypatch):
    """WANDB_MODE, as wandb reads it (a cluster's nodes without a network, an API key in the
    shared home's ~/.netrc): it wins over the key, and the config's mode wins over it."""
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    for environment, mode in [("offline", "offline"), ("dryrun", "offline"), ("run", "online"),
                              ("online", "online"), ("shared", "online"),
                              ("disabled", "disabled"), ("sometimes", "online"),
                              ("OFFLINE", "online")]:  # (no modes to wandb: as if unset)
        monkeypatch.setenv("WANDB_MODE", environment)
        assert wandb_mode(None) == mode, environment
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode("online") == "online"
    started = []  # the child a command starts early, and the mode its warm-up sets
    monkeypatch.setattr(child_sink, "start_early",
                        lambda name, warm: started.append((name, warm.args)))
    tracking.start_trackers(TrackingOptions(wandb=WandbOptions()))
    assert started == [("wandb-offline", ("offline",))]
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert not tracking.wants_wandb(TrackingOptions(wandb=WandbOptions()))  # (no process)
    assert tracking.wants_wandb(TrackingOptions(wandb=WandbOptions(mode="offline")))


def test_flat_config_keeps_scalars_and_writes_the_rest_as_text():
    assert flat_config({"a": {"b": 1, "c": None}, "d": [1, {"e": 2}], "f": "x", "g": True}) == \
        {"a.b": 1, "a.c": "null", "d": '[1, {"e": 2}]', "f": "x", "g": True}


def test_track_flag_refuses_an_unknown_tracker(acr, in_tmp):
    path = write(in_tmp, GRID, "grid.yaml")
    result = acr("experiment", path, "--track", "mlflow")
    assert result.exit_code == 2 and "--track mlflow: not a tracker" in result.stderr
    assert not (in_tmp / "experiments").exists()


@pytest.mark.parametrize("tracking, key", [("{wandb: {mode: sometimes}}", "tracking.wandb.mode"),
                                           ("{close_wait_seconds: 0}",
                                            "tracking.close_wait_seconds")])
def test_tracking_config_errors_name_the_key(acr, in_tmp, tracking, key):
    path = write(in_tmp, GRID + f"tracking: {tracking}\n", "grid.yaml")
    result = acr("validate", path)
    assert result.exit_code == 2 and key in result.stderr


def test_open_trackers_takes_the_configs_close_wait(tmp_path):
    """(The hang test shows what the bound does.)"""
    run = new_run(tmp_path)
    trackers = open_trackers(run, TrackingOptions(tensorboard=True, close_wait_seconds=2.5), {})
    try:
        assert trackers.close_wait == 2.5
    finally:
        trackers.close()


# ---- the sink workers: off the run's path, in order, nothing lost -------------------------------

class Recorder:
    """A sink that records what it is sent; `gate` (an Event) holds each call until it is set,
    `fail_at` makes that call (counting from 1) raise a full disk."""

    def __init__(self, gate=None, fail_at=None):
        self.calls, self.closed = [], False
        self.gate, self.fail_at = gate, fail_at

    def _record(self, kind, step, values):
        if self.gate is not None:
            assert self.gate.wait(30)
        if self.fail_at is not None and len(self.calls) + 1 == self.fail_at:
            self.calls.append((kind, step, "raised"))
            raise OSError(28, "No space left on device")
        self.calls.append((kind, step, values))

    def config(self, config):
        self.calls.append(("config", 0, config))

    def scalars(self, step, values):
        self._record("scalars", step, values)

    def text(self, step, values):
        self._record("text", step, values)

    def close(self):
        self.closed = True


def new_run(folder: Path) -> Run:
    (folder / "meta.json").write_text("{}")
    return Run(folder)


def worker(run: Run, name: str, sink=None, error=None) -> SinkWorker:
    def start():
        if error is not None:
            raise error
        return sink, 0
    return SinkWorker(SinkStart(name, start), run, {"seed": 1}, [])


def test_a_child_sink_gets_every_call_in_its_process_in_order_by_close(tmp_path):
    record = tmp_path / "calls.jsonl"
    sink = ChildSink("recorder", open_file_recorder, record, None, 7)
    assert sink.first == 7
    child = sink.child.process.pid
    assert int(Path(str(record) + ".pid").read_text()) == child != os.getpid()
    # a process group of its own (a Ctrl-C at the terminal reaches the run's group, not it), in
    # the run's session: where the kernel groups CPU time by session (autogroup), a child in a
    # session of its own would get as much CPU as the run, its niceness notwithstanding
    assert os.getpgid(child) == child != os.getpgid(0) and os.getsid(child) == os.getsid(0)
    assert os.getpriority(os.PRIO_PROCESS, child) == \
        os.getpriority(os.PRIO_PROCESS, 0) + CHILD_NICENESS
    if hasattr(os, "SCHED_IDLE") and os.sched_getscheduler(0) == os.SCHED_OTHER:  # (Linux)
        assert os.sched_getscheduler(child) == os.SCHED_IDLE  # the CPU time the run leaves
    for number in (signal.SIGINT, signal.SIGTERM):  # a Ctrl-C or a job's end is the run's
        os.kill(sink.child.process.pid, number)  # to handle: the child goes on
    sink.config({"seed": 1})
    for step in range(1, 51):
        sink.scalars(step, {"loss": 1.0 / step})
    sink.clips(51, [Clip("a/0", tmp_path / "x.wav", "calm")])
    sink.close()
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls[0] == ["config", {"seed": 1}] and calls[-1] == ["close"]
    assert [c[1] for c in calls if c[0] == "scalars"] == list(range(1, 51))
    assert calls[-2] == ["clips", 51, [str(tmp_path / "x.wav")]]
    # the child waits for the next sink of its name: the next run's
    assert sink.child.process.poll() is None
    again = ChildSink("recorder", open_file_recorder, tmp_path / "again.jsonl")
    assert again.child.process.pid == sink.child.process.pid
    again.scalars(1, {"loss": 0.5})
    again.close()
    assert (tmp_path / "again.jsonl").read_text().splitlines()[-1] == '["close"]'
    # ... unless this process's environment changed since it started (a new child takes it)
    os.environ["ACR_TEST_CHANGED"] = "1"
    try:
        fresh = ChildSink("recorder", open_file_recorder, tmp_path / "fresh.jsonl")
    finally:
        del os.environ["ACR_TEST_CHANGED"]
    assert fresh.child.process.pid != sink.child.process.pid
    assert sink.child.process.poll() is not None  # (the old one was ended)
    fresh.close()
    end_idle_children()
    assert fresh.child.process.poll() is not None


def test_a_child_started_early_is_the_one_its_sink_takes(tmp_path, monkeypatch):
    """A command starts its trackers' children before it imports torch (start_early): the
    warm-up runs in the child first, and the sink opened later takes that child, although
    torch's import set variables in the environment meanwhile; not once another variable
    changed. A warm-up that fails leaves the sink's opening to say what fails."""
    try:
        start_early("early", functools.partial(write_pid, tmp_path / "warm.pid"))
        early = child_sink._IDLE["early"]
        start_early("early", functools.partial(write_pid, tmp_path / "again.pid"))
        assert child_sink._IDLE["early"] is early  # (one waits already: no second child)
        monkeypatch.setenv("KMP_INIT_AT_FORK", "FALSE")  # as an import in the command does
        sink = ChildSink("early", open_file_recorder, tmp_path / "a.jsonl")
        assert int((tmp_path / "warm.pid").read_text()) == sink.child.process.pid == \
            int((tmp_path / "a.jsonl.pid").read_text()) == early.process.pid
        sink.close()
        start_early("failing", fail_to_warm)
        early = child_sink._IDLE["failing"]
        sink = ChildSink("failing", open_file_recorder, tmp_path / "b.jsonl")
        assert sink.child is early
        sink.scalars(1, {"loss": 1.0})
        sink.close()
        assert (tmp_path / "b.jsonl").read_text().splitlines() == [
            '["scalars", 1, {"loss": 1.0}]', '["close"]']
        start_early("refused", fail_to_warm)
        with pytest.raises(ChildSinkError, match="ModuleNotFoundError: No module named"):
            ChildSink("refused", open_file_recorder, tmp_path / "c.jsonl", None, 0, True)
        start_early("changed", functools.partial(write_pid, tmp_path / "changed.pid"))
        early = child_sink._IDLE["changed"].process
        monkeypatch.setenv("ACR_TEST_CHANGED", "1")
        sink = ChildSink("changed", open_file_recorder, tmp_path / "d.jsonl")
        assert sink.child.process.pid != early.pid and early.poll() is not None  # (ended)
        sink.close()
    finally:
        end_idle_children()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["experiment", "finetune"])
def test_a_command_starts_each_trackers_process_once(in_tmp, demo, command):
    """In a fresh process, as a user runs it: the tracker's child started before the command
    imports torch is the one the run's sink takes (torch's import, and what the command loads,
    change the environment meanwhile: a reuse refused there would start a second one)."""
    text = GRID if command == "experiment" else \
        FINETUNE.replace("data: demo", f"data: {demo}").replace("epochs: 3", "epochs: 1")
    path = write(in_tmp, text, f"{command}.yaml")
    counting = (f"import sys; sys.argv = ['acr', {command!r}, {str(path)!r}, '--out', 'R', "
                "'--track', 'tensorboard']\n"
                "from acr.core import child_sink\n"
                "start, starts = child_sink._start, []\n"
                "child_sink._start = lambda: starts.append(1) or start()\n"
                "from acr.cli import app\n"
                "try:\n    app()\nexcept SystemExit as end:\n    assert not end.code, end.code\n"
                "print('children started:', len(starts))\n")
    done = subprocess.run([sys.executable, "-c", counting], capture_output=True, text=True,
                          env=own_service_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    assert "children started: 1" in done.stdout, done.stdout
    assert tensorboard_events(in_tmp / "R" / "tensorboard").Scalars(
        "generation/seconds" if command == "experiment" else "train/loss")


LOOP_PROBE = ROOT / "benchmarks" / "helpers" / "loop_probe.py"


def loop_probe():
    spec = importlib.util.spec_from_file_location("loop_probe", LOOP_PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/schedstat"),
                    reason="needs Linux's scheduler statistics")
@pytest.mark.parametrize("command", ["experiment", "finetune"])
def test_the_tracking_benchmarks_loop_probe_reads_the_loop_it_runs(in_tmp, demo, command):
    """benchmarks/helpers/loop_probe.py runs a command through acr's entry function with two
    readings of the scheduler's statistics: at its loop's start and end (its hooks are acr's
    own functions: renamed or no longer called after the loop, they would read less or
    nothing). The main thread's time on a CPU and waiting for one fit in the loop's span and
    fill a good part of it (the loop works; a reading taken at the wrong end would not)."""
    text = GRID if command == "experiment" else \
        FINETUNE.replace("data: demo", f"data: {demo}").replace("epochs: 3", "epochs: 2")
    path, readings = write(in_tmp, text, f"{command}.yaml"), in_tmp / "readings.json"
    done = subprocess.run([sys.executable, str(LOOP_PROBE), str(readings), command, str(path),
                           "--out", "R", "--track", "tensorboard"],
                          capture_output=True, text=True, env=own_service_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    start, end = json.loads(readings.read_text())
    loop = json.loads((in_tmp / "R" / "meta.json").read_text())["wall_seconds"]
    share = loop_probe().loop_share(start, end)
    assert 0 < share["main_cpu"] and 0.2 * loop < share["main_cpu"] + share["main_waiting"] \
        <= loop + 0.1
    assert share["others_cpu"] >= 0 and share["steal"] >= 0


def test_a_plain_resume_starts_the_trackers_its_run_asks_for_early(acr, in_tmp, monkeypatch):
    """`--resume RUN` with no CONFIG and no flag: the command starts the trackers of the run's
    own config before it imports torch, as with a CONFIG (else the run's wait for their opening,
    before its loop, would wait for W&B's import)."""
    path = write(in_tmp, GRID + "tracking: {tensorboard: true}\n", "grid.yaml")
    assert acr("experiment", path, "--out", "R").exit_code == 0
    started, start = [], child_sink.start_early
    monkeypatch.setattr(child_sink, "start_early",
                        lambda name, warm: started.append(name) or start(name, warm))
    try:
        result = acr("experiment", "--resume", str(in_tmp / "R"))
        assert result.exit_code == 0, result.stderr
        assert started == ["tensorboard"]
        # another command's run: the command's own error, not its config's schema errors
        for flags in ([], ["--device", "cpu"], ["--track", "wandb"]):
            result = acr("finetune", "--resume", str(in_tmp / "R"), *flags)
            assert result.exit_code == 2
            assert "a run of `acr experiment`, not `acr finetune`" in result.stderr, \
                (flags, result.stderr)
        assert started == ["tensorboard"]
    finally:
        end_idle_children()


def test_a_child_sink_reports_its_failures_with_the_childs_error(tmp_path):
    with pytest.raises(ChildSinkError, match="ModuleNotFoundError: No module named 'tracker'"):
        ChildSink("absent", open_file_recorder, tmp_path / "a.jsonl", None, 0, True)
    with pytest.raises(ChildSinkError, match="PermissionError: no entry"):
        ChildSink("absent", open_file_recorder, tmp_path / "a.jsonl", None, 0,
                  PermissionError("no entry"))  # (an OSError too: said, not swallowed)
    sink = ChildSink("refusing", open_file_recorder, tmp_path / "b.jsonl", "scalars")
    sink.scalars(1, {"loss": 1.0})  # fails in the child: said at the next call
    assert sink.child.connection.poll(60)
    with pytest.raises(ChildSinkError, match="ValueError: scalars refused"):
        sink.scalars(2, {"loss": 1.0})
    sink.close()
    assert sink.child.process.poll() is not None  # a failed sink's child is ended
    assert (tmp_path / "b.jsonl").read_text().splitlines()[-1] == '["close"]'  # closed anyway
    # through a SinkWorker: one warning naming the child's error, the run goes on
    run = new_run(tmp_path)
    start = SinkStart("refusing", lambda: ((s := ChildSink("refusing", open_file_recorder,
                                                            tmp_path / "c.jsonl", "text")),
                                           s.first))
    trackers = Trackers(run, [SinkWorker(start, run, {"seed": 1}, [])])
    trackers.text(1, "note", {"a": "b"})
    trackers.scalars(2, "batch", {"loss": 1.0})
    trackers.close()
    failed = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["sink"], e["error"]) for e in failed] == [("refusing", "ValueError: text refused")]


def soon(condition: Callable[[], bool], within: float) -> bool:
    """Whether `condition()` holds within `within` seconds (looked at every 50 ms)."""
    until = time.monotonic() + within
    while not condition():
        if time.monotonic() > until:
            return False
        time.sleep(0.05)
    return True


def ended(pid: int, within: float = 20.0) -> bool:
    """Whether process `pid` is gone (or a zombie) within `within` seconds."""
    status = Path(f"/proc/{pid}/status")
    return soon(lambda: not status.exists() or "zombie" in status.read_text().lower(), within)


def appears(path: Path, within: float = 30.0) -> bool:
    """Whether file `path` exists within `within` seconds."""
    return soon(path.exists, within)


def test_a_child_sink_ends_with_the_process_that_made_it(tmp_path):
    """A kill of the run leaves no tracker process behind (nor one that writes on), even while
    a process the run forked (an analysis worker) still holds the run's end of the socket."""
    record = tmp_path / "calls.jsonl"
    code = ("import os, signal, sys; sys.path.insert(0, sys.argv[2])\n"
            "from helpers import open_recorder_keeping_a_temporary_folder\n"
            "from acr.core.child_sink import ChildSink\n"
            "sink = ChildSink('recorder', open_recorder_keeping_a_temporary_folder, "
            "sys.argv[1])\n"
            "sink.scalars(1, {'loss': 1.0})\n"
            "if os.fork() == 0:\n"
            "    os.closerange(0, 3); import time; time.sleep(30); os._exit(0)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", code, str(record),
                             str(Path(__file__).parent)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(temporary)})
    assert proc.wait(timeout=60) == -signal.SIGKILL, proc.stderr.read()
    killed = time.monotonic()
    child = int(Path(str(record) + ".pid").read_text())
    assert ended(child) and time.monotonic() - killed < 10  # (the fork sleeps 30 s)
    assert "close" not in record.read_text()
    assert list(temporary.iterdir()) == []  # (the child's temporary files: removed by it)


def test_a_childs_temporary_files_go_when_it_ends(tmp_path, capfd):
    """What a tracker's library puts in the temporary folder for the life of its process (wandb
    makes two folders as it is imported, and removes them only in a normal interpreter exit)
    lands in a folder of the child's own, which goes when the child ends: after a clean close,
    and after a sink that failed to open (the child then exits normally). None is left behind
    per run."""
    try:
        sink = ChildSink("temporary", open_recorder_keeping_a_temporary_folder,
                         tmp_path / "calls.jsonl")
        sink.scalars(1, {"loss": 1.0})
        own = Path(sink.child.temporary)
        assert own.name.startswith("acr-tracker-")
        assert [p.name.endswith("library-media") for p in own.iterdir()] == [True]
        sink.close()
    finally:
        end_idle_children()  # (waits for the child to end)
    assert sink.child.process.poll() is not None and not own.exists()
    before = set(Path(tempfile.gettempdir()).glob("acr-tracker-*"))
    with pytest.raises(ChildSinkError, match="ValueError: refused"):
        ChildSink("temporary", open_recorder_keeping_a_temporary_folder, tmp_path / "b.jsonl",
                  ValueError("refused"))
    assert set(Path(tempfile.gettempdir()).glob("acr-tracker-*")) == before
    assert "Traceback" not in capfd.readouterr().err


def test_a_child_stuck_after_its_sink_failed_is_killed_when_the_sink_closes(tmp_path,
                                                                           monkeypatch):
    """A sink that failed is closed as far as it can be in its child, and the child then ends;
    one stuck in that closing (its library waiting on the network) does not read its closed
    socket, and is killed after END_WAIT_SECONDS, its temporary folder removed: closing the
    run's side never waits longer."""
    monkeypatch.setattr(child_sink, "END_WAIT_SECONDS", 1.0)
    record = tmp_path / "calls.jsonl"
    sink = ChildSink("stuck", open_file_recorder, record, "scalars", 0, None, "close")
    sink.scalars(1, {"loss": 1.0})  # (refused in the child: it says so at the next call)
    assert soon(sink.child.connection.poll, 30)
    with pytest.raises(ChildSinkError, match="ValueError: scalars refused"):
        sink.scalars(2, {"loss": 0.5})
    temporary = Path(sink.child.temporary)
    began = time.monotonic()
    sink.close()
    assert time.monotonic() - began < 10  # (1 s for its answer, 1 s for it to end, then killed)
    pid = int(Path(str(record) + ".hung").read_text())  # (it was stuck in the closing)
    assert sink.child.process.returncode == -signal.SIGKILL and ended(pid, within=1)
    assert not temporary.exists()


def test_a_child_works_without_a_temporary_folder_of_its_own(tmp_path, monkeypatch):
    """Where no folder can be made for a child's temporary files, it uses the system's."""
    def no_folder(*_, **__):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(child_sink.tempfile, "mkdtemp", no_folder)
    record = tmp_path / "calls.jsonl"
    sink = ChildSink("without", open_file_recorder, record)
    try:
        assert sink.child.temporary is None
        sink.scalars(1, {"loss": 1.0})
        sink.close()
    finally:
        end_idle_children()
    assert [json.loads(line) for line in record.read_text().splitlines()] == [
        ["scalars", 1, {"loss": 1.0}], ["close"]]


def test_calls_are_journaled_at_once_and_reach_a_slow_sink_in_order_by_close(tmp_path):
    run, gate = new_run(tmp_path), threading.Event()
    sink = Recorder(gate=gate)
    trackers = Trackers(run, [worker(run, "slow", sink)])
    for step in range(1, 41):
        trackers.scalars(step, "train", {"loss": step / 10})
    trackers.text(40, "model", {"model": "/runs/x/model"})
    # the run never waited: every call is in the journal, none has reached the held sink
    assert [line["step"] for line in read_journal(tmp_path)] == list(range(1, 41)) + [40]
    assert all(call[0] == "config" for call in sink.calls)  # (the thread may not have begun)
    gate.set()
    trackers.close()  # waits until the sink had every call, then closes it
    assert sink.calls == [("config", 0, {"seed": 1})] + \
        [("scalars", s, {"loss": s / 10}) for s in range(1, 41)] + \
        [("text", 40, {"model": "/runs/x/model"})]
    assert sink.closed
    record = json.loads((tmp_path / "meta.json").read_text())["tracking"]
    assert record == {"sinks": ["slow"], "step": 40, "groups": ["model", "train"]}


def test_a_sink_failing_when_even_its_event_cannot_be_written_never_blocks_the_run(tmp_path):
    """A full disk under both the sink and events.jsonl: the sink's thread must still answer
    drain() and close(), or the experiment would hang before its analysis."""
    class FullDiskRun(Run):
        def event(self, kind, **fields):
            raise OSError(28, "No space left on device")

    run = FullDiskRun(new_run(tmp_path).dir)
    sink = Recorder(fail_at=2)  # its first scalars (after the config)

    class Raising(Recorder):  # even the warning's bookkeeping raises something unexpected
        def scalars(self, step, values):
            raise KeyboardInterrupt

    trackers = Trackers(run, [worker(run, "full", sink), worker(run, "odd", Raising())])
    for step in (1, 2, 3):
        trackers.scalars(step, "train", {"loss": 1.0})
    done = threading.Thread(target=trackers.drain)
    done.start()
    done.join(10)
    assert not done.is_alive(), "drain() waited for a dead sink thread"
    closing = threading.Thread(target=trackers.close)
    closing.start()
    closing.join(10)
    assert not closing.is_alive(), "close() waited for a dead sink thread"
    assert sink.calls[1] == ("scalars", 1, "raised") and len(sink.calls) == 2


def test_a_sinks_thread_gathers_calls_and_drain_and_close_do_not_wait_for_more(tmp_path,
                                                                               monkeypatch):
    """A sink's thread sends the calls queued within GATHER_SECONDS of the first together
    (so it and the sink's process wake a few times a second, not at every step); drain()
    and close() have it send at once."""
    monkeypatch.setattr("acr.core.tracking.GATHER_SECONDS", 60.0)
    run, arrived = new_run(tmp_path), {}

    class Timed(Recorder):
        def scalars(self, step, values):
            arrived[step] = time.monotonic()
            super().scalars(step, values)

    sink = Timed()
    trackers = Trackers(run, [worker(run, "timed", sink)])
    trackers.scalars(1, "train", {"loss": 1.0})
    time.sleep(0.5)
    second = time.monotonic()
    trackers.scalars(2, "train", {"loss": 0.5})
    trackers.drain()
    assert second <= arrived[1] <= arrived[2] < second + 30  # held for the second; not 60 s
    trackers.scalars(3, "train", {"loss": 0.25})
    closing = time.monotonic()
    trackers.close()
    assert time.monotonic() - closing < 30
    assert [c[1] for c in sink.calls] == [0, 1, 2, 3] and sink.closed


def test_drain_waits_until_the_sinks_had_every_call(tmp_path):
    """What the experiment does before its analysis forks worker processes."""
    run, gate = new_run(tmp_path), threading.Event()
    sink = Recorder(gate=gate)
    trackers = Trackers(run, [worker(run, "slow", sink), worker(run, "absent", error=OSError())])
    for step in (1, 2, 3):
        trackers.scalars(step, "batch", {"x": 1.0})
    threading.Timer(0.2, gate.set).start()
    trackers.drain()
    assert [c[1] for c in sink.calls] == [0, 1, 2, 3] and not sink.closed
    trackers.close()
    assert sink.closed


def event_kinds(run: Path) -> list[str]:
    return [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]


def opened_event(run: Path) -> dict:
    """The run's one `tracking.open` event (Trackers.wait_open, before its loop)."""
    lines = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    opened = [line for line in lines if line["event"] == "tracking.open"]
    assert len(opened) == 1, [line["event"] for line in lines]
    return opened[0]


def test_wait_open_waits_for_the_sinks_to_open_and_no_longer_than_it_is_told(tmp_path, capsys):
    """What a command does right before its loop: the sinks' opening done first (not beside
    the first steps), but a slow one (W&B online on a slow network) never holds the run for
    more than the seconds given."""
    run, gate = new_run(tmp_path), threading.Event()

    def opening_after(seconds, sink):
        def start():
            time.sleep(seconds)
            return sink, 0
        return start

    def held_open(sink):
        def start():
            assert gate.wait(30)
            return sink, 0
        return start

    quick, held = Recorder(), Recorder()
    began = time.monotonic()
    trackers = Trackers(run, [SinkWorker(SinkStart("quick", opening_after(0.3, quick)), run,
                                         {"seed": 1}, []),
                              worker(run, "absent", error=OSError("no such tracker")),
                              SinkWorker(SinkStart("held", held_open(held)), run, {"seed": 1},
                                         [])])
    trackers.wait_open(1.0)
    waited = time.monotonic() - began
    assert 1.0 <= waited < 10  # the held sink's second, not its 30
    event = opened_event(tmp_path)
    assert event["sinks"] == ["quick"] and event["opening"] == ["held"]
    assert 1.0 <= event["waited"] <= waited + 0.001  # (rounded to the millisecond)
    assert quick.calls == [("config", 0, {"seed": 1})]  # opened, its config replayed
    assert re.search(r"tracking: held not ready after \d+\.\d s", capsys.readouterr().err)
    trackers.scalars(1, "train", {"loss": 1.0})  # queued for the held sink too
    gate.set()
    trackers.close()
    assert held.calls == quick.calls == [("config", 0, {"seed": 1}),
                                         ("scalars", 1, {"loss": 1.0})]

    (tmp_path / "b").mkdir()
    run, later = new_run(tmp_path / "b"), Recorder()
    began = time.monotonic()
    trackers = Trackers(run, [SinkWorker(SinkStart("later", opening_after(0.3, later)), run,
                                         {"seed": 1}, [])])
    trackers.wait_open(30)
    assert 0.3 <= time.monotonic() - began < 10  # returned once open, not after 30 s
    assert later.calls == [("config", 0, {"seed": 1})]
    event = opened_event(tmp_path / "b")
    assert event["sinks"] == ["later"] and event["opening"] == []
    trackers.close()


def child_worker(run: Run, name: str, record: Path, hang_on: str | None = None) -> SinkWorker:
    """A worker whose sink is a FileRecorder in a child process, as acr's trackers are."""
    def start():
        sink = ChildSink(name, functools.partial(open_file_recorder, hang_on=hang_on), record)
        return sink, sink.first
    return SinkWorker(SinkStart(name, start), run, {"seed": 1}, [])


@pytest.mark.parametrize("hang_on", ["open", "scalars", "close"])
def test_a_tracker_that_hangs_holds_the_run_a_bounded_time_and_costs_one_warning(
        tmp_path, capsys, hang_on):
    """wandb.finish() can wait forever on a stalled network (wandb's issues 4929, 5601, 6803):
    a tracker that has not taken its calls (drain, before an experiment's analysis) or closed
    (close, at the run's end) within `close_wait` seconds (the config's
    tracking.close_wait_seconds) is off, with one warning and a
    `tracking.failed` event, and its process is ended with its temporary folder (one still
    opening is left to its opening: it ends with the run's process); the run goes on, and a
    healthy tracker beside it gets every call and closes."""
    run = new_run(tmp_path)
    stuck, healthy = tmp_path / "stuck.jsonl", tmp_path / "healthy.jsonl"
    hung = Path(str(stuck) + ".hung")  # (its process id, once it hangs)
    trackers = Trackers(run, [child_worker(run, "stuck", stuck, hang_on),
                              child_worker(run, "healthy", healthy)], close_wait=3.0)
    stuck_worker, healthy_worker = trackers.workers
    try:
        assert healthy_worker.mark().wait(30)  # (the healthy one open, before any timing)
        assert hang_on != "open" or appears(hung)
        trackers.scalars(1, "train", {"loss": 1.0})
        drained, closed = [], []

        def end_of_run():  # (on a thread: without the bounds, the test fails, not hangs)
            began = time.monotonic()
            trackers.drain()
            drained.append(time.monotonic() - began)
            # a call is handed on unanswered: a child stuck in it holds its next, the close
            assert hang_on != "scalars" or appears(hung)
            trackers.scalars(2, "train", {"loss": 0.5})
            trackers.close()
            closed.append(time.monotonic() - began)
        ending = threading.Thread(target=end_of_run, daemon=True)
        ending.start()
        ending.join(60)
        assert not ending.is_alive() and closed, "drain() or close() waited for the hung sink"
        assert (drained[0] >= 3.0) == (hang_on == "open")  # (only an opening holds drain)
        assert 3.0 <= closed[0] < 30  # not the hour the stuck call sleeps
        assert [json.loads(line) for line in healthy.read_text().splitlines()] == [
            ["config", {"seed": 1}], ["scalars", 1, {"loss": 1.0}],
            ["scalars", 2, {"loss": 0.5}], ["close"]]
        warnings = [line for line in capsys.readouterr().err.splitlines()
                    if line.startswith("warning")]
        assert warnings == ["warning: tracking: stuck did not finish within 3 s (stuck on its "
                            "network or disk?); it is off, and the run goes on without it "
                            "(tracking.close_wait_seconds sets how long a run waits)"]
        failed = [json.loads(line) for line in
                  (tmp_path / "events.jsonl").read_text().splitlines()
                  if '"tracking.failed"' in line]
        assert [(e["sink"], e["error"]) for e in failed] == [
            ("stuck", "TimeoutError: did not finish within 3 s")]
        meta = json.loads((tmp_path / "meta.json").read_text())
        assert meta["tracking"]["sinks"] == (["healthy"] if hang_on == "open" else
                                             ["stuck", "healthy"])  # (those that started)
        pid = int(hung.read_text())
        if hang_on == "open":  # left to its opening, which the run cannot end
            assert stuck_worker.sink is None and not ended(pid, within=0.5)
        else:  # ended, with its temporary folder
            assert ended(pid) and not Path(stuck_worker.sink.child.temporary).exists()
    finally:
        if hung.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(hung.read_text()), signal.SIGKILL)
        end_idle_children()


def test_a_sink_failing_on_its_thread_costs_one_warning_and_its_later_calls(tmp_path, capsys):
    run = new_run(tmp_path)
    good, bad = Recorder(), Recorder(fail_at=3)
    trackers = Trackers(run, [worker(run, "good", good), worker(run, "bad", bad),
                              worker(run, "absent", error=ImportError("No module named x"))])
    for step in range(1, 7):
        trackers.scalars(step, "batch", {"seconds": float(step)})
    trackers.close()
    assert [c[1] for c in good.calls] == [0, 1, 2, 3, 4, 5, 6]  # the others took nothing away
    assert bad.calls == [("config", 0, {"seed": 1}), ("scalars", 1, {"seconds": 1.0}),
                         ("scalars", 2, "raised")]  # off after its failure, and closed
    assert bad.closed
    warnings = sorted(l for l in capsys.readouterr().err.splitlines() if l.startswith("warning"))
    assert len(warnings) == 2
    assert warnings[0].startswith("warning: tracking: absent is unavailable (ImportError: No "
                                  "module named x)")
    assert warnings[1].startswith("warning: tracking: bad failed (OSError: [Errno 28] No "
                                  "space left on device)")
    failed = sorted(json.loads(l)["sink"] for l in (tmp_path / "events.jsonl").read_text()
                    .splitlines() if '"tracking.failed"' in l)
    assert failed == ["absent", "bad"]
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["tracking"]["sinks"] == ["good", "bad"]  # the ones that started


def test_tensorboard_resumes_from_what_its_own_files_hold(tmp_path):
    """A killed process had journaled steps its TensorBoard sink had not written: the resume
    replays them, from the last step in the event files, without gap or duplicate."""
    run, options = new_run(tmp_path), TrackingOptions(tensorboard=True)
    trackers = open_trackers(run, options, {"seed": 1})
    for step in (1, 2, 3):
        trackers.scalars(step, "batch", {"x": float(step)})
    trackers.close()
    with open(tmp_path / "tracking.jsonl", "a") as fh:  # journaled, never sent
        for step in (4, 5, 6):
            fh.write(json.dumps({"step": step, "group": "batch", "kind": "scalars",
                                 "values": {"x": float(step)}}) + "\n")
    assert tensorboard_last_step(tmp_path / "tensorboard") == 3
    trackers = open_trackers(run, options, {"seed": 1})
    trackers.scalars(6, "batch", {"x": 6.0})  # redone by the resumed run: skipped
    trackers.scalars(7, "batch", {"x": 7.0})
    trackers.close()
    tb = tensorboard_events(tmp_path / "tensorboard")
    assert [(e.step, e.value) for e in tb.Scalars("x")] == [(s, float(s)) for s in range(1, 8)]
    assert tensorboard_last_step(tmp_path / "tensorboard") == 7
    replays = [json.loads(l) for l in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["calls"], e["from_step"]) for e in replays if e["event"] == "tracking.replay"] \
        == [(4, 3)]


@pytest.mark.slow
def test_a_resume_within_the_second_of_the_last_file_writes_after_it(tmp_path):
    """TensorBoard's readers take event files in name order (the second they were opened, then
    host and pid): the resumed writer waits for its file to sort after the killed one's."""
    run, options = new_run(tmp_path), TrackingOptions(tensorboard=True)
    trackers = open_trackers(run, options, {"seed": 1})
    for step in (1, 2, 3):
        trackers.scalars(step, "batch", {"x": float(step)})
    trackers.close()
    old = next((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    parts = old.name.split(".")
    parts[3], parts[-2] = str(int(time.time()) + 1), "99999999"  # this second, a later pid
    old.rename(old.with_name(".".join(parts)))
    trackers = open_trackers(run, options, {"seed": 1})
    trackers.scalars(4, "batch", {"x": 4.0})
    trackers.close()
    names = sorted(p.name for p in (tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert names[0] == ".".join(parts)
    tb = tensorboard_events(tmp_path / "tensorboard")
    assert [(e.step, e.value) for e in tb.Scalars("x")] == [(s, float(s)) for s in (1, 2, 3, 4)]


def test_tensorboard_last_step_follows_a_later_writers_purge(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    assert tensorboard_last_step(tmp_path) == -1
    writer = SummaryWriter(str(tmp_path))
    for step in range(1, 9):
        writer.add_scalar("x", step, step)
    writer.close()
    SummaryWriter(str(tmp_path), purge_step=5).close()  # its readers drop steps 5 to 8
    assert tensorboard_last_step(tmp_path) == 4
    assert max(e.step for e in tensorboard_events(tmp_path).Scalars("x")) == 4


@pytest.mark.slow
def test_tensorboard_sink_purges_from_its_first_step_as_torchs_writer_does(tmp_path):
    """Written by torch's SummaryWriter up to step 8, then by acr's sink reopened at step 5:
    TensorBoard's readers see torch's 1-4, then the sink's 5-6."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    for step in range(1, 9):
        writer.add_scalar("x", step, step)
        writer.add_scalar("z", step, step)  # (never written again: only the purge drops 5-8)
    writer.close()
    time.sleep(1.0)  # (a later second: the sink's file sorts after torch's)
    sink = TensorBoardSink(tmp_path, purge_step=5)
    sink.scalars(5, {"x": 50.0})
    sink.scalars(6, {"x": 60.0, "y": 6.0})
    sink.close()
    tb = tensorboard_events(tmp_path)
    assert [(e.step, e.value) for e in tb.Scalars("x")] == \
        [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0), (6, 60.0)]
    assert [(e.step, e.value) for e in tb.Scalars("y")] == [(6, 6.0)]
    assert [e.step for e in tb.Scalars("z")] == [1, 2, 3, 4]
    assert tensorboard_last_step(tmp_path) == 6


class RecordingServer(http.server.ThreadingHTTPServer):
    """A local HTTP server standing in for W&B's (WANDB_BASE_URL): it answers every request
    404 and keeps each one's method and path in `requests`."""

    def __init__(self):
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _note(self):
                server.requests.append(f"{self.command} {self.path}")
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = _note

            def log_message(self, *_):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.mark.slow
def test_a_default_wandb_sink_imports_nothing_after_its_warm_up_and_sends_nothing(
        tmp_path, monkeypatch):
    """As a user runs it (no API key, no WANDB_MODE: acr's default, offline), after the
    warm-up (before the command imports torch) opening a sink and its first scalars and clip
    import nothing (none of the warm-up's 0.15 CPU s is left for the child to do beside the
    run's first steps), and nothing reaches W&B's server, not even at the process's normal
    exit, where wandb's handlers flush what they hold. wandb 0.31 builds its telemetry
    exporter (OpenTelemetry, 40 ms of imports at the first log, two threads, a POST to the
    server every minute and at exit) from its process-wide mode, which an offline run left
    online. Fails when a wandb upgrade moves its first-call imports."""
    server = RecordingServer()
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
    script = ("import sys, pathlib, types\n"
              "from acr.core.tracking import Clip, open_wandb_sink, warm_wandb, wandb_mode\n"
              "warm_wandb(wandb_mode(None))\n"  # (as start_trackers has it)
              "folder = pathlib.Path(sys.argv[1])\n"
              "before = set(sys.modules)\n"
              "options = types.SimpleNamespace(project='p', entity=None, tags=[], mode=None)\n"
              "sink, first = open_wandb_sink(folder, options, 'abc12345', 'r/a', {'x': 1}, True)\n"
              "sink.scalars(0, {'loss': 1.0})\n"
              "sink.clips(1, [Clip('samples/a', folder / 'a.wav', 'a prompt')])\n"
              "print(' '.join(sorted(set(sys.modules) - before)) or '-')\n"
              "sink.close()\n")
    soundfile.write(tmp_path / "a.wav", np.zeros(3200, np.float32), 32000)
    try:
        out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True,
                             capture_output=True, text=True, timeout=120).stdout.split()
    finally:
        server.shutdown()
        server.server_close()
    assert out == ["-"]
    assert server.requests == []
    assert [row["_step"] for row in wandb_history(tmp_path)] == [0, 1]


@pytest.mark.slow
def test_an_offline_wandb_sink_never_takes_the_process_of_an_online_one(tmp_path):
    """wandb keeps the telemetry exporter an online run built for the rest of its process: an
    offline run in it would send telemetry. A process started for an online run (here by the
    early start, as a command does) is left to online runs."""
    run = new_run(tmp_path)
    try:
        tracking.start_trackers(TrackingOptions(wandb=WandbOptions(mode="online")))
        online = child_sink._IDLE["wandb-online"]
        trackers = open_trackers(run, TrackingOptions(wandb=WandbOptions(mode="offline")), {})
        trackers.scalars(1, "train", {"loss": 1.0})
        trackers.close()
        assert child_sink._IDLE["wandb-online"] is online  # still waiting, untaken
        assert child_sink._IDLE["wandb-offline"].process.pid != online.process.pid
    finally:
        end_idle_children()
    assert [row["_step"] for row in wandb_history(tmp_path)] == [1]


@pytest.mark.slow
def test_after_its_warm_up_the_tensorboard_sink_imports_nothing_and_never_torch(tmp_path):
    """Its child process opens it, writes every kind of call and closes it without importing
    torch (1.6 s of CPU beside the run) or acr's config schema (25 ms), and after the warm-up
    (before the command imports torch) without importing anything: the first sample round's
    clips imported soundfile inside a fine-tune's loop."""
    import matplotlib.image

    script = ("import sys, pathlib\n"
              "from acr.core.tracking import Clip, open_tensorboard_sink, warm_tensorboard\n"
              "warm_tensorboard()\n"
              "folder = pathlib.Path(sys.argv[1])\n"
              "before = set(sys.modules)\n"
              "sink, first = open_tensorboard_sink(folder / 'tb')\n"
              "sink.config({'seed': 1}); sink.scalars(1, {'x': 1.0})\n"
              "sink.clips(2, [Clip('samples/a', folder / 'a.wav', 'a prompt')])\n"
              "sink.images(2, {'plot': folder / 'plot.png'})\n"
              "sink.text(2, {'model': 'M'}); sink.close()\n"
              "print(first, 'torch' in sys.modules, 'acr.core.config.schema' in sys.modules,"
              " ' '.join(sorted(set(sys.modules) - before)) or '-')\n")
    soundfile.write(tmp_path / "a.wav", np.zeros(3200, np.float32), 32000, subtype="PCM_16")
    matplotlib.image.imsave(tmp_path / "plot.png", np.zeros((4, 6, 3)))
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True,
                         capture_output=True, text=True).stdout.split()
    assert out == ["0", "False", "False", "-"]
    tb = tensorboard_events(tmp_path / "tb")
    assert [(e.step, e.value) for e in tb.Scalars("x")] == [(1, 1.0)]
    assert tb.Audio("samples/a")[0].encoded_audio_string == (tmp_path / "a.wav").read_bytes()
    assert (tb.Images("plot")[0].height, tb.Images("plot")[0].width) == (4, 6)
    assert tb.Tensors("model/text_summary")[0].tensor_proto.string_val == [b"M"]


def test_tensorboard_audio_takes_a_mono_pcm16_file_as_it_is_and_mixes_the_rest(tmp_path):
    tone = 0.5 * np.sin(np.linspace(0, 200 * np.pi, 8000))
    soundfile.write(str(tmp_path / "mono.wav"), tone, 8000, subtype="PCM_16")
    audio = tensorboard_audio("a", tmp_path / "mono.wav").value[0].audio
    assert audio.encoded_audio_string == (tmp_path / "mono.wav").read_bytes()
    assert (audio.sample_rate, audio.num_channels, audio.length_frames) == (8000, 1, 8000)
    stereo = np.stack([tone, -0.5 * tone], axis=1).astype(np.float32)
    soundfile.write(str(tmp_path / "stereo.wav"), stereo, 8000, subtype="FLOAT")
    audio = tensorboard_audio("b", tmp_path / "stereo.wav").value[0].audio
    assert (audio.sample_rate, audio.num_channels, audio.length_frames) == (8000, 1, 8000)
    (tmp_path / "mixed.wav").write_bytes(audio.encoded_audio_string)
    mixed, rate = soundfile.read(str(tmp_path / "mixed.wav"))
    assert rate == 8000 and np.allclose(mixed, 0.25 * tone, atol=1e-4)


def test_tensorboard_records_carry_tensorboards_own_checksums_computed_in_c(tmp_path):
    """The event writer's checksum is google-crc32c's, giving the values of TensorBoard's own
    pure-Python one (its readers check every record with theirs: see the end-to-end tests)."""
    import google_crc32c
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference
    from tensorboard.summary.writer import record_writer

    rng = np.random.default_rng(0)
    for size in (0, 1, 7, 8, 100, 4096, 65537):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert masked_crc32c(data) == reference(data)
    if google_crc32c.implementation != "c":
        pytest.skip("google-crc32c without its C code here: TensorBoard's own CRC stays")
    sink = TensorBoardSink(tmp_path, None)
    sink.close()
    assert record_writer.masked_crc32c is masked_crc32c


# ---- end to end: both sinks, read back by their own readers ---------------------------------------

@pytest.mark.slow
def test_experiment_tracks_batches_clips_metrics_and_plots(acr, in_tmp):
    import matplotlib.image
    from tensorboard.plugins.hparams import metadata as hparams_metadata

    text = GRID.replace("analyze: false", "analyze: true") + \
        "tracking: {audio_clips: 2, wandb: {project: acr-test, tags: [t1]}}\n"
    path = write(in_tmp, text, "grid.yaml")
    result = acr("experiment", path, "--out", "R", "--track", "tensorboard")
    assert result.exit_code == 0, result.stderr
    run = in_tmp / "R"
    assert "warning" not in result.stderr
    meta = json.loads((run / "meta.json").read_text())
    assert meta["tracking"]["sinks"] == ["tensorboard", "wandb"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["tracking"]["wandb"]["project"] == "acr-test"  # --track kept the config's

    # per batch: seconds and real-time factor as the sidecars record them (6 batches of 2)
    by_batch: dict[int, list[dict]] = {}
    for car in sidecars(run):
        by_batch.setdefault(car["batch_index"] + 1, []).append(car)
    assert sorted(by_batch) == [1, 2, 3, 4, 5, 6]
    tb = tensorboard_events(run / "tensorboard")
    seconds = {e.step: e.value for e in tb.Scalars("generation/seconds")}
    rtf = {e.step: e.value for e in tb.Scalars("generation/real_time_factor")}
    assert sorted(seconds) == [1, 2, 3, 4, 5, 6]
    for step, cars in by_batch.items():
        assert seconds[step] == pytest.approx(cars[0]["batch_seconds"], rel=1e-6)
        assert rtf[step] == pytest.approx(cars[0]["batch_seconds"] /
                                          sum(c["duration"] for c in cars), rel=1e-5)
    # clips: the first two of each setting, as audio at the model's rate, with their prompts
    audio = sorted(tb.Tags()["audio"])
    assert audio == [f"audio/tiny-musicgen/{s}/{i}" for s in ("base", "hot") for i in (0, 1)]
    clip = tb.Audio("audio/tiny-musicgen/base/0")[0]
    assert clip.step == 7 and clip.sample_rate == 32000 and clip.length_frames == 32000
    # the analysis: every setting's metric means as summary.json has them, and its plots
    summary = json.loads((run / "analysis/summary.json").read_text())
    mean = summary["groups"]["base"]["loudness_lufs"]["mean"]
    logged = tb.Scalars("metrics/loudness_lufs/base")[0]
    assert logged.step == 7 and logged.value == pytest.approx(mean, abs=1e-4)
    plots = sorted(p.stem for p in (run / "analysis/plots").glob("*.png"))
    assert len(plots) >= 3 and sorted(tb.Tags()["images"]) == [f"plots/{p}" for p in plots]
    image, png = tb.Images(f"plots/{plots[0]}")[0], run / f"analysis/plots/{plots[0]}.png"
    assert image.encoded_image_string == png.read_bytes()  # the report's own PNG
    assert (image.height, image.width) == matplotlib.image.imread(str(png)).shape[:2]
    # the config: TensorBoard's HParams, read by its plugin's own parser, and a text copy
    start = hparams_metadata.parse_session_start_info_plugin_data(
        tb.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    assert start.hparams["name"].string_value == "grid"
    assert start.group_name == str(run.resolve())  # one session group per run folder
    assert start.hparams["seed"].number_value == 3
    assert start.hparams["parameter_sets.hot.top_k"].number_value == 50
    copy = tb.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(copy.strip("`\n"))["parameter_sets"]["hot"]["temperature"] == 1.5
    # written by a process of its own (its pid in the event file's name), not the run's
    writers = {int(p.name.split(".")[-2]) for p in (run / "tensorboard").glob("events.*")}
    assert len(writers) == 1 and os.getpid() not in writers

    # W&B (offline): the same points, the audio with captions, the config and tags
    records = wandb_records(run)
    started = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert [(s.run_id, s.project, list(s.tags)) for s in started] == \
        [(meta["tracking"]["wandb_id"], "acr-test", ["t1"])]
    hyper = {i.key: json.loads(i.value_json) for i in started[0].config.update}
    assert hyper["name"] == "grid" and hyper["parameter_sets"]["hot"]["top_k"] == 50
    rows = wandb_history(run)
    assert steps_of(rows, "generation/seconds") == [1, 2, 3, 4, 5, 6]
    assert {r["_step"]: r["generation/seconds"] for r in rows if "generation/seconds" in r} == \
        pytest.approx(seconds, rel=1e-6)
    last = rows[-1]
    assert last["_step"] == 7 and last["audio/tiny-musicgen/hot/1"]["caption"] == "soft piano"
    assert last["metrics/loudness_lufs/base"] == pytest.approx(mean)
    assert last[f"plots/{plots[0]}"]["_type"] == "image-file"
    assert last["audio/tiny-musicgen/base/0"]["_type"] == "audio-file"
    # the trackers' copies are not analysed as clips
    assert summary["analysed"]["clips"] == 12
    # the run waited for its sinks to open before its first batch (Trackers.wait_open; how
    # long their opening takes in this test process is its business)
    opened = opened_event(run)
    assert sorted(opened["sinks"] + opened["opening"]) == ["tensorboard", "wandb"]
    kinds = event_kinds(run)
    assert kinds.index("tracking.open") < kinds.index("batch.start")


@pytest.mark.slow
def test_finetune_tracks_steps_epochs_samples_and_the_model(acr, in_tmp, demo, monkeypatch):
    # (no clipping: the gradient norm is computed for the trackers alone)
    path = write(in_tmp, FINETUNE.replace("data: demo", f"data: {demo}") + "grad_clip: 0\n",
                 "ft.yaml")
    started, start = [], child_sink.start_early
    monkeypatch.setattr(child_sink, "start_early",
                        lambda name, warm: started.append(name) or start(name, warm))
    result = acr("finetune", path, "--out", "F", "--track", "tensorboard", "--track", "wandb")
    assert result.exit_code == 0, result.stderr
    assert started == ["tensorboard", "wandb-offline"]  # by the command, before its model
    wandb_child = child_sink._IDLE["wandb-offline"]  # (waiting for a next run)
    made = [p.name for p in Path(wandb_child.temporary).iterdir()]
    assert {name.split("wandb-")[-1] for name in made} == {"media", "artifacts"}, made
    end_idle_children()  # (as the command's process does at its exit)
    assert not Path(wandb_child.temporary).exists()  # (wandb's folders with it)
    run = in_tmp / "F"
    meta = json.loads((run / "meta.json").read_text())
    with open(run / "history.csv", newline="") as fh:
        history = list(csv.DictReader(fh))
    steps = meta["steps_per_epoch"] * 3
    tb = tensorboard_events(run / "tensorboard")
    assert [e.step for e in tb.Scalars("train/loss")] == list(range(1, steps + 1))
    assert [e.step for e in tb.Scalars("epoch/valid_loss")] == \
        [meta["steps_per_epoch"] * e for e in (1, 2, 3)]
    assert [e.value for e in tb.Scalars("epoch/valid_loss")] == \
        pytest.approx([float(r["valid_loss"]) for r in history], rel=1e-5)
    norms = [e.value for e in tb.Scalars("train/grad_norm")]
    assert len(norms) == steps and all(0 < n < math.inf for n in norms)
    lrs = [e.value for e in tb.Scalars("train/lr")]
    assert max(lrs) == pytest.approx(3e-3, rel=1e-6)  # the peak of the warm-up
    samples = sorted(tb.Tags()["audio"])
    assert samples == ["samples/0", "samples/1", "samples/2"]
    assert tb.Audio("samples/0")[0].step == meta["steps_per_epoch"] * 2  # epoch 2's round
    rows = wandb_history(run)
    assert steps_of(rows, "train/loss") == list(range(1, steps + 1))
    assert [r["epoch/train_loss"] for r in rows if "epoch/train_loss" in r] == \
        pytest.approx([float(r["train_loss"]) for r in history], rel=1e-5)
    captions = {r["samples/0"]["caption"] for r in rows if "samples/0" in r}
    wav = sorted((run / "samples/epoch-002").glob("0-*.wav"))[0]
    assert captions == {json.loads(wav.with_suffix(".json").read_text())["prompt"]}
    summaries = {i.key: json.loads(i.value_json) for r in wandb_records(run)
                 if r.WhichOneof("record_type") == "summary" for i in r.summary.update}
    assert summaries["model"] == str(run / "model")
    # the run waited for its sinks to open before its first step (as the experiment)
    opened = opened_event(run)
    assert sorted(opened["sinks"] + opened["opening"]) == ["tensorboard", "wandb"]
    kinds = event_kinds(run)
    assert kinds.index("tracking.open") < kinds.index("epoch.end")


# ---- kill + resume: the same tracked run, no gap, no duplicate -----------------------------------

def own_service_env() -> dict:
    """The environment for an acr subprocess: wandb keeps its service's address in
    WANDB_SERVICE once a run started in this process, and a child would share that service
    (and, killed, leave its run open there) instead of starting its own, as a user's would.
    (Removing it from this process instead breaks wandb's later runs here.) One torch thread:
    the run leaves a core to its W&B child, which starts at a lower priority and must start
    before the run ends for the kill tests to kill it mid-run."""
    return {**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"},
            "OMP_NUM_THREADS": "1"}


def wandb_started(run: Path) -> bool:
    """Whether the run's W&B child has opened its session folder. The child starts beside the
    run, off its path, and takes several seconds (a wandb import and its service): a run killed
    before then leaves no W&B files, and its resume has nothing to continue (the CI of
    2026-12-05 killed one so)."""
    return any((run / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.mark.slow
def test_experiment_killed_and_resumed_tracks_every_batch_once(acr, in_tmp):
    text = GRID.replace("samples_per_prompt: 2", "samples_per_prompt: 16") + \
        "tracking: {tensorboard: true, wandb: {}}\n"
    path = write(in_tmp, text, "grid.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "acr", "experiment", str(path), "--out",
                             str(in_tmp / "K")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=own_service_env())
    run = in_tmp / "K"
    kill_when(proc, lambda: len(list(run.rglob("samples/**/*.wav"))) >= 8,
              meanwhile=lambda: wandb_started(run))
    assert len(list(run.rglob("samples/**/*.wav"))) < 96  # killed mid-run, not at its close
    before = json.loads((run / "meta.json").read_text())["tracking"]
    result = acr("experiment", "--resume", run)
    assert result.exit_code == 0, result.stderr
    meta = json.loads((run / "meta.json").read_text())
    assert meta["tracking"]["wandb_id"] == before["wandb_id"]
    assert len(meta["resumed"]) == 1
    batches = list(range(1, 49))  # 96 samples in batches of 2
    tb = tensorboard_events(run / "tensorboard")
    assert [e.step for e in tb.Scalars("generation/seconds")] == batches
    # W&B: no gap over both sessions' files, and every point as the journal has it. The killed
    # process's wandb-core may write its buffer after the resume has looked (or never), so a
    # point it wrote late can appear twice, with the same values (README: Tracking)
    rows = wandb_history(run)
    assert sorted(set(steps_of(rows, "generation/seconds"))) == batches
    journal = {line["step"]: line["values"] for line in
               map(json.loads, (run / "tracking.jsonl").read_text().splitlines())
               if line["group"] == "batch"}
    assert sorted(journal) == batches
    for row in rows:
        if "generation/seconds" in row:
            assert row["generation/seconds"] == pytest.approx(
                journal[row["_step"]]["generation/seconds"])
    # both sessions ran as the same W&B run: wandb names each session's folder after the run
    # id (the killed session's .wandb file may have lost its run record with its buffer)
    # (offline-run-TIME-ID, and -1 after it when both sessions started within one second)
    sessions = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(sessions) == 2 and all(n.split("-")[3] == before["wandb_id"] for n in sessions)
    started = [r.run.run_id for r in wandb_records(run) if r.WhichOneof("record_type") == "run"]
    assert started and set(started) == {before["wandb_id"]}


@pytest.mark.slow
def test_finetune_killed_and_resumed_tracks_every_step_once(acr, in_tmp, demo):
    text = FINETUNE.replace("data: demo", f"data: {demo}").replace("epochs: 3", "epochs: 16") \
        .replace("sample_every: 2", "sample_every: 0\npatience: 0")  # every epoch runs
    path = write(in_tmp, text, "ft.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "acr", "finetune", str(path), "--out",
                             str(in_tmp / "K"), "--track", "tensorboard", "--track", "wandb"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=own_service_env())
    run = in_tmp / "K"
    events = run / "events.jsonl"
    kill_when(proc, lambda: events.is_file() and '"epoch": 2' in events.read_text(), 300,
              meanwhile=lambda: wandb_started(run))
    assert '"epoch": 16' not in events.read_text()  # killed mid-run, not at its close
    assert json.loads((run / "meta.json").read_text())["status"] == "running"
    result = acr("finetune", "--resume", run)  # the run's config: tracking included
    assert result.exit_code == 0, result.stderr
    meta = json.loads((run / "meta.json").read_text())
    steps = list(range(1, meta["steps_per_epoch"] * 16 + 1))
    tb = tensorboard_events(run / "tensorboard")
    assert [e.step for e in tb.Scalars("train/loss")] == steps
    assert [e.step for e in tb.Scalars("epoch/train_loss")] == steps[meta["steps_per_epoch"] - 1::
                                                                    meta["steps_per_epoch"]]
    rows = wandb_history(run)
    assert sorted(set(steps_of(rows, "train/loss"))) == steps  # no gap (see above)
    assert len(list((run / "wandb").glob("offline-run-*"))) == 2


# ---- a tracker that fails costs a warning, never the run ------------------------------------------

@pytest.mark.slow
def test_failing_trackers_cost_a_warning_and_the_run_completes(acr, in_tmp, monkeypatch):
    """wandb cannot be imported, and TensorBoard's disk fills up after its first batch."""
    # W&B runs in a child process, which takes this process's sys.path: a `wandb` first on it
    # that cannot be imported
    fake = in_tmp / "fake-packages/wandb"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'wandb'\")\n")
    monkeypatch.syspath_prepend(str(fake.parent))
    # TensorBoard's child, likewise, opens its sink with an opener of the tests' (a module on
    # that sys.path): its disk fills up after its first scalars
    monkeypatch.setattr(tracking, "open_tensorboard_sink", open_disk_full_tensorboard_sink)
    path = write(in_tmp, GRID, "grid.yaml")
    result = acr("experiment", path, "--out", "R", "--track", "wandb", "--track", "tensorboard")
    assert result.exit_code == 0, result.stderr
    run = in_tmp / "R"
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and len(list((run / "samples").rglob("*.wav"))) == 12
    # (each sink on its own thread: the two warnings come in either order)
    warnings = sorted(l for l in result.stderr.splitlines() if l.startswith("warning: tracking"))
    assert len(warnings) == 2, result.stderr
    assert "tensorboard failed (OSError" in warnings[0] and "No space left" in warnings[0]
    assert "wandb is unavailable (ModuleNotFoundError" in warnings[1]
    calls = (run / "tensorboard/scalars-calls.txt").read_text().split()
    assert calls == ["1", "2"]  # none after its failure
    failed = [json.loads(l) for l in (run / "events.jsonl").read_text().splitlines()
              if '"tracking.failed"' in l]
    assert sorted(e["sink"] for e in failed) == ["tensorboard", "wandb"]
    tb = tensorboard_events(run / "tensorboard")
    assert [e.step for e in tb.Scalars("generation/seconds")] == [1]


@pytest.mark.slow
def test_an_unwritable_tensorboard_folder_costs_a_warning(acr, in_tmp, monkeypatch):
    """A finetune whose RUN/tensorboard cannot be created (a file is in the way)."""
    blocker = in_tmp / "blocker"
    blocker.write_text("not a folder")
    monkeypatch.setattr(tracking, "TENSORBOARD_DIR", str(blocker / "tensorboard"))
    path = write(in_tmp, GRID.replace("samples_per_prompt: 2", "samples_per_prompt: 1")
                 .replace("  hot: {temperature: 1.5, top_k: 50}\n", ""), "grid.yaml")
    result = acr("experiment", path, "--out", "R", "--track", "tensorboard")
    assert result.exit_code == 0, result.stderr
    assert "warning: tracking: tensorboard is unavailable" in result.stderr
    assert json.loads((in_tmp / "R/meta.json").read_text())["status"] == "completed"
    assert len(list((in_tmp / "R/samples").rglob("*.wav"))) == 3
    assert json.loads((in_tmp / "R/meta.json").read_text())["tracking"]["sinks"] == []

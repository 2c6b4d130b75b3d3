"""Who had the CPUs during an acr run's loop (Linux):
`python benchmarks/helpers/loop_probe.py OUT.json COMMAND ARGS...` runs `acr COMMAND ARGS...`
in this process through acr's own entry function (that of `python -m acr`; only sys.path
differs: this folder instead of the working one), and writes to OUT.json two readings of the kernel's scheduler statistics, one right before the
run's loop (when the run's wait for its trackers returns) and one right after it (the first
call after the loop: an experiment's manifest, a fine-tune's best weights or adapter merge):

- `main`: the run's main thread's [nanoseconds on a CPU, nanoseconds runnable but waiting for
  one] (/proc/PID/task/PID/schedstat);
- `others`: for every other process, the nanoseconds its threads were on a CPU;
- `steal`: the jiffies the hypervisor ran something else on this machine's virtual CPUs.

So the main thread's loop splits into time on a CPU, time runnable without one (other
processes had the CPUs: the trackers' children, W&B's service, anything else), and the rest,
time asleep (waiting for torch's other threads, the interpreter lock, the disk). Each reading
takes a few milliseconds (more with more processes), outside the loop. tracking_overhead.py
runs its process way through this; `install` gives the same readings to an in-process run.
The hooks are functions of acr: an AttributeError here means they were renamed.
"""
from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path
from typing import Callable

# the kernel keeps scheduler statistics per thread (Linux with schedstat); elsewhere the
# command runs without readings
READS_SCHEDULER = os.path.exists("/proc/self/schedstat")


def _on_cpu(pid: str) -> int:
    """The nanoseconds process `pid`'s threads were on a CPU (0 if it ended)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return total
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                total += int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def _main_thread(pid: str) -> list[int]:
    """[ns on a CPU, ns runnable but waiting for one] of process `pid`'s main thread."""
    with open(f"/proc/{pid}/task/{pid}/schedstat") as handle:
        return [int(field) for field in handle.read().split()[:2]]


def reading(at_start: bool) -> dict:
    """One reading of the scheduler's statistics (module docstring). The run's main thread is
    read nearest the loop: last at its start, first at its end (reading the other processes
    takes a few milliseconds of it)."""
    me = str(os.getpid())
    if not at_start:
        main = _main_thread(me)
    others = {pid: _on_cpu(pid) for pid in os.listdir("/proc") if pid.isdigit() and pid != me}
    with open("/proc/stat") as handle:
        steal = int(handle.readline().split()[8])
    if at_start:
        main = _main_thread(me)
    return {"main": main, "others": others, "steal": steal}


def loop_share(before: dict, after: dict) -> dict[str, float]:
    """Seconds over a loop: the run's main thread (the one that runs Python and hands torch's
    other threads their work) on a CPU (`main_cpu`) and runnable but waiting for one
    (`main_waiting`); the other processes on a CPU (`others_cpu`: those alive at the second
    reading, from zero for the ones started in between); the hypervisor's `steal`."""
    return {"main_cpu": (after["main"][0] - before["main"][0]) / 1e9,
            "main_waiting": (after["main"][1] - before["main"][1]) / 1e9,
            "others_cpu": sum(ns - before["others"].get(pid, 0)
                              for pid, ns in after["others"].items()) / 1e9,
            "steal": (after["steal"] - before["steal"]) / os.sysconf("SC_CLK_TCK")}


def install(readings: list[dict]) -> Callable[[], None]:
    """Take a reading into `readings` at every run loop's start and end in this process;
    returns the function that removes the hooks."""
    from acr.core import tracking

    wait_open = tracking.Trackers.wait_open
    undo: list[Callable[[], None]] = []

    def at_end(module: object, name: str) -> None:
        original = getattr(module, name)

        def hooked(*args, **kwargs):
            if len(readings) % 2 == 1:  # (a loop's start was read, not yet its end)
                readings.append(reading(at_start=False))
            return original(*args, **kwargs)
        setattr(module, name, hooked)
        undo.append(lambda: setattr(module, name, original))

    def hooked_wait_open(self, *args, **kwargs):
        wait_open(self, *args, **kwargs)
        if not undo:  # the commands' modules are imported by now (the CLI imports them late)
            experiment = sys.modules.get("acr.commands.experiment.run")
            finetune = sys.modules.get("acr.commands.finetune.train")
            if experiment is not None:
                at_end(experiment, "write_manifest")
            if finetune is not None:  # (the best epoch's weights, if saved, are read first)
                at_end(finetune, "read_checkpoint_weights")
                at_end(finetune.adapters, "merge_lora")
        readings.append(reading(at_start=True))

    tracking.Trackers.wait_open = hooked_wait_open

    def remove() -> None:
        tracking.Trackers.wait_open = wait_open
        for step in undo:
            step()
        undo.clear()
    return remove


def main() -> None:
    out, args = Path(sys.argv[1]), sys.argv[2:]
    readings: list[dict] = []
    if READS_SCHEDULER:
        install(readings)
    # at exit: acr's own exit runs the exit handlers, then may skip Python's teardown
    atexit.register(lambda: out.write_text(json.dumps(readings)))
    sys.argv = ["acr", *args]
    from acr.__main__ import main as acr_main

    acr_main()


if __name__ == "__main__":
    main()

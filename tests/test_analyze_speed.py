"""What makes `acr analyze` fast, held as behaviour (the timings live in benchmarks/analyze.py):
worker processes give the same values as one process, the cache and the unchanged re-run give
the same findings, plots are drawn only where they show something, and the command's path
imports neither torch, librosa, matplotlib nor transformers where it does not use them."""
import json
import os
import signal
import subprocess
import sys

import pytest

from acr.commands.analyze import plots, run_analysis
from acr.commands.analyze.cache import cached_features
from acr.core.clips import Clip, discover
from synth import drums, progression, sine, write

RATE = 16000


def small_run(folder, settings=("baseline", "hot"), prompts=3):
    """A run-like folder: settings x prompts clips of 1.5 s with sidecars, varied material."""
    for s, setting in enumerate(settings):
        for p in range(prompts):
            audio = 0.3 * drums(90 + 20 * p + 7 * s, 1.5, RATE, seed=p) + \
                0.2 * progression([[60 + p, 64 + p, 67 + p]], RATE, 1.5)[: int(1.5 * RATE)]
            path = write(folder / "samples" / setting / f"{p}-0.wav", audio * (0.5 + 0.2 * s),
                         RATE)
            path.with_suffix(".json").write_text(json.dumps({
                "model": "tiny", "parameter_set": setting, "prompt_set": "set",
                "prompt_index": p, "sample_index": 0, "prompt": f"prompt {p}"}))
    return folder


@pytest.mark.slow
def test_two_workers_give_the_values_of_one(tmp_path):
    folder = small_run(tmp_path / "run", prompts=4)
    (folder / "samples/broken.wav").write_bytes(b"RIFF not audio")
    clips = discover(folder)
    one, computed_one = cached_features(clips, tmp_path / "cache-1", workers=1)
    two, computed_two = cached_features(clips, tmp_path / "cache-2", workers=2)
    assert computed_one == computed_two == 8
    for a, b in zip(one, two):
        assert type(a) is type(b)
        if hasattr(a, "metrics"):
            assert a.metrics == pytest.approx(b.metrics, nan_ok=True) or a.metrics == b.metrics
            assert a.embedding == b.embedding and a.flags == b.flags
        else:
            assert str(a) == str(b) and "unreadable" in str(a)


@pytest.mark.slow
def test_cache_hits_give_identical_findings(tmp_path):
    folder = small_run(tmp_path / "run")
    first = run_analysis(folder, model_metrics=False, quiet=True)
    summary = json.loads((first / "summary.json").read_text())
    metrics = (first / "metrics.csv").read_text()
    assert summary["analysed"]["computed"] == 6
    (first / "summary.json").unlink()  # outputs missing: analysed again, features from the cache
    run_analysis(folder, model_metrics=False, quiet=True)
    again = json.loads((first / "summary.json").read_text())
    assert (again["analysed"]["computed"], again["analysed"]["cached"]) == (0, 6)
    for key in ("groups", "tests", "sets", "keys", "flags"):
        assert again[key] == summary[key], key
    assert (first / "metrics.csv").read_text() == metrics
    # an unchanged run: the last results, the counts saying every clip came from the cache
    run_analysis(folder, model_metrics=False, quiet=True)
    third = json.loads((first / "summary.json").read_text())
    assert third == again
    assert "0 analysed now, 6 from the cache" in (first / "report.md").read_text()


@pytest.mark.slow
def test_a_changed_sidecar_or_file_is_noticed(tmp_path):
    folder = small_run(tmp_path / "run")
    run_analysis(folder, model_metrics=False, quiet=True)
    sidecar = folder / "samples/hot/0-0.json"  # the clip moves to another prompt set
    sidecar.write_text(sidecar.read_text().replace('"prompt_set": "set"', '"prompt_set": "b"'))
    out = run_analysis(folder, model_metrics=False, quiet=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["analysed"]["computed"] == 0  # the audio did not change
    assert summary["tests"]["loudness_lufs"]["prompt_sets"]["groups"] == {"set": 3, "b": 1}
    path = folder / "samples/baseline/1-0.wav"
    write(path, sine(440, 1.5, RATE, -12), RATE)
    os.utime(path, ns=(1, 1))  # the same size; the modification time tells
    summary = json.loads((run_analysis(folder, model_metrics=False, quiet=True)
                          / "summary.json").read_text())
    assert (summary["analysed"]["computed"], summary["analysed"]["cached"]) == (1, 5)


def clip(setting, prompt, prompt_set="set"):
    return Clip(path=None, rel=f"{setting}/{prompt}.wav", groups={
        "_setting": setting, "prompt_set": prompt_set, "prompt_index": prompt,
        "prompt": f"p{prompt}"})


def planned(jobs):
    return {job[1][-1].name: job for job in jobs}


def test_plots_only_where_they_show_something(tmp_path):
    two = [clip(s, p) for s in ("a", "b") for p in range(4)]
    varying = [1.0, 2.0, 3.0, 5.0, 2.0, 3.0, 4.0, 7.0]
    values = {"loudness_lufs": varying, "clipping_ratio": [0.0] * 8,
              "tempo_bpm": [float("nan")] * 8}
    tables = {m: {s: {f"set/{p}": v[i] for i, p in enumerate(range(4))} for s in ("a", "b")}
              for m, v in values.items()}
    for m, v in values.items():
        for s, offset in (("a", 0), ("b", 4)):
            tables[m][s] = {f"set/{p}": v[offset + p] for p in range(4)}
    jobs = planned(plots.plan(tmp_path, two, tables, values, ["a", "b"]))
    # the constant and the all-NaN metric are left out of the box plots
    assert list(jobs["settings.png"][1][0]) == ["loudness_lufs"]
    assert "heatmaps.png" in jobs and "spectrograms.png" in jobs
    assert "correlations.png" not in jobs  # one varying metric: nothing to correlate
    # one setting and one prompt set: no box plot of one box, no heatmap of one cell
    one = [clip("a", p) for p in range(4)]
    jobs = planned(plots.plan(tmp_path, one, {m: {"a": t["a"]} for m, t in tables.items()},
                              {m: v[:4] for m, v in values.items()}, ["a"]))
    assert set(jobs) == {"spectrograms.png"}
    assert not plots.informative([2.0, 2.0, float("nan")]) and plots.informative([1.0, 2.0])


@pytest.mark.slow
def test_one_setting_draws_no_box_plot(tmp_path):
    folder = small_run(tmp_path / "run", settings=("only",))
    out = run_analysis(folder, model_metrics=False, quiet=True, workers=2)
    assert {p.name for p in (out / "plots").iterdir()} == {"spectrograms.png",
                                                           "correlations.png"}
    report = (out / "report.md").read_text()
    assert "![spectrograms](plots/spectrograms.png)" in report and "settings.png" not in report


@pytest.mark.slow
def test_the_analysis_imports_only_what_it_uses(tmp_path):
    """No torch, librosa, transformers, scipy.signal or scipy.stats (each a second or a third
    of one to import) on the command's path (CLAP's absence is known from the Hugging Face
    cache); matplotlib only
    when plots are drawn, not on an unchanged re-run."""
    folder = small_run(tmp_path / "run", settings=("only",), prompts=2)
    script = ("import sys, pathlib; from acr.commands.analyze import run_analysis; "
              f"run_analysis(pathlib.Path({str(folder)!r}), quiet=True, workers=1); "
              "print(sorted(m for m in ('torch', 'librosa', 'transformers', 'matplotlib', "
              "'scipy.signal', 'scipy.stats') if m in sys.modules))")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}  # an empty cache: no CLAP

    def imported():
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env=env, check=True).stdout
        return out.strip().splitlines()[-1]

    assert imported() == "['matplotlib']"
    assert imported() == "[]"  # unchanged: the last results, nothing drawn
    summary = json.loads((folder / "analysis/summary.json").read_text())
    assert summary["model_based"]["status"] == "unavailable"
    assert "hf download laion/clap-htsat-unfused" in summary["model_based"]["reason"]


def test_workers_end_on_sigterm_whatever_their_parent_does_with_it():
    """Pools end their workers with SIGTERM: a parent's handler (acr experiment's raises
    KeyboardInterrupt) must not decide whether a worker ends."""
    from acr.commands.analyze import workers

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with workers.pool(1) as processes:
            assert processes.apply(signal.getsignal, (signal.SIGTERM,)) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_workers_below_one_exit_2_and_write_nothing(acr, tmp_path):
    folder = small_run(tmp_path / "run", settings=("only",), prompts=1)
    result = acr("analyze", folder, "--workers", "0")
    assert result.exit_code == 2
    assert "Invalid value for '--workers'" in result.stderr and "1" in result.stderr
    assert not (folder / "analysis").exists()


FAULTS = """
import os, resource
import numpy as np
from acr.commands.analyze import workers

def resident():  # bytes
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

kept = []

def faults(items):  # minor page faults while making and freeing 30 MB of arrays, per item
    out = []
    for _ in items:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        arrays = [np.ones(6 * 2**20 // 8) for _ in range(5)]
        del arrays
        out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    kept.append(resident())  # after freeing them, still in the batches
    return out

start = resident()
print([f for _, batch in workers.in_batches(faults, list(range(6)), workers=1) for f in batch])
print(kept[-1] - start, resident() - start)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or "glibc" not in
                    " ".join(__import__("platform").libc_ver()), reason="glibc's malloc only")
def test_features_in_this_process_reuse_freed_memory_then_hand_it_back():
    """With one worker the features run in this process: freed arrays are kept for the next
    clip, not handed back and faulted in again (that cost 3 s of system time in 400 clips);
    at the end what malloc kept is handed back. Counted in a fresh process, where malloc's
    state is its own (numpy's huge pages off: with them a fault maps 2 MB)."""
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True,
                         check=True, env={**os.environ, "NUMPY_MADVISE_HUGEPAGE": "0"}
                         ).stdout.splitlines()
    during = json.loads(out[0])
    kept, after = map(int, out[1].split())
    assert max(during[1:]) < 2**20 // os.sysconf("SC_PAGE_SIZE")  # after the first: < 1 MB
    assert kept > 20 * 2**20  # the freed 30 MB held for reuse during the features
    assert after < 10 * 2**20  # and handed back after them

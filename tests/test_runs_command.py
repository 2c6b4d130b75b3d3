"""`acr runs` and `acr runs compare` on a folder with completed, failed, running and interrupted
runs. The completed experiment (analysed) and the generate run are real runs on the tiny
models; the other states are copies of the experiment with their meta.json edited (failed,
interrupted, and `running` both with its lock held by this test, i.e. really running, and with
no one holding it, i.e. killed)."""
import json
import shutil
import subprocess
import sys

import pytest
import yaml

from acr.core.runs import is_locked, lock_run
from helpers import kill_when

GRID = """\
name: cmp
model: tiny-musicgen
device: cpu
seed: 3
samples_per_prompt: 1
batch_size: 4
defaults: {duration: 1.0}
prompt_sets:
  calm: [soft piano, quiet strings, low cello]
parameter_sets:
  baseline: {}
  hot: {temperature: 1.5}
analyze: true
"""


def edit_meta(run, **fields):
    meta = json.loads((run / "meta.json").read_text())
    meta.update(fields)
    (run / "meta.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """experiments/ with: cmp/completed (real, analysed), gen/one (a real acr generate), and
    copies of the experiment edited to failed, interrupted, running (locked) and killed."""
    from typer.testing import CliRunner

    from acr.cli import app

    root = tmp_path_factory.mktemp("runs") / "experiments"
    config = root.parent / "cmp.yaml"
    config.write_text(GRID)
    done = root / "cmp" / "20261101T100000Z-aaaaaa"
    result = CliRunner().invoke(app, ["experiment", str(config), "--out", str(done)])
    assert result.exit_code == 0, result.stderr
    result = CliRunner().invoke(app, ["generate", "--model", "tiny-musicgen", "-p", "a", "-p",
                                      "b", "--duration", "0.5", "--name", "gen", "--out",
                                      str(root / "gen" / "20261120T100000Z-bbbbbb")])
    assert result.exit_code == 0, result.stderr
    edit_meta(done, started="2026-11-01T10:00:00Z", ended="2026-11-01T10:02:05Z")
    states = {"failed": {"status": "failed", "error": "RuntimeError: boom"},
              "interrupted": {"status": "interrupted"},
              "running": {"status": "running", "ended": None},
              "killed": {"status": "running", "ended": None}}
    for index, (label, fields) in enumerate(states.items()):
        copy = root / f"cmp-{label}" / f"2026111{index}T100000Z-cccccc"
        shutil.copytree(done, copy)
        edit_meta(copy, started=f"2026-11-1{index}T10:00:00Z", **fields)
    # the "hot" copy of the finished run: another temperature, and its analysis says so
    hot = root / "cmp-hot" / "20261121T100000Z-dddddd"
    shutil.copytree(done, hot)
    cfg = yaml.safe_load((hot / "config.yaml").read_text())
    cfg["parameter_sets"]["hot"]["temperature"] = 2.0
    (hot / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    summary = json.loads((hot / "analysis/summary.json").read_text())
    summary["groups"]["hot"]["loudness_lufs"]["mean"] = -11.5
    (hot / "analysis/summary.json").write_text(json.dumps(summary))
    edit_meta(hot, started="2026-11-21T10:00:00Z", ended="2026-11-21T10:01:00Z")
    # a generate run that died (no one holds its lock), an experiment launched on a cluster,
    # whose tasks hold its lock only for moments: listed as its meta.json says, and one resumed
    # since in one process, then killed
    killed = root / "gen-killed" / "20261122T100000Z-eeeeee"
    shutil.copytree(root / "gen" / "20261120T100000Z-bbbbbb", killed)
    edit_meta(killed, status="running", ended=None, started="2026-11-22T10:00:00Z")
    launched = root / "cmp-launched" / "20261123T100000Z-ffffff"
    shutil.copytree(done, launched)
    edit_meta(launched, status="running", ended=None, started="2026-11-23T10:00:00Z",
              launcher={"kind": "slurm", "tasks": 2}, held_by_tasks=True)
    resumed = root / "cmp-resumed" / "20261124T100000Z-ffffff"
    shutil.copytree(done, resumed)
    edit_meta(resumed, status="running", ended=None, started="2026-11-24T10:00:00Z",
              launcher={"kind": "slurm", "tasks": 2}, held_by_tasks=False)
    lock = lock_run(root / "cmp-running" / "20261112T100000Z-cccccc")
    yield root
    lock.close()


def listed(acr, *args):
    result = acr("runs", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_lists_every_run_with_its_state_and_the_baselines_metrics(acr, runs):
    rows = {r["path"].split("/experiments/")[1]: r for r in listed(acr, runs)}
    assert {k: (r["command"], r["status"]) for k, r in rows.items()} == {
        "cmp/20261101T100000Z-aaaaaa": ("experiment", "completed"),
        "cmp-failed/20261110T100000Z-cccccc": ("experiment", "failed"),
        "cmp-interrupted/20261111T100000Z-cccccc": ("experiment", "interrupted"),
        "cmp-running/20261112T100000Z-cccccc": ("experiment", "running"),
        "cmp-killed/20261113T100000Z-cccccc": ("experiment", "interrupted"),  # no lock holder
        "gen/20261120T100000Z-bbbbbb": ("generate", "completed"),
        "cmp-hot/20261121T100000Z-dddddd": ("experiment", "completed"),
        "gen-killed/20261122T100000Z-eeeeee": ("generate", "interrupted"),
        "cmp-launched/20261123T100000Z-ffffff": ("experiment", "running"),
        "cmp-resumed/20261124T100000Z-ffffff": ("experiment", "interrupted")}
    done = rows["cmp/20261101T100000Z-aaaaaa"]
    assert done["name"] == "cmp" and done["models"] == ["tiny-musicgen"]
    assert done["size"] == "6 samples" and done["device"] == "cpu"
    assert done["duration_s"] == 125.0
    summary = json.loads((runs / "cmp/20261101T100000Z-aaaaaa/analysis/summary.json")
                         .read_text())
    assert done["baseline"] == "baseline"
    assert done["metrics"]["loudness_lufs"] == \
        summary["groups"]["baseline"]["loudness_lufs"]["mean"]
    assert rows["gen/20261120T100000Z-bbbbbb"]["size"] == "2 samples"
    assert rows["gen/20261120T100000Z-bbbbbb"]["metrics"] == {}
    # oldest first
    assert [r["started"] for r in listed(acr, runs)] == sorted(r["started"] for r in rows.values())


def test_filters(acr, runs):
    def names(*args):
        return sorted(r["path"].split("/experiments/")[1].split("/")[0]
                      for r in listed(acr, runs, *args))

    assert names("--status", "interrupted") == ["cmp-interrupted", "cmp-killed", "cmp-resumed",
                                                "gen-killed"]
    assert names("--status", "running", "--status", "failed") == ["cmp-failed", "cmp-launched",
                                                                  "cmp-running"]
    assert names("--command", "generate") == ["gen", "gen-killed"]
    assert names("--since", "2026-11-20") == ["cmp-hot", "cmp-launched", "cmp-resumed", "gen",
                                              "gen-killed"]
    assert names("--name", "cmp-*") == ["cmp-failed", "cmp-hot", "cmp-interrupted",
                                        "cmp-killed", "cmp-launched", "cmp-resumed",
                                        "cmp-running"]
    assert names("--name", "*dddddd") == ["cmp-hot"]
    assert names("--since", "10000d", "--command", "experiment", "--status", "completed") == \
        ["cmp", "cmp-hot"]


def test_table_and_bad_input(acr, runs, tmp_path):
    result = acr("runs", runs)
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "10 run(s)" and lines[1].split("\t")[:4] == ["run", "name", "command",
                                                                   "status"]
    assert sum("\tinterrupted\t" in line for line in lines) == 4
    assert acr("runs", tmp_path / "nowhere").exit_code == 2
    result = acr("runs", runs, "--status", "paused")
    assert result.exit_code == 2 and "--status paused" in result.stderr
    result = acr("runs", runs, "--since", "last tuesday")
    assert result.exit_code == 2 and "--since last tuesday" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = acr("runs", empty, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_compare_diffs_configs_and_puts_shared_metrics_side_by_side(acr, runs):
    a, b = runs / "cmp/20261101T100000Z-aaaaaa", runs / "cmp-hot/20261121T100000Z-dddddd"
    result = acr("runs", "compare", a, b, "--json")
    assert result.exit_code == 0, result.stderr
    comparison = json.loads(result.stdout)
    assert comparison["config"] == [{"key": "parameter_sets.hot.temperature",
                                     "values": [1.5, 2.0]}]
    shared = {(m["setting"], m["metric"]): m["values"] for m in comparison["metrics"]}
    summary = json.loads((a / "analysis/summary.json").read_text())
    hot, base = "hot", "baseline"
    assert shared[(hot, "loudness_lufs")] == [summary["groups"][hot]["loudness_lufs"]["mean"],
                                              -11.5]
    assert shared[(base, "tempo_bpm")][0] == shared[(base, "tempo_bpm")][1]
    result = acr("runs", "compare", a, b)
    assert result.exit_code == 0
    assert "parameter_sets.hot.temperature\t1.5\t2" in result.stderr
    gen = runs / "gen/20261120T100000Z-bbbbbb"
    result = acr("runs", "compare", a, gen, "--json")
    keys = [d["key"] for d in json.loads(result.stdout)["config"]]
    assert "prompts" in keys and "prompt_sets.calm" in keys
    assert acr("runs", "compare", a).exit_code == 2
    result = acr("runs", "compare", a, runs)
    assert result.exit_code == 2 and "not a run folder" in result.stderr


def test_runs_imports_no_torch(runs):
    code = ("import sys; from typer.testing import CliRunner; from acr.cli import app; "
            f"r = CliRunner().invoke(app, ['runs', {str(runs)!r}, '--json']); "
            "assert r.exit_code == 0, r.output; "
            f"r = CliRunner().invoke(app, ['runs', 'compare', "
            f"{str(runs / 'cmp/20261101T100000Z-aaaaaa')!r}, "
            f"{str(runs / 'gen/20261120T100000Z-bbbbbb')!r}]); assert r.exit_code == 0; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'audiocraft', 'torchaudio')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_a_killed_generate_run_is_listed_as_interrupted(acr, tmp_path):
    """acr generate holds its run's lock to the end, as experiment and finetune do: killed with
    -9, its meta.json still says running, and `acr runs` lists it as interrupted."""
    out = tmp_path / "experiments" / "gen" / "20261201T100000Z-eeeeee"
    proc = subprocess.Popen([sys.executable, "-m", "acr", "generate", "--model", "tiny-musicgen",
                             "-p", "a long drone", "--duration", "120", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: (out / "meta.json").is_file() and is_locked(out), limit=300)
    assert json.loads((out / "meta.json").read_text())["status"] == "running"
    assert [(r["command"], r["status"]) for r in listed(acr, tmp_path / "experiments")] == \
        [("generate", "interrupted")]


def test_a_process_resuming_a_launched_run_holds_it_itself(tmp_path):
    """A launched run's tasks take its lock only for moments (held_by_tasks); a process that
    resumes it holds the lock to its end, so that mark goes, and once that process is killed
    the run is listed as interrupted again."""
    from acr.core.runs import begin_run, start_run

    run = start_run("experiment", "x", "name: x\n", 1, "cpu", "cpu", root=tmp_path, argv=[])
    run.update_meta(held_by_tasks=True)
    resumed, lock = begin_run("experiment", "x", "name: x\n", 1, "cpu", "cpu", None, [], run)
    try:
        assert resumed.meta()["held_by_tasks"] is False and is_locked(run.dir)
    finally:
        lock.close()

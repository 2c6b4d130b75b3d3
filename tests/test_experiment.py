"""`acr experiment`: the plan, the files, reproducibility, resume, locks, OOM back-off, ranks."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml

from acr.core.config.loader import load_config
from acr.core.config.schema import ExperimentConfig
from acr.commands.experiment.plan import Sample, batch_seed, expand, model_dirnames, plan_batches
from acr.core.runs import lock_run
from helpers import ROOT

GRID = """\
name: grid
model: tiny-musicgen
device: cpu
seed: 3
samples_per_prompt: 2
batch_size: 3
defaults: {duration: 1.0}
prompt_sets:
  calm: [soft piano, quiet strings]
  loud: [heavy drums]
parameter_sets:
  base: {}
  hot: {temperature: 1.5, top_k: 50}
findings: [{title: first look, description: nothing yet}]
analyze: false
"""


def write(tmp_path, text=GRID, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def wavs(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*.wav"))}


# ---- the plan ---------------------------------------------------------------------------------


def test_expand_and_plan(tmp_path):
    cfg = load_config(ExperimentConfig, write(tmp_path))
    samples = expand(cfg)
    assert len(samples) == 2 * 3 * 2  # parameter sets x prompts x samples
    assert samples[0] == Sample("tiny-musicgen/base/calm/0-0", "tiny-musicgen", "base", "calm",
                                0, 0, "soft piano")
    assert samples[0].path == "samples/tiny-musicgen/base/calm/0-0.wav"
    assert len({s.id for s in samples}) == len(samples)
    batches = plan_batches(samples, 4, cfg.seed)
    assert [len(b.samples) for b in batches] == [4, 2, 4, 2]  # never across parameter sets
    for batch in batches:
        assert {(s.model, s.parameter_set) for s in batch.samples} == \
            {(batch.model, batch.parameter_set)}
        assert batch.seed == batch_seed(3, batch.model, batch.parameter_set, batch.number)
    assert len({b.seed for b in batches}) == len(batches)
    assert plan_batches(samples, 4, cfg.seed) == batches  # deterministic


def test_defaults_merge_under_parameter_sets(tmp_path):
    cfg = load_config(ExperimentConfig, write(tmp_path))
    assert cfg.parameter_sets["base"].duration == 1.0 and cfg.parameter_sets["base"].top_k == 250
    assert (cfg.parameter_sets["hot"].temperature, cfg.parameter_sets["hot"].top_k) == (1.5, 50)
    assert cfg.parameter_sets["hot"].duration == 1.0


def test_model_dirnames_are_unique_and_safe():
    assert model_dirnames(["tiny-musicgen", "/x/run/model", "/y/run/model", "facebook/m"]) == {
        "tiny-musicgen": "tiny-musicgen", "/x/run/model": "model", "/y/run/model": "model-2",
        "facebook/m": "m"}


def test_shipped_emotion_study_has_the_promised_shape():
    for name, model in (("emotion.yaml", "musicgen-small"), ("demo.yaml", "tiny-musicgen")):
        cfg = load_config(ExperimentConfig, ROOT / "configs" / name)
        assert cfg.model == model
        assert list(cfg.prompt_sets) == ["joy", "sadness", "anger", "fear", "serenity"]
        assert all(len(p) == 4 for p in cfg.prompt_sets.values())
        settings = {k: (v.temperature, v.cfg_coef) for k, v in cfg.parameter_sets.items()}
        assert settings == {"baseline": (1.0, 3.0), "high_temp": (1.5, 3.0),
                            "low_temp": (0.5, 3.0), "high_guidance": (1.0, 7.0),
                            "low_guidance": (1.0, 1.5)}
    assert load_config(ExperimentConfig, ROOT / "configs/emotion.yaml").defaults.duration == 10.0


# ---- running ----------------------------------------------------------------------------------


def test_grid_writes_every_sample_and_the_manifest(acr, in_tmp):
    result = acr("experiment", write(in_tmp), "--out", "R")
    assert result.exit_code == 0, result.stderr
    run = in_tmp / "R"
    files = wavs(run)
    assert len(files) == 12
    for path in files:
        info = sf.info(str(run / path))
        assert (info.samplerate, info.frames) == (32000, 32000)
    manifest = json.loads((run / "experiment.json").read_text())
    assert manifest["complete"] and manifest["totals"]["samples"] == 12
    assert manifest["totals"]["audio_seconds"] == 12.0
    assert sorted(r["path"] for r in manifest["samples"]) == sorted(files)
    row = next(r for r in manifest["samples"] if r["id"] == "tiny-musicgen/hot/loud/0-1")
    assert row["prompt"] == "heavy drums" and row["parameter_set"] == "hot"
    assert row["parameters"]["temperature"] == 1.5 and row["duration"] == 1.0
    assert set(row) >= {"id", "path", "model", "parameter_set", "prompt_set", "prompt",
                        "parameters", "seed", "duration", "generation_seconds"}
    assert manifest["findings"][0]["title"] == "first look"
    side = json.loads((run / "samples/tiny-musicgen/hot/loud/0-1.json").read_text())
    assert side["seed"] == row["seed"] and side["sample_index"] == 1
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["batch_size"] == 3
    assert "12/12" in result.stderr and "x real time" in result.stderr  # the summary table
    assert "real-time factor" not in result.stderr  # audio people read that as wall / audio
    assert manifest["totals"]["x_real_time"] == pytest.approx(
        12.0 / sum(r["generation_seconds"] for r in manifest["samples"]), rel=0.01)
    assert not (run / ".lock").exists()  # released and removed at the end


@pytest.mark.slow
def test_same_config_twice_is_byte_identical(acr, in_tmp):
    path = write(in_tmp)
    for out in ("A", "B"):
        assert acr("experiment", path, "--out", out).exit_code == 0
    assert wavs(in_tmp / "A") == wavs(in_tmp / "B")


@pytest.mark.slow
def test_a_sample_does_not_depend_on_other_batches(acr, in_tmp):
    """Dropping the first parameter set leaves the second one's audio unchanged."""
    assert acr("experiment", write(in_tmp), "--out", "full").exit_code == 0
    only_hot = GRID.replace("  base: {}\n", "")
    assert acr("experiment", write(in_tmp, only_hot, "hot.yaml"), "--out", "hot").exit_code == 0
    hot = wavs(in_tmp / "hot")
    assert len(hot) == 6
    full = wavs(in_tmp / "full")
    assert all(full[path] == data for path, data in hot.items())


@pytest.mark.parametrize("change, message", [
    ("  loud: [heavy drums]", "prompt_sets.loud: needs at least 1 item(s)"),
    ("defaults: {duration: 1.0}", "defaults.duration: -2 is out of range: must be greater than 0"),
    ("  base: {}", "parameter_sets.base.temprature: unknown key (did you mean 'temperature'?)"),
    ("model: tiny-musicgen", "model: unknown model 'musicgen-gigantic'"),
])
def test_bad_config_exits_2_with_one_clear_line_and_no_run_folder(acr, in_tmp, change, message):
    replacement = {"  loud: [heavy drums]": "  loud: []",
                   "defaults: {duration: 1.0}": "defaults: {duration: -2}",
                   "  base: {}": "  base: {temprature: 1.2}",
                   "model: tiny-musicgen": "model: musicgen-gigantic"}[change]
    result = acr("experiment", write(in_tmp, GRID.replace(change, replacement)))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith(str(in_tmp / "grid.yaml"))
    assert not (in_tmp / "experiments").exists()


def test_resume_needs_a_config_or_a_run(acr, in_tmp):
    result = acr("experiment", "--resume", in_tmp)
    assert result.exit_code == 2 and "not a run folder" in result.stderr
    result = acr("experiment", "run")
    assert result.exit_code == 2 and "give an experiment CONFIG" in result.stderr


@pytest.mark.slow
def test_sigkill_then_resume_is_complete_and_byte_identical(acr, in_tmp):
    text = GRID.replace("samples_per_prompt: 2", "samples_per_prompt: 6").replace(
        "batch_size: 3", "batch_size: 2").replace("duration: 1.0", "duration: 2.0")
    path = write(in_tmp, text)
    assert acr("experiment", path, "--out", "reference").exit_code == 0
    reference = wavs(in_tmp / "reference")
    assert len(reference) == 36
    proc = subprocess.Popen([sys.executable, "-m", "acr", "experiment", str(path), "--out",
                             str(in_tmp / "killed")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600  # generous: a loaded 2-core machine is slow
    while len(list((in_tmp / "killed").rglob("*.wav"))) < 8 and time.monotonic() < deadline:
        assert proc.poll() is None, "the run finished before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = in_tmp / "killed"
    assert 8 <= len(wavs(killed)) < 36
    assert json.loads((killed / "meta.json").read_text())["status"] == "running"
    result = acr("experiment", "--resume", killed)
    assert result.exit_code == 0, result.stderr
    assert "already done" in result.stderr
    assert wavs(killed) == reference
    assert not [p for p in killed.rglob("*") if p.name.endswith(".tmp")]
    meta = json.loads((killed / "meta.json").read_text())
    assert meta["status"] == "completed" and len(meta["resumed"]) == 1
    assert json.loads((killed / "experiment.json").read_text())["totals"]["samples"] == 36


@pytest.mark.slow
def test_ctrl_c_marks_interrupted_and_resume_finishes(acr, in_tmp, monkeypatch):
    from acr.commands.experiment.batches import PlainBatches

    path = write(in_tmp)
    assert acr("experiment", path, "--out", "reference").exit_code == 0
    real = PlainBatches.run
    calls = []

    def interrupt_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(PlainBatches, "run", interrupt_third)
    result = acr("experiment", path, "--out", "R")
    assert result.exit_code == 130
    run = in_tmp / "R"
    assert json.loads((run / "meta.json").read_text())["status"] == "interrupted"
    manifest = json.loads((run / "experiment.json").read_text())
    assert not manifest["complete"] and manifest["totals"]["samples"] == 6
    monkeypatch.setattr(PlainBatches, "run", real)
    assert acr("experiment", path, "--resume", run).exit_code == 0  # same config: accepted
    assert wavs(run) == wavs(in_tmp / "reference")


@pytest.mark.slow
def test_resume_refuses_a_changed_config_and_shows_the_difference(acr, in_tmp):
    path = write(in_tmp)
    assert acr("experiment", path, "--out", "R").exit_code == 0
    before = wavs(in_tmp / "R")
    changed = write(in_tmp, GRID.replace("temperature: 1.5", "temperature: 1.6"), "changed.yaml")
    result = acr("experiment", changed, "--resume", "R")
    assert result.exit_code == 2
    assert "the config changed since this run started" in result.stderr
    assert "parameter_sets.hot.temperature: run has 1.5, config has 1.6" in result.stderr
    assert wavs(in_tmp / "R") == before


def test_a_locked_run_folder_is_refused(acr, in_tmp):
    path = write(in_tmp)
    assert acr("experiment", path, "--out", "R").exit_code == 0
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from acr.core.runs import lock_run\nheld = lock_run(sys.argv[1])\n"
                               "print('locked', flush=True)\ntime.sleep(60)", str(in_tmp / "R")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = acr("experiment", "--resume", "R")
        assert result.exit_code == 2
        assert f"in use by another acr process (pid {holder.pid})" in result.stderr
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_cuda_out_of_memory_halves_the_batch(acr, in_tmp, monkeypatch):
    """Failure injection: batches of more than 2 raise CUDA's out-of-memory error."""
    import acr.commands.experiment.batches as batches

    real = batches.generate_batch
    sizes = []

    def small_memory(loaded, prompts, *args, **kwargs):
        sizes.append(len(prompts))
        if len(prompts) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real(loaded, prompts, *args, **kwargs)

    monkeypatch.setattr(batches, "generate_batch", small_memory)
    result = acr("experiment", write(in_tmp), "--out", "R")
    assert result.exit_code == 0, result.stderr
    assert len(wavs(in_tmp / "R")) == 12
    assert sizes[:3] == [3, 1, 2]  # the first batch of 3 fails, then halves of 1 and 2
    assert 3 not in sizes[3:]  # later batches split before trying
    events = [json.loads(l) for l in (in_tmp / "R/events.jsonl").read_text().splitlines()]
    assert [e["retry_with"] for e in events if e["event"] == "batch.oom"] == [2]
    sides = [json.loads(p.read_text()) for p in (in_tmp / "R/samples").rglob("*.json")]
    assert max(s["batch_size"] for s in sides) <= 2


@pytest.mark.slow
def test_note_records_a_finding(acr, in_tmp):
    assert acr("experiment", write(in_tmp), "--out", "R").exit_code == 0
    result = acr("experiment", "note", "R", "--title", "hot is noisier", "--text", "by ear")
    assert result.exit_code == 0, result.stderr
    findings = json.loads((in_tmp / "R/findings.json").read_text())
    assert [(f["title"], f["source"]) for f in findings] == [("first look", "config"),
                                                             ("hot is noisier", "note")]
    assert findings[1]["description"] == "by ear"
    manifest = json.loads((in_tmp / "R/experiment.json").read_text())
    assert manifest["findings"] == findings
    assert acr("experiment", "note", "R", "--title", " ").exit_code == 2
    (in_tmp / "G").mkdir()
    assert acr("generate", "--model", "tiny-musicgen", "-p", "x", "--duration", "0.5",
               "--out", "G/run").exit_code == 0
    result = acr("experiment", "note", "G/run", "--title", "t")
    assert result.exit_code == 2 and "a run of `acr generate`" in result.stderr


@pytest.mark.slow
def test_torchrun_two_ranks_match_a_single_process(tmp_path):
    """torchrun splits the batch plan across 2 gloo ranks; the files equal a 1-process run with
    the same thread count (torchrun gives each rank one thread)."""
    path = write(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "acr", "experiment", str(path), "--out",
                             str(tmp_path / "single")], env=env, capture_output=True, text=True,
                            timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    ranks = subprocess.run([sys.executable, "-m", "torch.distributed.run",
                            "--standalone", "--nproc_per_node", "2",  # (a free port)
                            "-m", "acr", "experiment", str(path), "--out",
                            str(tmp_path / "ranks")], env=env, capture_output=True, text=True,
                           timeout=300)
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    assert wavs(tmp_path / "ranks") == wavs(tmp_path / "single")
    events = [json.loads(l) for l in (tmp_path / "ranks/events.jsonl").read_text().splitlines()]
    assert {e["rank"] for e in events if e["event"] == "batch.end"} == {0, 1}
    meta = json.loads((tmp_path / "ranks/meta.json").read_text())
    assert meta["world_size"] == 2 and meta["status"] == "completed"
    assert json.loads((tmp_path / "ranks/experiment.json").read_text())["totals"]["samples"] == 12
    # one progress report (rank 0's) over the world's samples, and the world's totals
    progress = [line for line in ranks.stderr.splitlines() if line.startswith("samples: ")]
    assert progress and all(line.endswith("/12") for line in progress), progress
    assert progress[-1] == "samples: 12/12" and progress.count("samples: 12/12") == 1
    [row] = [line for line in ranks.stderr.splitlines() if "12/12" in line and "\t" in line]
    cells = row.split("\t")  # off a terminal, the table's rows are tab-separated
    assert cells[:3] == ["12/12", "12", "12.0"]  # samples, generated now, seconds of audio


# ---- the run folder's records: resolved config, status after failures, the lock -------------


def test_config_yaml_records_what_was_used_and_resume_still_accepts_the_config(acr, in_tmp):
    """config.yaml holds the device picked and each parameter set's extend_stride as resolved;
    the config the run started from (device auto, extend_stride null) still resumes, a changed
    one does not."""
    from acr.core.models import resolve_device

    path = write(in_tmp, GRID.replace("device: cpu\n", "").replace("batch_size: 3", "batch_size: 6"))
    assert acr("experiment", path, "--out", "R").exit_code == 0
    recorded = yaml.safe_load((in_tmp / "R/config.yaml").read_text())
    assert recorded["device"] == resolve_device("auto") != "auto"
    assert {name: p["extend_stride"] for name, p in recorded["parameter_sets"].items()} == \
        {"base": 18.0, "hot": 18.0}
    result = acr("experiment", path, "--resume", "R")
    assert result.exit_code == 0, result.stderr
    assert "12 already done" in result.stderr
    changed = write(in_tmp, GRID.replace("device: cpu\n", "device: cpu\n").replace(
        "batch_size: 3", "batch_size: 6").replace("{}", "{extend_stride: 10}"), "changed.yaml")
    result = acr("experiment", changed, "--resume", "R")
    assert result.exit_code == 2
    assert "parameter_sets.base.extend_stride: run has 18.0, config has 10.0" in result.stderr


def test_a_failure_after_the_run_folder_exists_marks_it_failed(acr, in_tmp, monkeypatch):
    """Here the final manifest fails to write: the run is `failed`, with the error, and no
    lock file is left behind."""
    import acr.commands.experiment.run as recipe

    real = recipe.write_manifest

    def broken(run_dir, cfg, samples, complete):
        if complete:
            raise OSError("disk full (injected)")
        return real(run_dir, cfg, samples, complete)

    monkeypatch.setattr(recipe, "write_manifest", broken)
    result = acr("experiment", write(in_tmp), "--out", "R")
    assert result.exit_code == 1
    assert "error: OSError: disk full (injected)" in result.stderr
    meta = json.loads((in_tmp / "R/meta.json").read_text())
    assert meta["status"] == "failed" and meta["error"] == "OSError: disk full (injected)"
    assert not json.loads((in_tmp / "R/experiment.json").read_text())["complete"]
    assert not (in_tmp / "R/.lock").exists()


def test_the_lock_is_held_until_the_final_status_is_written(acr, in_tmp, monkeypatch):
    """While the manifest and the final status are written, a second process is refused; after
    the run, no `.lock` file is left."""
    import acr.commands.experiment.run as recipe
    from acr.core.errors import UsageError
    from acr.core.runs import Run

    def refused(folder) -> bool:
        try:
            lock_run(folder).close()
        except UsageError:
            return True
        return False

    seen = {}
    real_manifest, real_finish = recipe.write_manifest, Run.finish

    def manifest(run_dir, cfg, samples, complete):
        seen["manifest"] = refused(run_dir)
        return real_manifest(run_dir, cfg, samples, complete)

    def finish(self, status, **fields):
        seen["finish"] = refused(self.dir)
        return real_finish(self, status, **fields)

    monkeypatch.setattr(recipe, "write_manifest", manifest)
    monkeypatch.setattr(Run, "finish", finish)
    assert acr("experiment", write(in_tmp), "--out", "R").exit_code == 0
    assert seen == {"manifest": True, "finish": True}
    assert json.loads((in_tmp / "R/meta.json").read_text())["status"] == "completed"
    assert not (in_tmp / "R/.lock").exists()


def test_batch_size_flag_errors_name_the_flag(acr, in_tmp):
    result = acr("experiment", write(in_tmp), "--batch-size", "0")
    assert result.exit_code == 2
    assert result.stderr.strip() == "--batch-size: batch_size: 0 is out of range: must be at least 1"
    assert not (in_tmp / "experiments").exists()


# ---- the model axis: one model at a time, each sized and checked -------------------------------


@pytest.mark.slow
def test_model_axis_sizes_checks_and_holds_one_model_at_a_time(acr, in_tmp, monkeypatch):
    """Each model gets its own auto batch size (here: a stand-in for free GPU memory that
    differs by model), and only the model that generates is loaded."""
    import acr.commands.experiment.batches as batches
    from acr.core import models

    sizes = {32000: 4, 16000: 3}  # tiny-musicgen, tiny-audiogen
    monkeypatch.setattr(batches, "generation_batch_size",
                        lambda loaded, group: min(sizes[loaded.sample_rate], group))
    real, held = batches.generate_batch, []

    def watched(loaded, *args, **kwargs):
        held.append({source.rsplit("/", 1)[-1] for source, _ in models.loaded_models()})
        return real(loaded, *args, **kwargs)

    monkeypatch.setattr(batches, "generate_batch", watched)
    for source, device in models.loaded_models():  # a fresh process would hold none
        models.release_model(source, device)
    text = GRID.replace("model: tiny-musicgen", "models: [tiny-musicgen, tiny-audiogen]") \
        .replace("batch_size: 3", "batch_size: auto")
    result = acr("experiment", write(in_tmp, text), "--out", "R")
    assert result.exit_code == 0, result.stderr
    files = wavs(in_tmp / "R")
    assert len(files) == 24
    rates = {p.split("/")[1]: sf.info(str(in_tmp / "R" / p)).samplerate for p in files}
    assert rates == {"tiny-musicgen": 32000, "tiny-audiogen": 16000}
    meta = json.loads((in_tmp / "R/meta.json").read_text())
    assert meta["batch_size"] == {"tiny-musicgen": 4, "tiny-audiogen": 3}
    sides = [json.loads(p.read_text()) for p in (in_tmp / "R/samples").rglob("*.json")]
    assert {s["model"]: max(x["batch_size"] for x in sides if x["model"] == s["model"])
            for s in sides} == {"tiny-musicgen": 4, "tiny-audiogen": 3}
    assert held[0] == {"tiny-musicgen-v1"} and held[-1] == {"tiny-audiogen-v1"}
    assert all(len(models_held) == 1 for models_held in held)


def test_every_model_of_the_axis_is_checked_before_anything_is_written(acr, in_tmp):
    """A stride fine for the first model but too long for the second: exit 2, no run folder."""
    text = GRID.replace("model: tiny-musicgen", "models: [tiny-musicgen, tiny-audiogen]") \
        .replace("  base: {}", "  base: {extend_stride: 12}")
    result = acr("experiment", write(in_tmp, text), "--out", "R")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("parameter_sets.base.extend_stride: 12 must be below the "
                                     "model's window of 10 s; use a smaller value (default 2)")
    assert not (in_tmp / "R").exists()

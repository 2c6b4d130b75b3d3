"""CLI behaviour: fast import, version, validate, and the exit-2-nothing-written error paths."""
import os
import shutil
import subprocess
import sys

import pytest

from acr import __version__
from helpers import ROOT, cuda_available, run_acr, run_python

BAD_YAML = """\
model: tiny-musicgen
prompts: ["calm piano"]
params:
  tempreature: 1.2
  duration: 2
seed: "seven"
seed: 3
"""


def test_cli_import_does_not_import_torch_or_audiocraft():
    proc = run_python("import sys, acr.cli; "
                      "print(sorted(m for m in ('torch', 'audiocraft', 'torchaudio', 'numpy') "
                      "if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("code,status,stderr", [("None", 0, ""), ("3", 3, ""),
                                                ("'bad config'", 1, "bad config\n")])
@pytest.mark.parametrize("thread", [False, True])
def test_the_quick_exit_keeps_status_output_and_exit_handlers(code, status, stderr, thread):
    """acr's process exit skips Python's teardown (not the exit handlers, not unflushed output):
    an object's finaliser that the teardown would run does not run; with another thread
    running it exits the normal way, with the same result and the finaliser run."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    script = ("import atexit, sys, threading, time\n"
              "from acr.__main__ import leave\n"
              "atexit.register(lambda: print('handler ran', file=sys.stderr))\n"
              "class Noisy:\n"
              "    def __del__(self): sys.stderr.write('teardown\\n')\n"
              "kept = Noisy()\n"
              f"if {thread}: threading.Thread(target=time.sleep, args=(1.0,)).start()\n"
              "print('output', end='')  # unflushed: stdout is a pipe\n"
              f"leave({code})\n"
              "print('not reached')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=environment)
    assert proc.returncode == status
    assert proc.stdout == "output"
    assert proc.stderr == stderr + "handler ran\n" + ("teardown\n" if thread else "")


def test_a_command_exits_with_its_status_and_output():
    proc = run_acr("analyze", "/no/such/folder")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "/no/such/folder: no such folder" in proc.stderr
    proc = run_acr("--version")
    assert (proc.returncode, proc.stdout) == (0, f"acr {__version__}\n")


def test_version_and_help(acr):
    result = acr("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"acr {__version__}"
    result = acr("--help")
    assert result.exit_code == 0
    for command in ("generate", "validate", "models"):
        assert command in result.stdout


def test_generate_help_lists_every_generation_parameter(acr):
    text = acr("generate", "--help").stdout
    for flag in ("--model", "--prompt", "--duration", "--seed", "--sampling", "--top-k",
                 "--top-p", "--temperature", "--cfg-coef", "--two-step-cfg", "--extend-stride",
                 "--device", "--out", "--set"):
        assert flag in text, flag


def test_validate_reports_all_problems_with_lines(acr, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_YAML)
    result = acr("validate", path)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"{path}:7:1: seed: duplicate key (first set at line 6); keep one",
                     f"{path}:4:3: params.tempreature: unknown key (did you mean 'temperature'?)",
                     f"{path}:6:7: seed: expected an integer, got 'seven'"]


def test_validate_ok_and_set(acr, tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("prompts: [a]\nmodel: tiny-musicgen\n")
    result = acr("validate", path)
    assert result.exit_code == 0 and "ok (generate config)" in result.stdout
    result = acr("validate", path, "--set", "params.top_k=-1")
    assert result.exit_code == 2
    assert "--set params.top_k=-1: params.top_k: -1 is out of range" in result.stderr


def test_validate_unknown_kind_and_missing_file(acr, tmp_path):
    result = acr("validate", tmp_path / "none.yaml")
    assert result.exit_code == 2 and "no such file" in result.stderr
    (tmp_path / "ok.yaml").write_text("prompts: [a]\n")
    result = acr("validate", tmp_path / "ok.yaml", "--kind", "banana")
    assert result.exit_code == 2 and "unknown config kind" in result.stderr


def test_generate_bad_yaml_exits_2_and_writes_nothing(acr, in_tmp):
    (in_tmp / "bad.yaml").write_text(BAD_YAML)
    result = acr("generate", "bad.yaml", "--out", "D")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 3
    for line_no in (4, 6, 7):
        assert f"bad.yaml:{line_no}:" in result.stderr
    assert sorted(p.name for p in in_tmp.iterdir()) == ["bad.yaml"]


def test_generate_without_prompts_is_a_usage_error(acr, in_tmp):
    result = acr("generate", "--model", "tiny-musicgen")
    assert result.exit_code == 2
    assert "(command line): prompts: missing required key: at least one prompt" in result.stderr
    assert list(in_tmp.iterdir()) == []


def test_unknown_model_lists_known_ones(acr, in_tmp):
    result = acr("generate", "--model", "musicgen-huge", "--prompt", "x")
    assert result.exit_code == 2
    assert "--model: model: unknown model 'musicgen-huge'; known models: tiny-musicgen" in \
        result.stderr
    assert list(in_tmp.iterdir()) == []


def test_nonempty_out_folder_is_never_reused(acr, in_tmp):
    (in_tmp / "D").mkdir()
    (in_tmp / "D" / "keep.txt").write_text("mine")
    result = acr("generate", "--model", "tiny-musicgen", "--prompt", "x", "--duration", "1",
                 "--out", "D")
    assert result.exit_code == 2 and "folder exists and is not empty" in result.stderr
    assert [p.name for p in (in_tmp / "D").iterdir()] == ["keep.txt"]


@pytest.mark.skipif(cuda_available(), reason="checks the no-GPU message")
def test_cuda_requested_without_gpu(acr, in_tmp):
    result = acr("generate", "--model", "tiny-musicgen", "--prompt", "x", "--device", "cuda")
    assert result.exit_code == 2
    assert "device 'cuda': CUDA is not available here" in result.stderr
    assert "use --device cpu" in result.stderr
    assert list(in_tmp.iterdir()) == []


def _cache_lacks(repo: str, *files: str) -> str:
    from huggingface_hub import constants

    return (f"the local Hugging Face cache ({constants.HF_HUB_CACHE}) lacks "
            + ", ".join(f"{repo}/{f}" for f in files))


def test_offline_hub_model_names_missing_files(acr, in_tmp, monkeypatch):
    """HF_HUB_OFFLINE is set (conftest): the missing files are named at once, and the advice
    does not say to set what is set."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    result = acr("generate", "--model", "musicgen-small", "--prompt", "x", "--device", "cpu")
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines() == [
        "model 'musicgen-small' (facebook/musicgen-small): " + _cache_lacks(
            "facebook/musicgen-small", "state_dict.bin", "compression_state_dict.bin")
        + ", t5-base/config.json",
        "cannot download it: HF_HUB_OFFLINE is set. On a connected machine run `hf download "
        "facebook/musicgen-small` and `hf download t5-base`, then copy the cache folder here"]
    assert list(in_tmp.iterdir()) == []


def test_unreachable_hub_is_reported_at_once_without_retries(in_tmp, monkeypatch):
    """HF_HUB_OFFLINE unset and the hub unreachable: acr asks the hub once (a 2 s probe) and
    names the missing files, instead of huggingface_hub's retries (about 24 s per file)."""
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.monotonic()
    proc = run_acr("generate", "--prompt", "x", "--device", "cpu", cwd=in_tmp)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("model 'musicgen-small' (facebook/musicgen-small): the local "
                               "Hugging Face cache (")
    assert lines[1].startswith("cannot download it: the Hugging Face hub (http://127.0.0.1:9) "
                               "does not answer: URLError: ")
    assert lines[1].endswith("On a connected machine run `hf download facebook/musicgen-small` "
                             "and `hf download t5-base`, then copy the cache folder here and set "
                             "HF_HUB_OFFLINE=1")
    assert len(lines) == 2 and "Retrying" not in proc.stderr
    assert elapsed < 20  # the retries alone would take longer
    assert list(in_tmp.iterdir()) == []


def test_offline_hybrid_names_both_models(acr, in_tmp, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    result = acr("generate", ROOT / "configs/hybrid.yaml", "--out", "R")
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines() == [
        "model 'musicgen-small' (facebook/musicgen-small): " + _cache_lacks(
            "facebook/musicgen-small", "state_dict.bin", "compression_state_dict.bin")
        + ", t5-base/config.json",
        "model 'audiogen-medium' (facebook/audiogen-medium): " + _cache_lacks(
            "facebook/audiogen-medium", "state_dict.bin", "compression_state_dict.bin")
        + ", t5-base/config.json",
        "cannot download them: HF_HUB_OFFLINE is set. On a connected machine run `hf download "
        "facebook/musicgen-small` and `hf download facebook/audiogen-medium` and `hf download "
        "t5-base`, then copy the cache folder here"]
    assert list(in_tmp.iterdir()) == []


def test_models_lists_names(acr):
    result = acr("models")
    assert result.exit_code == 0
    for name in ("tiny-musicgen", "tiny-audiogen", "musicgen-small", "audiogen-medium",
                 "magnet-small-10secs", "musicgen-stereo-small"):
        assert name in result.stdout


def test_every_shipped_config_validates(acr):
    configs = sorted((ROOT / "configs").rglob("*.yaml"))
    assert configs, "no shipped configs found"
    for path in configs:
        result = acr("validate", path)
        assert result.exit_code == 0, f"{path}: {result.stderr}"


def test_makefile_quick_start_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    assert "demo: install" in makefile and "test: install" in makefile
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make demo" in quick and "make test" in quick
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "make test" in ci_lines


@pytest.mark.skipif(not shutil.which("make"), reason="needs make")
def test_make_bench_runs_every_benchmark_and_fails_at_the_end_naming_those_that_missed(tmp_path):
    """A benchmark that misses its goal exits 1; the rest still run (the GPU figures come last),
    and `make bench` then fails. Run with a stand-in interpreter that records what it is given."""
    stand_in, log = tmp_path / "python", tmp_path / "ran.txt"
    stand_in.write_text(f'#!/bin/sh\necho "$1" >> {log}\n'
                        'case "$1" in *analyze.py) exit 1;; esac\n')
    stand_in.chmod(0o755)
    result = subprocess.run(["make", "-o", "install", "bench", f"PY={stand_in}"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "goals missed or failed: analyze" in result.stdout
    assert sorted(log.read_text().split()) == \
        sorted(f"benchmarks/{p.name}" for p in (ROOT / "benchmarks").glob("*.py"))


# ---- help texts, config kinds, did-you-mean, validate's checks ------------------------------


@pytest.mark.parametrize("command, schema, minimal", [
    (["generate"], "GenerateConfig", "prompts: [a]\n"),
    (["experiment", "run"], "ExperimentConfig",
     "name: e\nmodel: tiny-musicgen\nprompt_sets: {a: [x]}\nparameter_sets: {b: {}}\n"),
    (["finetune"], "FinetuneConfig", "name: f\ndata: somewhere\n"),
])
def test_set_examples_in_help_are_keys_of_each_commands_config(acr, tmp_path, command, schema,
                                                                minimal):
    import re

    from acr.core.config import schema as schemas
    from acr.core.config.loader import load_config, parse_set

    text = acr(*command, "--help").stdout.replace("\n", " ")
    example = re.search(r"--set\s+(\S+=\S+)\s", text).group(1)
    (tmp_path / "c.yaml").write_text(minimal)
    cfg = load_config(getattr(schemas, schema), tmp_path / "c.yaml", [parse_set(example)])
    key, value = example.split("=")
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    assert node == float(value)


def test_experiment_help_shows_the_run_options(acr):
    text = acr("experiment", "--help").stdout
    for option in ("--resume", "--device", "--batch-size", "--out", "--set",
                   "defaults.temperature=1.2"):
        assert option in text, option
    assert "params.temperature" not in text


@pytest.mark.parametrize("command, config, kind, marker", [
    ("generate", "configs/emotion.yaml", "an experiment", "prompt_sets"),
    ("generate", "configs/finetune-tiny.yaml", "a finetune", "data"),
    ("experiment", "configs/generate.yaml", "a generate", "prompts"),
    ("finetune", "configs/demo.yaml", "an experiment", "prompt_sets"),
])
def test_a_config_of_another_command_says_which_command(acr, in_tmp, command, config, kind,
                                                        marker):
    path = ROOT / config
    result = acr(command, path)
    assert result.exit_code == 2
    run = kind.split()[1]
    assert result.stderr.strip() == (f"{path}: this is {kind} config (it has `{marker}`), not "
                                     f"{'an' if command == 'experiment' else 'a'} {command} "
                                     f"config: run `acr {run} {path}`")
    assert list(in_tmp.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--model", "musicgen-smal"], "--model: model: unknown model 'musicgen-smal' (did you mean "
                                   "'musicgen-small'?); known models: tiny-musicgen"),
    (["--set", "temperature=1.2"], "--set temperature=1.2: temperature: unknown key (did you "
                                   "mean 'params.temperature'?)"),
])
def test_did_you_mean(acr, in_tmp, args, message):
    result = acr("generate", "-p", "x", *args)
    assert result.exit_code == 2 and result.stderr.startswith(message), result.stderr


def test_experiment_set_did_you_mean_points_to_defaults(acr):
    result = acr("validate", ROOT / "configs/demo.yaml", "--set", "temperature=1.2")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("--set temperature=1.2: temperature: unknown key (did you "
                                     "mean 'defaults.temperature'?)")


def test_validate_a_folder_says_what_it_expected(acr, tmp_path):
    result = acr("validate", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"{tmp_path}: is a folder; give a config YAML file (a run "
                                     f"folder's is {tmp_path / 'config.yaml'})")


def test_validate_checks_files_and_strides_against_the_model(acr, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: tiny-audiogen\nprompts: [x]\nparams: {extend_stride: 10}\n"
                    "continuation: {audio: missing.wav}\n")
    result = acr("validate", path)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{path}: continuation.audio: missing.wav: no such file; check the path (in a config, "
        "relative to the config file's folder)",
        f"{path}: params.extend_stride: 10 must be below the window of model 'tiny-audiogen' "
        "(10 s); use a smaller value"]
    grid = tmp_path / "e.yaml"
    grid.write_text("name: e\nmodels: [tiny-musicgen, tiny-audiogen]\nprompt_sets:\n"
                    "  a: [{text: x, melody: audio}]\nparameter_sets: {b: {extend_stride: 12}}\n")
    (tmp_path / "audio").mkdir()
    result = acr("validate", grid)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{grid}: prompt_sets.a[0].melody: audio: is a folder, not an audio file; give a wav, "
        "flac, ogg or mp3 file",
        f"{grid}: parameter_sets.b.extend_stride: 12 must be below the window of model "
        "'tiny-audiogen' (10 s); use a smaller value"]


def test_models_marks_magnet_as_unsupported(acr):
    lines = acr("models").stdout.splitlines()
    [magnet] = [line for line in lines if line.startswith("magnet-small-10secs ")]
    assert magnet.endswith("(magnet); not supported: acr drives MusicGen and AudioGen only")

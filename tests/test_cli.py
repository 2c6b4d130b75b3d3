"""CLI behaviour: fast import, version, validate, and the exit-2-nothing-written error paths."""
from pathlib import Path

import pytest

from acr import __version__
from helpers import ROOT, cuda_available, run_python

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


@pytest.mark.slow
def test_offline_hub_model_names_missing_files(acr, in_tmp):
    result = acr("generate", "--model", "musicgen-small", "--prompt", "x", "--device", "cpu")
    assert result.exit_code == 2, result.stderr
    message = result.stderr.replace("\n", "")
    assert "model 'musicgen-small' (facebook/musicgen-small): cannot download it" in message
    for missing in ("facebook/musicgen-small/state_dict.bin",
                    "facebook/musicgen-small/compression_state_dict.bin", "t5-base"):
        assert missing in message
    assert "hf download facebook/musicgen-small" in message and "HF_HUB_OFFLINE=1" in message
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

"""`acr export`: deterministic, verifiable, safe packages."""
import hashlib
import json
import shutil
import subprocess
import zipfile

import numpy as np
import pytest
import soundfile as sf

from helpers import plain_audiocraft_generates

GRID = """\
name: grid
model: tiny-musicgen
device: cpu
seed: 2
samples_per_prompt: 1
batch_size: 4
defaults: {duration: 1.0}
prompt_sets:
  calm: [soft piano, slow pad]
parameter_sets:
  baseline: {}
  hot: {temperature: 1.5}
findings: [{title: first look, description: "token hf_abcdefghijklmnopqrstuvwxyz123456 leaked"}]
analyze: true
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An analysed experiment run and a one-epoch fine-tune run, made with the real CLI."""
    from typer.testing import CliRunner

    from acr.cli import app
    from acr.commands.finetune.data import make_demo_data

    root = tmp_path_factory.mktemp("export")
    (root / "grid.yaml").write_text(GRID)
    cli = CliRunner()
    result = cli.invoke(app, ["experiment", str(root / "grid.yaml"), "--out",
                              str(root / "grid/run1")])
    assert result.exit_code == 0, result.stderr
    make_demo_data(root / "demo", files_per_class=2, seconds=3.0)
    (root / "ft.yaml").write_text(f"name: ft\nmodel: tiny-musicgen\ndata: {root / 'demo'}\n"
                                  "strategy: lora\nepochs: 1\nsegment_duration: 2.0\n"
                                  "sample_every: 0\ndevice: cpu\n")
    result = cli.invoke(app, ["finetune", str(root / "ft.yaml"), "--out", str(root / "ft/run2")])
    assert result.exit_code == 0, result.stderr
    return root


def names(path):
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_experiment_package_is_complete_deterministic_and_verifies(acr, runs, tmp_path):
    run = runs / "grid/run1"
    assert acr("export", run, "-o", tmp_path / "a.zip").exit_code == 0
    assert acr("export", run, "-o", tmp_path / "b.zip").exit_code == 0
    assert sha(tmp_path / "a.zip") == sha(tmp_path / "b.zip")
    listing = names(tmp_path / "a.zip")
    assert listing == sorted(listing)
    for expected in ("README.md", "MANIFEST.json", "grid/run1/config.yaml", "grid/run1/meta.json",
                     "grid/run1/experiment.json", "grid/run1/events.jsonl",
                     "grid/run1/findings.json", "grid/run1/analysis/metrics.csv",
                     "grid/run1/analysis/summary.json", "grid/run1/analysis/report.md",
                     "grid/run1/analysis/plots/spectrograms.png",
                     "grid/run1/samples/tiny-musicgen/hot/calm/1-0.wav",
                     "grid/run1/samples/tiny-musicgen/hot/calm/1-0.json"):
        assert expected in listing, expected
    assert not [n for n in listing if "/cache/" in n or n.endswith((".lock", ".tmp"))]
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        assert archive.testzip() is None
        assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in archive.infolist())
        manifest = json.loads(archive.read("MANIFEST.json"))
        assert set(manifest["files"]) == set(listing) - {"MANIFEST.json"}
        readme = archive.read("README.md").decode()
    assert "acr experiment grid/run1/config.yaml" in readme and "### Key metrics" in readme
    assert "**first look**" in readme
    if shutil.which("unzip"):
        assert subprocess.run(["unzip", "-t", str(tmp_path / "a.zip")],
                              capture_output=True).returncode == 0
    result = acr("export", "--verify", tmp_path / "a.zip")
    assert result.exit_code == 0 and "ok" in result.stdout


def test_one_changed_byte_in_a_sample_fails_verify_naming_it(acr, runs, tmp_path):
    package = tmp_path / "p.zip"
    assert acr("export", runs / "grid/run1", "-o", package).exit_code == 0
    target = "grid/run1/samples/tiny-musicgen/baseline/calm/0-0.wav"
    with zipfile.ZipFile(package) as archive:
        info = archive.getinfo(target)
    raw = bytearray(package.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0x01
    package.write_bytes(bytes(raw))
    result = acr("export", "--verify", package)
    assert result.exit_code == 1
    problems = result.stderr.strip().splitlines()
    assert len(problems) == 1 and target in problems[0]


def test_verify_finds_missing_and_extra_entries(acr, runs, tmp_path):
    package = tmp_path / "p.zip"
    assert acr("export", runs / "grid/run1", "-o", package).exit_code == 0
    rebuilt = tmp_path / "q.zip"
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(rebuilt, "w") as target:
        for name in source.namelist():
            if not name.endswith("experiment.json"):
                target.writestr(name, source.read(name))
        target.writestr("extra.txt", "sneaked in")
    result = acr("export", "--verify", rebuilt)
    assert result.exit_code == 1
    assert "extra.txt: in the zip but not in MANIFEST.json" in result.stderr
    assert "grid/run1/experiment.json: listed in MANIFEST.json but missing" in result.stderr
    (tmp_path / "not.zip").write_text("x")
    assert acr("export", "--verify", tmp_path / "not.zip").exit_code == 2


def test_flac_samples_are_lossless_and_none_leaves_audio_out(acr, runs, tmp_path):
    run = runs / "grid/run1"
    assert acr("export", run, "-o", tmp_path / "f.zip", "--audio-format", "flac").exit_code == 0
    with zipfile.ZipFile(tmp_path / "f.zip") as archive:
        data = archive.read("grid/run1/samples/tiny-musicgen/hot/calm/0-0.flac")
    (tmp_path / "x.flac").write_bytes(data)
    flac, _ = sf.read(str(tmp_path / "x.flac"), dtype="int16")
    wav, _ = sf.read(str(run / "samples/tiny-musicgen/hot/calm/0-0.wav"), dtype="int16")
    assert np.array_equal(flac, wav)
    assert not [n for n in names(tmp_path / "f.zip") if n.endswith(".wav")]
    assert acr("export", run, "-o", tmp_path / "n.zip", "--samples", "none").exit_code == 0
    listing = names(tmp_path / "n.zip")
    assert not [n for n in listing if n.endswith((".wav", ".flac"))]
    assert "grid/run1/samples/tiny-musicgen/hot/calm/0-0.json" in listing


def test_no_home_paths_or_tokens_in_the_package(acr, runs, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(runs))  # the runs now live under the home folder
    assert acr("export", runs / "grid/run1", "-o", tmp_path / "s.zip").exit_code == 0
    with zipfile.ZipFile(tmp_path / "s.zip") as archive:
        for name in archive.namelist():
            if name.endswith((".json", ".jsonl", ".yaml", ".md", ".csv")):
                text = archive.read(name).decode()
                assert str(runs) not in text, name
                assert "hf_abcdefghijklmnopqrstuvwxyz123456" not in text, name
        assert "<redacted>" in archive.read("grid/run1/findings.json").decode()


@pytest.mark.slow
def test_several_runs_get_a_comparison_and_a_fine_tune_model_loads(acr, runs, tmp_path):
    result = acr("export", runs / "grid/run1", runs / "ft/run2", "--include-model",
                 "-o", tmp_path / "both.zip")
    assert result.exit_code == 0, result.stderr
    listing = names(tmp_path / "both.zip")
    assert "ft/run2/model/state_dict.bin" in listing and "ft/run2/history.csv" in listing
    assert not [n for n in listing if "checkpoints" in n]
    with zipfile.ZipFile(tmp_path / "both.zip") as archive:
        readme = archive.read("README.md").decode()
        archive.extractall(tmp_path / "elsewhere")
    assert "## Comparison" in readme and "| `grid/run1` | experiment |" in readme
    assert "| `ft/run2` | finetune |" in readme
    assert plain_audiocraft_generates(tmp_path / "elsewhere/ft/run2/model", 0.5) == \
        "(1, 1, 16000) 32000"
    plain = names(tmp_path / "plain.zip") if acr("export", runs / "ft/run2", "-o",
                                                 tmp_path / "plain.zip").exit_code == 0 else []
    assert plain and not [n for n in plain if "/model/" in n]  # only with --include-model


def test_refusals(acr, runs, tmp_path):
    run = tmp_path / "copy/run"
    shutil.copytree(runs / "grid/run1", run)
    (run / "samples/outside.wav").symlink_to(tmp_path / "secret.wav")
    (tmp_path / "secret.wav").write_bytes(b"x")
    result = acr("export", run, "-o", tmp_path / "x.zip")
    assert result.exit_code == 2 and "outside the run folder" in result.stderr
    assert not (tmp_path / "x.zip").exists()
    (run / "samples/outside.wav").unlink()
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "status": "failed", "error": "boom"}))
    result = acr("export", run, "-o", tmp_path / "x.zip")
    assert result.exit_code == 2 and "the run is failed (boom)" in result.stderr
    assert acr("export", run, "-o", tmp_path / "x.zip", "--force").exit_code == 0
    result = acr("export", run, "-o", tmp_path / "x.zip")
    assert result.exit_code == 2 and "exists" in result.stderr
    assert acr("export", tmp_path, "-o", tmp_path / "y.zip").exit_code == 2  # not a run
    assert acr("export").exit_code == 2

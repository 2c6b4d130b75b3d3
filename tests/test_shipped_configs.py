"""Every shipped generation config under configs/ runs end to end, as a user would run it, with
only the model names swapped for the tiny models and durations (and the emotion study's sample
count) made tiny with --set. (The fine-tune configs run in tests/test_finetune.py.)"""
import json

import pytest
import soundfile as sf
import torch
import yaml

from acr.core.audio import read_wav
from helpers import ROOT

TINY_HYBRID = ["--set", "hybrid.music.model=tiny-musicgen", "--set",
               "hybrid.sfx.model=tiny-audiogen"]
TINY_HYBRID_GRID = ["--set", "hybrid.music_model=tiny-musicgen", "--set",
                    "hybrid.sfx_model=tiny-audiogen"]


def test_every_shipped_config_is_run_here():
    covered = {"generate.yaml", "hybrid.yaml", "demo.yaml", "emotion.yaml",
               "hybrid-experiment.yaml", "finetune-tiny.yaml", "finetune-musicgen-small-lora.yaml",
               "images.yaml"}  # images.yaml: tests/test_images.py
    assert {p.name for p in (ROOT / "configs").glob("*.yaml")} == covered


def wav_infos(folder):
    return {str(p.relative_to(folder)): sf.info(str(p)) for p in sorted(folder.rglob("*.wav"))}


@pytest.mark.slow
def test_generate_yaml(acr, in_tmp):
    result = acr("generate", ROOT / "configs/generate.yaml", "--set", "model=tiny-musicgen",
                 "--duration", "0.5", "--out", "R")
    assert result.exit_code == 0, result.stderr
    infos = wav_infos(in_tmp / "R/samples")
    assert sorted(infos) == ["0-sad-melancholic-music-with-a-somber-pian.wav",
                             "1-slow-sad-piano-ballad-with-rain-in-the-b.wav"]
    assert {(i.samplerate, i.frames) for i in infos.values()} == {(32000, 16000)}
    config = yaml.safe_load((in_tmp / "R/config.yaml").read_text())
    assert config["seed"] == 42 and config["name"] == "sad-piano"


@pytest.mark.slow
def test_hybrid_yaml(acr, in_tmp):
    result = acr("generate", ROOT / "configs/hybrid.yaml", *TINY_HYBRID, "--duration", "1",
                 "--set", "hybrid.sfx.duration=0.5", "--out", "R")
    assert result.exit_code == 0, result.stderr
    folder = in_tmp / "R/samples"
    mix, rate = read_wav(folder / "0-mellow-lo-fi-hip-hop-with-soft-piano.wav")
    music, _ = read_wav(folder / "0-mellow-lo-fi-hip-hop-with-soft-piano.music.wav")
    sfx, _ = read_wav(folder / "0-mellow-lo-fi-hip-hop-with-soft-piano.sfx.wav")
    assert rate == 32000 and mix.shape == music.shape == sfx.shape == (1, 32000)
    assert torch.allclose(mix, music + sfx, atol=1e-4)  # pcm16 files
    side = json.loads((folder / "0-mellow-lo-fi-hip-hop-with-soft-piano.json").read_text())
    assert side["hybrid"]["blend"] == 0.7 and side["hybrid"]["length_policy"] == "loop"
    assert side["hybrid"]["stem_seconds"] == {"music": 1.0, "sfx": 0.5}


@pytest.mark.slow
def test_demo_yaml_with_its_analysis(acr, in_tmp):
    result = acr("experiment", ROOT / "configs/demo.yaml", "--set", "defaults.duration=0.5",
                 "--out", "R")
    assert result.exit_code == 0, result.stderr
    run = in_tmp / "R"
    infos = wav_infos(run / "samples")
    assert len(infos) == 100  # 5 emotions x 4 prompts x 5 parameter sets
    assert {(i.samplerate, i.frames) for i in infos.values()} == {(32000, 16000)}
    manifest = json.loads((run / "experiment.json").read_text())
    assert manifest["complete"] and manifest["totals"]["samples"] == 100
    assert len((run / "analysis/metrics.csv").read_text().splitlines()) == 101
    assert json.loads((run / "meta.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_emotion_yaml(acr, in_tmp):
    """The emotion study (the same grid as demo.yaml, whose test runs the analysis too)."""
    result = acr("experiment", ROOT / "configs/emotion.yaml", "--set", "model=tiny-musicgen",
                 "--set", "samples_per_prompt=1", "--set", "defaults.duration=0.5",
                 "--set", "analyze=false", "--out", "R")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((in_tmp / "R/experiment.json").read_text())
    assert manifest["complete"] and manifest["totals"]["samples"] == 100
    assert manifest["name"] == "emotion-variation"
    assert len(wav_infos(in_tmp / "R/samples")) == 100


@pytest.mark.slow
def test_hybrid_experiment_yaml_with_the_default_auto_batch_size(acr, in_tmp):
    """batch_size: auto (the default) on a hybrid grid: sized from both stem models."""
    result = acr("experiment", ROOT / "configs/hybrid-experiment.yaml", *TINY_HYBRID_GRID,
                 "--set", "samples_per_prompt=1", "--set", "defaults.duration=1",
                 "--set", "hybrid.sfx_duration=0.5", "--out", "R")
    assert result.exit_code == 0, result.stderr
    run = in_tmp / "R"
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["batch_size"] == 4  # 4 pairs per blend (CPU: 8)
    mixes = [p for p in (run / "samples").rglob("*.wav") if p.name.count(".") == 1]
    assert len(mixes) == 12  # 4 pairs x 3 blends
    assert {read_wav(p)[0].shape for p in mixes} == {(1, 32000)}
    assert len((run / "analysis/metrics.csv").read_text().splitlines()) == 13

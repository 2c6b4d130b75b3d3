"""Continuation (real, on tiny-musicgen) and melody conditioning (plumbing and errors offline;
the real path with musicgen-melody weights runs where they are cached)."""
import json

import numpy as np
import pytest
import torch

from acr.core import models
from acr.core.audio import load_resampled, read_wav
from synth import progression, write


@pytest.fixture
def prompt_file(in_tmp):
    chords = progression([[60, 64, 67], [65, 69, 72], [67, 71, 74]], 44100)
    return write(in_tmp / "audio/prompt.wav", np.stack([chords, chords]), 44100)  # 3 s stereo


@pytest.mark.slow
def test_continuation_keeps_the_prompt_and_continues(acr, in_tmp, prompt_file):
    result = acr("generate", "--model", "tiny-musicgen", "-p", "more chords", "--continue-from",
                 prompt_file, "--prompt-seconds", "1", "--duration", "2", "--seed", "1",
                 "--out", "R")
    assert result.exit_code == 0, result.stderr
    out, rate = read_wav(in_tmp / "R/samples/0-more-chords.wav")
    assert rate == 32000 and out.shape == (1, 64000)
    # the output opens with the prompt as the model's codec reproduces it
    codec = models.load_model("tiny-musicgen", "cpu").model.compression_model
    prompt = load_resampled(prompt_file, 32000, 1)[:, :32000]
    with torch.no_grad():
        reference = codec.decode(codec.encode(prompt[None])[0])[0]
    assert float((out[:, :24000] - reference[:, :24000]).abs().max()) < 1e-4
    side = json.loads((in_tmp / "R/samples/0-more-chords.json").read_text())
    assert side["continuation"] == {"audio": str(prompt_file.resolve()), "prompt_seconds": 1.0}
    assert "generating: 100/100" in result.stderr.splitlines()


def test_continuation_paths_resolve_against_the_config_folder(acr, in_tmp, prompt_file):
    (in_tmp / "audio/c.yaml").write_text("model: tiny-musicgen\nprompts: [x]\ndevice: cpu\n"
                                         "params: {duration: 2}\n"
                                         "continuation: {audio: prompt.wav, prompt_seconds: 1}\n")
    result = acr("generate", in_tmp / "audio/c.yaml", "--out", "R")
    assert result.exit_code == 0, result.stderr
    side = json.loads((in_tmp / "R/samples/0-x.json").read_text())
    assert side["continuation"]["audio"] == str(prompt_file.resolve())


@pytest.mark.parametrize("args, message", [
    (["--continue-from", "audio/prompt.wav", "--prompt-seconds", "2", "--duration", "2"],
     "continuation.prompt_seconds: 2 must be below params.duration (2 s)"),
    (["--continue-from", "audio/missing.wav", "--duration", "2"],
     "continuation.audio: {tmp}/audio/missing.wav: no such file; check the path (in a config, "
     "relative to the config file's folder)"),
    (["--melody", "audio/prompt.wav"],
     "--melody: melody: model 'tiny-musicgen' has no melody (chroma) conditioning; use one of: "
     "musicgen-melody"),
    (["--melody", "audio/prompt.wav", "--continue-from", "audio/prompt.wav"],
     "continuation and melody do not go together"),
])
def test_conditioning_errors_exit_2_without_a_run(acr, in_tmp, prompt_file, args, message):
    result = acr("generate", "--model", "tiny-musicgen", "-p", "x", *args, "--out", "R")
    assert result.exit_code == 2 and message.format(tmp=in_tmp) in result.stderr, result.stderr
    assert not (in_tmp / "R").exists()


def test_melody_on_a_folder_model_without_chroma_is_refused_after_loading(acr, in_tmp,
                                                                          prompt_file):
    folder = models.ensure_tiny_model("tiny-musicgen")
    result = acr("generate", "--model", folder, "-p", "x", "--melody", prompt_file,
                 "--out", "R")
    assert result.exit_code == 2
    assert f"melody: model '{folder}' has no melody (chroma) conditioning" in result.stderr
    assert not (in_tmp / "R").exists()


@pytest.mark.slow
def test_prompt_seconds_longer_than_the_file_warn_and_use_the_whole_file(acr, in_tmp,
                                                                         prompt_file):
    result = acr("generate", "--model", "tiny-musicgen", "-p", "x", "--continue-from",
                 prompt_file, "--prompt-seconds", "4", "--duration", "4.5", "--out", "R")
    assert result.exit_code == 0, result.stderr
    assert ("warning: continuation.prompt_seconds: 4 s asked for, but the file holds 3 s; the "
            "whole file (3 s) is the prompt\n") in result.stderr.replace("the\nwhole", "the whole")
    side = json.loads((in_tmp / "R/samples/0-x.json").read_text())
    assert side["continuation"]["prompt_seconds"] == 3.0


def melody_file(path, midi, rate=32000, seconds=1.0):
    """A stereo file of one sustained chord (its chroma is what the melody model sees)."""
    chord = progression([midi], rate, seconds=seconds)
    return write(path, np.stack([chord, chord]), rate)


@pytest.mark.slow
def test_melody_conditioning_end_to_end(acr, in_tmp, tiny_melody_model):
    """The melody path of a chroma model, on a tiny MusicGen with AudioCraft's chroma_stem
    conditioner and a tiny random htdemucs that demucs' own loader reads: the melody is split
    into stems, its chroma conditions the LM (the output differs from the same seed without a
    melody), and the result is reproducible (demucs shifts by Python's random, seeded too).
    A random separator keeps little of a melody's pitch, so which melody it was is not tested
    here; that needs real weights."""
    c_major = melody_file(in_tmp / "audio/c.wav", [60, 64, 67])
    runs = {"A": ["--melody", c_major], "B": ["--melody", c_major], "plain": []}
    for out, melody in runs.items():
        result = acr("generate", "--model", tiny_melody_model, "-p", "piano cover", *melody,
                     "--duration", "1", "--seed", "1", "--device", "cpu", "--out", out)
        assert result.exit_code == 0, result.stderr
    out, rate = read_wav(in_tmp / "A/samples/0-piano-cover.wav")
    assert rate == 32000 and out.shape == (1, 32000)
    side = json.loads((in_tmp / "A/samples/0-piano-cover.json").read_text())
    assert side["melody"] == {"audio": str(c_major.resolve()), "seconds": 1.0}
    wav = {name: (in_tmp / name / "samples/0-piano-cover.wav").read_bytes() for name in runs}
    assert wav["A"] == wav["B"] and wav["A"] != wav["plain"]


@pytest.mark.slow
def test_experiment_with_melody_prompts(acr, in_tmp, tiny_melody_model):
    melody_file(in_tmp / "audio/c.wav", [60, 64, 67])
    (in_tmp / "audio/grid.yaml").write_text(
        f"name: hum\nmodel: {tiny_melody_model}\ndevice: cpu\nseed: 2\n"
        "defaults: {duration: 1.0}\nprompt_sets:\n"
        "  a: [plain one, {text: hummed, melody: c.wav}, {text: sung, melody: c.wav}]\n"
        "parameter_sets: {base: {}}\nanalyze: false\n")
    result = acr("experiment", in_tmp / "audio/grid.yaml", "--out", "R")
    assert result.exit_code == 0, result.stderr
    folder = in_tmp / "R/samples/tiny-melody/base/a"
    for index in (1, 2):
        side = json.loads((folder / f"{index}-0.json").read_text())
        assert side["melody"] == {"audio": str((in_tmp / "audio/c.wav").resolve())}
        assert read_wav(folder / f"{index}-0.wav")[0].shape == (1, 32000)
    events = [json.loads(l) for l in (in_tmp / "R/events.jsonl").read_text().splitlines()]
    assert sorted(e["size"] for e in events if e["event"] == "batch.start") == [1, 2]


GRID = """\
name: cont
model: tiny-musicgen
device: cpu
seed: 5
batch_size: 4
defaults: {duration: 2.0}
prompt_sets:
  a:
    - plain one
    - {text: carry on, continuation: {audio: prompt.wav, prompt_seconds: 1.0}}
    - {text: keep going, continuation: {audio: prompt.wav, prompt_seconds: 1.0}}
parameter_sets:
  base: {}
analyze: false
"""


def test_experiment_with_continuation_prompts(acr, in_tmp, prompt_file):
    (in_tmp / "audio/grid.yaml").write_text(GRID)
    result = acr("experiment", in_tmp / "audio/grid.yaml", "--out", "R")
    assert result.exit_code == 0, result.stderr
    folder = in_tmp / "R/samples/tiny-musicgen/base/a"
    codec = models.load_model("tiny-musicgen", "cpu").model.compression_model
    prompt = load_resampled(prompt_file, 32000, 1)[:, :32000]
    with torch.no_grad():
        reference = codec.decode(codec.encode(prompt[None])[0])[0]
    for index in (1, 2):
        out, rate = read_wav(folder / f"{index}-0.wav")
        assert out.shape == (1, 64000)
        assert float((out[:, :24000] - reference[:, :24000]).abs().max()) < 1e-4
        side = json.loads((folder / f"{index}-0.json").read_text())
        assert side["continuation"] == {"audio": str(prompt_file.resolve()),
                                        "prompt_seconds": 1.0}
    plain, _ = read_wav(folder / "0-0.wav")
    assert float((plain[:, :24000] - reference[:, :24000]).abs().max()) > 1e-3
    # conditioned samples are batched apart from plain ones (one generate call each kind)
    events = [json.loads(l) for l in (in_tmp / "R/events.jsonl").read_text().splitlines()]
    assert sorted(e["size"] for e in events if e["event"] == "batch.start") == [1, 2]


def test_experiment_conditioning_errors(acr, in_tmp, prompt_file):
    bad = GRID.replace("audio: prompt.wav", "audio: missing.wav", 1)  # prompt a[1]
    (in_tmp / "audio/bad.yaml").write_text(bad)
    result = acr("experiment", in_tmp / "audio/bad.yaml", "--out", "R")
    assert result.exit_code == 2 and "prompt_sets.a[1].continuation.audio: " in result.stderr
    assert not (in_tmp / "R").exists()
    (in_tmp / "audio/melody.yaml").write_text(GRID.replace(
        "{text: carry on, continuation: {audio: prompt.wav, prompt_seconds: 1.0}}",
        "{text: hum, melody: prompt.wav}"))
    result = acr("validate", in_tmp / "audio/melody.yaml")
    assert result.exit_code == 2
    assert "prompt_sets.a[1].melody: model 'tiny-musicgen' has no melody" in result.stderr

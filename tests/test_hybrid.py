"""Hybrid music + sound effects with tiny-musicgen (32 kHz) and tiny-audiogen (16 kHz)."""
import json
import math

import pytest
import torch

from acr.core.audio import integrated_loudness, read_wav
from acr.core.mixing import limiter_gain, match_length

HYBRID = """\
name: hybrid
device: cpu
seed: 4
sample_format: float32
params: {{duration: 2.0}}
hybrid:
  music: {{model: tiny-musicgen, prompt: upbeat electronic track}}
  sfx: {{model: tiny-audiogen, prompt: rain and thunder, duration: 1.0}}
  blend: 0.75
  length: {length}
  stem_lufs: {lufs}
  ceiling_db: -1.0
"""


def run_hybrid(acr, folder, length="loop", lufs=-30.0):
    (folder / "h.yaml").write_text(HYBRID.format(length=length, lufs=lufs))
    result = acr("generate", folder / "h.yaml", "--out", folder / length)
    assert result.exit_code == 0, result.stderr
    stems = {name: read_wav(folder / length / "samples" /
                            f"0-upbeat-electronic-track{suffix}.wav")
             for name, suffix in (("mix", ""), ("music", ".music"), ("sfx", ".sfx"))}
    side = json.loads((folder / length / "samples/0-upbeat-electronic-track.json").read_text())
    return stems, side


def test_mix_rate_length_sum_and_loudness_difference(acr, in_tmp):
    stems, side = run_hybrid(acr, in_tmp, "loop")
    (mix, rate), (music, _), (sfx, _) = stems["mix"], stems["music"], stems["sfx"]
    assert rate == 32000 and mix.shape == (1, 64000) == music.shape == sfx.shape
    assert torch.allclose(mix, music + sfx, atol=1e-6)  # the stems add up to the mix
    difference = integrated_loudness(music, rate) - integrated_loudness(sfx, rate)
    assert difference == pytest.approx(20 * math.log10(0.75 / 0.25), abs=0.3)
    assert torch.equal(sfx[:, 32000:], sfx[:, :32000])  # the 1 s effects stem, looped
    recipe = side["hybrid"]
    assert recipe["music"]["model"] == "tiny-musicgen" and recipe["sfx"]["seed"] == 5
    assert recipe["stem_seconds"] == {"music": 2.0, "sfx": 1.0}
    assert recipe["length_policy"] == "loop" and recipe["sample_rate"] == 32000


@pytest.mark.slow
def test_limiter_keeps_the_mix_under_the_ceiling(acr, in_tmp):
    stems, side = run_hybrid(acr, in_tmp, "pad", lufs=-6.0)  # loud stems: the limiter works
    mix, _ = stems["mix"]
    assert float(mix.abs().max()) <= 10 ** (-1 / 20) + 1e-6
    assert side["hybrid"]["limiter"]["max_reduction_db"] > 0
    sfx, _ = stems["sfx"]
    assert float(sfx[:, 33000:].abs().max()) == 0.0  # padded with silence after 1 s
    trimmed, _ = run_hybrid(acr, in_tmp, "trim")
    assert trimmed["mix"][0].shape[-1] == 32000


def test_match_length_policies():
    a, b = torch.ones(1, 10), torch.arange(4.0)[None]
    assert [x.shape[-1] for x in match_length(a, b, "trim")] == [4, 4]
    assert match_length(a, b, "pad")[1].tolist() == [[0, 1, 2, 3, 0, 0, 0, 0, 0, 0]]
    assert match_length(a, b, "loop")[1].tolist() == [[0, 1, 2, 3, 0, 1, 2, 3, 0, 1]]


def test_limiter_gain_is_smooth_and_sufficient():
    rate = 16000
    t = torch.arange(rate) / rate
    mix = (0.5 * torch.sin(2 * math.pi * 220 * t))[None].repeat(2, 1)
    mix[:, 8000:8010] = 1.8  # a burst
    gain = limiter_gain(mix, -1.0, rate)
    assert float((mix * gain).abs().max()) <= 10 ** (-1 / 20) + 1e-6
    assert float(gain[:7000].min()) == 1.0 and float(gain[8005]) < 0.6
    assert float(gain.diff().abs().max()) < 0.1  # no hard steps


def test_hybrid_config_errors(acr, in_tmp):
    (in_tmp / "both.yaml").write_text("prompts: [x]\n" + HYBRID.format(length="loop", lufs=-20))
    result = acr("validate", in_tmp / "both.yaml")
    assert result.exit_code == 2 and "hybrid: give either prompts or hybrid" in result.stderr
    (in_tmp / "wrong.yaml").write_text(HYBRID.format(length="loop", lufs=-20).replace(
        "model: tiny-audiogen", "model: tiny-musicgen"))
    result = acr("generate", in_tmp / "wrong.yaml", "--out", "R")
    assert result.exit_code == 2
    assert "hybrid.sfx.model: 'tiny-musicgen' is a musicgen model" in result.stderr
    assert not (in_tmp / "R").exists()


EXPERIMENT = """\
name: hybrid-grid
seed: 3
device: cpu
batch_size: 2
defaults: {duration: 2.0}
hybrid: {music_model: tiny-musicgen, sfx_model: tiny-audiogen, sfx_duration: 1.0,
         length: loop, stem_lufs: -30.0}
prompt_sets:
  night: [{music: lo-fi piano, sfx: rain}, {music: ambient pad, sfx: crickets}]
parameter_sets:
  music_up: {blend: 0.8}
  even: {blend: 0.5}
analyze: true
"""


@pytest.mark.slow
def test_hybrid_experiment_blends_as_parameter_sets(acr, in_tmp):
    (in_tmp / "h.yaml").write_text(EXPERIMENT)
    result = acr("experiment", "h.yaml", "--out", "R")
    assert result.exit_code == 0, result.stderr
    for pset, blend in (("music_up", 0.8), ("even", 0.5)):
        for index in (0, 1):
            base = in_tmp / "R/samples/hybrid" / pset / "night" / f"{index}-0"
            mix, rate = read_wav(base.with_suffix(".wav"))
            music, _ = read_wav(base.with_name(f"{index}-0.music.wav"))
            sfx, _ = read_wav(base.with_name(f"{index}-0.sfx.wav"))
            assert rate == 32000 and mix.shape == (1, 64000)
            assert torch.allclose(mix, music + sfx, atol=1e-4)  # pcm16 stems and mix
            difference = integrated_loudness(music, rate) - integrated_loudness(sfx, rate)
            assert difference == pytest.approx(20 * math.log10(blend / (1 - blend)), abs=0.3)
            side = json.loads(base.with_suffix(".json").read_text())
            assert side["hybrid"]["blend"] == blend and side["hybrid"]["sfx"]["prompt"] in (
                "rain", "crickets")
    manifest = json.loads((in_tmp / "R/experiment.json").read_text())
    assert manifest["totals"]["samples"] == 4
    assert manifest["samples"][0]["prompt"] == "lo-fi piano + rain"
    rows = (in_tmp / "R/analysis/metrics.csv").read_text().splitlines()
    assert len(rows) == 5 and not any(".music.wav" in r or ".sfx.wav" in r for r in rows)


@pytest.mark.parametrize("change, message", [
    (("hybrid: {music_model", "model: tiny-musicgen\nhybrid: {music_model"),
     "hybrid: a hybrid experiment names its models"),
    (("[{music: lo-fi piano, sfx: rain}, ", "[plain prompt, "),
     "prompt_sets.night[0]: a hybrid experiment needs {music: ..., sfx: ...} pairs"),
    (("hybrid: {music_model: tiny-musicgen, sfx_model: tiny-audiogen, sfx_duration: 1.0,\n"
      "         length: loop, stem_lufs: -30.0}\n", "model: tiny-musicgen\n"),
     "music/effects pairs need a `hybrid:` section"),
])
def test_hybrid_experiment_config_errors(acr, in_tmp, change, message):
    (in_tmp / "h.yaml").write_text(EXPERIMENT.replace(*change))
    result = acr("validate", in_tmp / "h.yaml")
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_blend_without_hybrid_is_an_error(acr, in_tmp):
    (in_tmp / "e.yaml").write_text("name: e\nmodel: tiny-musicgen\nprompt_sets: {a: [x]}\n"
                                   "parameter_sets: {mix: {blend: 0.7}}\n")
    result = acr("validate", in_tmp / "e.yaml")
    assert result.exit_code == 2
    assert "parameter_sets.mix.blend: blend needs a `hybrid:` section" in result.stderr

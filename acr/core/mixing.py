"""Hybrid music + sound effects, mixed properly: shared by `acr generate` (one mix) and hybrid
experiments (a grid of mixes).

The naive blend (`music * a + sfx * (1 - a)`) ignores that MusicGen runs at 32 kHz and AudioGen
at 16 kHz, that lengths differ and that levels differ. Here both stems are resampled to one
rate, matched in length (trim, pad or loop), matched in integrated loudness, weighted by
`blend` (so they sit 20 log10(blend / (1 - blend)) dB apart), summed and limited; the limiter's
gain applies to the stems too, so the written stems add up to the mix exactly.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from acr.core.audio import integrated_loudness, normalize_loudness
from acr.core.config.schema import MixSettings
from acr.core.engine import write_sample
from acr.core.errors import UsageError
from acr.core.models import (DEFAULT_MUSIC_MODEL, DEFAULT_SFX_MODEL, SHORT_NAMES, LoadedModel,
                             load_model, resolve_model)

STEMS = ("music", "sfx")
STEM_MODELS = {"music": DEFAULT_MUSIC_MODEL, "sfx": DEFAULT_SFX_MODEL}  # defaults
FAMILIES = {"music": "musicgen", "sfx": "audiogen"}
LOOKAHEAD_SECONDS = 0.005


def match_length(a: torch.Tensor, b: torch.Tensor, policy: str
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two [channels, samples] stems at one length: trim to the shorter, pad the shorter with
    silence, or loop the shorter up to the longer."""
    length = min(a.shape[-1], b.shape[-1]) if policy == "trim" else max(a.shape[-1], b.shape[-1])

    def fit(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] >= length:
            return x[..., :length]
        if policy == "pad":
            return torch.nn.functional.pad(x, (0, length - x.shape[-1]))
        return x.repeat(1, math.ceil(length / x.shape[-1]))[..., :length]  # loop

    return fit(a), fit(b)


def limiter_gain(mix: torch.Tensor, ceiling_db: float, rate: int) -> torch.Tensor:
    """A smooth gain [samples] that keeps every sample of `mix` at or below the ceiling.

    Minimum filter, then a box average over the same radius (5 ms look-ahead and release): each
    average includes the sample's own minimum, so the smoothed gain never exceeds what the sample
    needs, and no peak gets through."""
    ceiling = 10 ** (ceiling_db / 20)
    peak = mix.abs().amax(dim=0)
    needed = torch.clamp(ceiling / peak.clamp_min(1e-12), max=1.0)
    radius = max(1, int(LOOKAHEAD_SECONDS * rate))
    padded = torch.nn.functional.pad(needed[None, None], (radius, radius), value=1.0)
    minimum = -torch.nn.functional.max_pool1d(-padded, 2 * radius + 1, stride=1)
    minimum = torch.nn.functional.pad(minimum, (radius, radius), value=1.0)
    smooth = torch.nn.functional.avg_pool1d(minimum, 2 * radius + 1, stride=1)[0, 0]
    return torch.minimum(smooth, needed)  # exactness against float rounding


def mix_stems(music: torch.Tensor, music_rate: int, sfx: torch.Tensor, sfx_rate: int,
              recipe: MixSettings) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, dict]:
    """(mix, music stem, sfx stem, rate, record) from the two generated clips."""
    import torchaudio.functional as F

    rate = recipe.sample_rate or max(music_rate, sfx_rate)
    music = F.resample(music, music_rate, rate) if music_rate != rate else music
    sfx = F.resample(sfx, sfx_rate, rate) if sfx_rate != rate else sfx
    channels = max(music.shape[0], sfx.shape[0])
    music, sfx = (x.expand(channels, -1) if x.shape[0] == 1 else x for x in (music, sfx))
    lengths = {"music": music.shape[-1] / rate, "sfx": sfx.shape[-1] / rate}
    music, sfx = match_length(music, sfx, recipe.length)
    music, music_norm = normalize_loudness(music, rate, recipe.stem_lufs)
    sfx, sfx_norm = normalize_loudness(sfx, rate, recipe.stem_lufs)
    music, sfx = music * (2 * recipe.blend), sfx * (2 * (1 - recipe.blend))
    gain = limiter_gain(music + sfx, recipe.ceiling_db, rate)
    music, sfx = music * gain, sfx * gain
    mix = music + sfx
    record = {"sample_rate": rate, "length_policy": recipe.length, "stem_seconds": lengths,
              "mix_seconds": mix.shape[-1] / rate, "blend": recipe.blend,
              "stem_lufs_target": recipe.stem_lufs,
              "stem_gain_db": {"music": music_norm["gain_db"], "sfx": sfx_norm["gain_db"]},
              "blend_gain_db": {"music": 20 * math.log10(2 * recipe.blend),
                                "sfx": 20 * math.log10(2 * (1 - recipe.blend))},
              "limiter": {"ceiling_db": recipe.ceiling_db,
                          "max_reduction_db": round(-20 * math.log10(float(gain.min())), 3),
                          "share_limited": round(float((gain < 1 - 1e-6).float().mean()), 4)},
              "mix_lufs": integrated_loudness(mix, rate)}
    return mix, music, sfx, rate, record


def load_stem_model(stem: str, name: str, device: str, where: str) -> LoadedModel:
    """The model of a stem, checked to be of the right family (UsageError naming it): from its
    name where that tells (before anything loads), else once loaded."""
    def check(family: str) -> None:
        if family and family != FAMILIES[stem]:
            raise UsageError(f"{where}: {name!r} is a {family} model; the {stem} stem needs "
                             f"a {FAMILIES[stem]} model")

    spec = resolve_model(name)
    if spec.kind in ("tiny", "random") or name in SHORT_NAMES:  # family known from the name
        check(spec.family)
    loaded = load_model(name, device)
    check(loaded.family)
    return loaded


def write_mix(folder: Path, sample_id: str, mix: torch.Tensor, music: torch.Tensor,
              sfx: torch.Tensor, rate: int, sidecar: dict, sample_format: str) -> dict:
    """The mix (with the recipe in its sidecar) and both stems as they sit in it."""
    for stem, audio in (("music", music), ("sfx", sfx)):
        write_sample(folder / f"{sample_id}.{stem}.wav", audio, rate,
                     {"id": f"{sample_id}.{stem}", "stem_of": sample_id}, sample_format)
    return write_sample(folder / f"{sample_id}.wav", mix, rate, sidecar, sample_format)

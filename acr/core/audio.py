"""Audio files and levels: read/write (soundfile), resampling, loudness normalisation (BS.1770,
acr.core.loudness), and `read_clip` for analysis (a reason instead of an exception).

audiocraft's own `audio_write` pipes every format through an ffmpeg binary and peak-normalises by
default; acr writes exactly what the model produced unless normalisation is asked for, and then
returns what it did so the caller records it.
"""
from __future__ import annotations

from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from acr.core.atomic import replacing

if TYPE_CHECKING:  # torch is imported where a function needs it: analysis reads without it
    import torch

SUBTYPES = {"pcm16": "PCM_16", "float32": "FLOAT"}


def count_clipped(wav: torch.Tensor) -> int:
    """Samples beyond full scale: what a pcm16 WAV clips."""
    return int((wav.abs() > 1.0).sum())


def write_wav(path: Path, wav: torch.Tensor, sample_rate: int, sample_format: str = "pcm16") -> None:
    """Write [channels, samples] audio atomically (pcm16 clips at full scale)."""
    import torch

    data = wav.detach().to("cpu", torch.float32).numpy().T  # soundfile wants [samples, channels]
    if sample_format == "pcm16":
        data = np.clip(data, -1.0, 1.0)
    with replacing(path) as tmp:
        sf.write(str(tmp), data, sample_rate, subtype=SUBTYPES[sample_format], format="WAV")


def read_wav(path: Path) -> tuple[torch.Tensor, int]:
    """Read any soundfile-readable file as float32 [channels, samples] and its sample rate."""
    import torch

    data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), int(sample_rate)


class Unreadable(Exception):
    """A clip that could not be read; its message is the reason shown in a report."""


def read_clip(path: Path) -> tuple[np.ndarray, int]:
    """[channels, samples] float32 and the sample rate; Unreadable with the reason otherwise."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, ...
        reason = str(exc).split("\n")[0] or type(exc).__name__
        raise Unreadable(f"unreadable: {reason}") from exc
    if data.shape[0] == 0:
        raise Unreadable("empty: no samples")
    return np.ascontiguousarray(data.T), int(rate)


def finite_audio(audio: np.ndarray) -> tuple[np.ndarray, bool]:
    """(audio with NaN and inf read as 0, whether it was all finite): how analysis reads a clip
    that it flags `nan` rather than refuses."""
    if np.isfinite(audio).all():
        return audio, True
    return np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0), False


def load_resampled(path: Path, sample_rate: int, channels: int) -> torch.Tensor:
    """A file as float32 [channels, samples] at `sample_rate` with `channels` (mixed down, or
    a mono file duplicated)."""
    import torchaudio.functional as F

    wav, rate = read_wav(path)
    if rate != sample_rate:
        wav = F.resample(wav, rate, sample_rate)
    if wav.shape[0] != channels:
        wav = wav.mean(dim=0, keepdim=True) if channels == 1 else \
            wav[:1].expand(channels, -1).clone() if wav.shape[0] == 1 else wav[:channels]
    return wav


def integrated_loudness(wav: torch.Tensor, sample_rate: int) -> float | None:
    """ITU BS.1770-4 integrated loudness in LUFS; None for clips too short (< 0.4 s) or silent.

    Not torchaudio.functional.loudness: its K-weighting filters clamp at full scale (lfilter's
    default clamp=True), so loud audio reads too quiet (+20 dB of gain can read lower than +6)."""
    import torch

    from acr.core.loudness import integrated_loudness as measure

    if wav.shape[-1] < int(0.4 * sample_rate):
        return None
    value = measure(wav.detach().to("cpu", torch.float64).numpy(), sample_rate)
    return value if np.isfinite(value) else None


def normalize_loudness(wav: torch.Tensor, sample_rate: int, target_lufs: float
                       ) -> tuple[torch.Tensor, dict]:
    """Scale a [channels, samples] clip to `target_lufs`; return it and a record of what was done.

    BS.1770 gates out blocks below -70 LUFS, so after a gain quiet blocks can start to count and
    the loudness moves by more or less than the gain: re-measure and correct (a few steps)."""
    measured = integrated_loudness(wav, sample_rate)
    if measured is None:
        return wav, {"target_lufs": target_lufs, "measured_lufs": None, "gain_db": 0.0,
                     "applied": False, "reason": "clip too short or silent to measure"}
    gain_db, now = 0.0, measured
    for _ in range(10):
        if abs(target_lufs - now) < 0.01:
            break
        gain_db += target_lufs - now
        now = integrated_loudness(wav * 10.0 ** (gain_db / 20.0), sample_rate)
    return wav * (10.0 ** (gain_db / 20.0)), {"target_lufs": target_lufs,
                                              "measured_lufs": round(measured, 3),
                                              "gain_db": round(gain_db, 3), "applied": True}

"""Per-clip metrics, computed from one STFT per clip (numpy / scipy; no torch, no librosa).

Spectral metrics follow librosa's definitions (magnitude spectrum for centroid / bandwidth /
rolloff, power spectrum for flatness; n_fft 2048, hop 512, centred frames with zero padding), so
they equal librosa's values on the same audio (to float32 precision: a pure tone's bandwidth reads
a few Hz above librosa's float64 value); the onset envelope, onset peak picking, tempo, chroma
and MFCC are librosa's algorithms (dsp.py, tested against librosa) on that same spectrogram.
Loudness, LRA and true peak come from `acr.core.loudness`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from acr.commands.analyze import dsp
from acr.core import loudness
from acr.core.audio import finite_audio

METRIC_VERSION = 4  # bump when any value below changes: cached results are recomputed
N_FFT, HOP = dsp.N_FFT, dsp.HOP
N_MELS, N_MFCC = 128, 20
SILENCE_DBFS = -60.0
ROLLOFF_FRACTION = 0.85  # librosa.feature.spectral_rolloff's roll_percent
CLIP_LEVEL = 0.999
SEGMENT_SECONDS = 0.5  # self-similarity resolution
REPETITION_MIN_LAG = 2.0  # seconds between a segment and the ones it may repeat

CORE_METRICS = ["loudness_lufs", "true_peak_dbtp", "plr_db", "lra_lu", "crest_factor_db",
                "clipping_ratio", "silence_ratio", "spectral_centroid_hz",
                "spectral_bandwidth_hz", "spectral_rolloff_hz", "spectral_flatness",
                "onset_rate_hz", "tempo_bpm", "key_strength", "repetition", "coherence"]
TEXT_METRICS = ["key"]
KEY_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
# Krumhansl-Kessler key profiles (major, minor), tonic first
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass
class ClipFeatures:
    metrics: dict  # CORE_METRICS + TEXT_METRICS -> value (NaN / None where undefined)
    embedding: list[float]  # MFCC and chroma statistics, for set-level distances
    flags: list[str] = field(default_factory=list)  # silent, nan, clipped
    thumbnail: np.ndarray | None = None  # a spectrogram grid cell, when asked (never cached)


SAMPLE_FILTER_CLIPS = 200  # from this many clips for one process, scipy.signal pays


def prepare(clips: int) -> None:
    """Import what computing `clips` clips' features in a process needs beyond numpy:
    scipy.fft, and for many clips scipy.signal (half a second to import, then 2-3 ms less a
    clip: see loudness.k_filtered). Done before the feature workers are forked, which inherit
    the modules (workers.in_batches)."""
    import scipy.fft  # noqa: F401

    if clips >= SAMPLE_FILTER_CLIPS:
        import scipy.signal  # noqa: F401


def _standardize(rows: np.ndarray) -> np.ndarray:
    centred = rows - rows.mean(axis=-1, keepdims=True)
    return centred / np.linalg.norm(centred, axis=-1, keepdims=True)


# the 24 rotated profiles, standardised, so Pearson correlations are one matrix product
_KEY_PROFILES = _standardize(np.array([np.roll(profile, tonic) for profile in
                                       (MAJOR_PROFILE, MINOR_PROFILE) for tonic in range(12)]))
_KEY_LABELS = [f"{KEY_NAMES[t]} {mode}" for mode in ("major", "minor") for t in range(12)]


def estimate_key(chroma_mean: np.ndarray) -> tuple[str | None, float]:
    """Krumhansl-Schmuckler: the key whose profile correlates best with the mean chroma."""
    if not np.isfinite(chroma_mean).all() or np.ptp(chroma_mean) == 0:
        return None, float("nan")
    correlations = _KEY_PROFILES @ _standardize(np.asarray(chroma_mean, dtype=np.float64))
    best = int(np.argmax(correlations))
    return _KEY_LABELS[best], float(correlations[best])


def _self_similarity(features: np.ndarray, frames_per_segment: int, rate_segments: float
                     ) -> tuple[float, float]:
    """(repetition, coherence) from the cosine self-similarity of 0.5 s feature segments.

    repetition: mean over segments of the best similarity to a segment at least 2 s away;
    coherence: mean similarity of consecutive segments."""
    n = features.shape[1] // frames_per_segment
    if n < 2:
        return float("nan"), float("nan")
    segments = features[:, : n * frames_per_segment].reshape(features.shape[0], n, -1).mean(-1)
    segments = segments - segments.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(segments, axis=0)
    norms[norms == 0] = 1.0
    unit = segments / norms
    similarity = unit.T @ unit
    coherence = float(np.mean(np.diag(similarity, 1)))
    lag = int(np.ceil(REPETITION_MIN_LAG * rate_segments))
    if n <= lag:
        return float("nan"), coherence
    far = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) >= lag
    best = np.where(far, similarity, -np.inf).max(axis=1)
    return float(np.mean(best[np.isfinite(best)])), coherence


def _reaching(magnitude: np.ndarray, fraction: float, block: int = 32
              ) -> tuple[np.ndarray, np.ndarray]:
    """(each frame's sum, the first bin where its running sum reaches `fraction` of it) for
    [frames, bins]: librosa's rolloff bin, from sums over blocks of bins and a running sum
    inside the one block where the threshold falls (the full running sum costs 3x more)."""
    frames, bins = magnitude.shape
    whole = bins // block * block
    block_sums = magnitude[:, :whole].reshape(frames, -1, block) @ np.ones(block, magnitude.dtype)
    ends = np.cumsum(block_sums, axis=1)  # the running sum at the end of each block
    totals = ends[:, -1] + magnitude[:, whole:].sum(axis=1)
    threshold = fraction * totals
    inside = (ends < threshold[:, None]).sum(axis=1)  # the block where the sum reaches it
    found = inside < ends.shape[1]
    target = np.minimum(inside, ends.shape[1] - 1)
    before = np.where(target > 0, ends[np.arange(frames), target - 1], 0)
    columns = target[:, None] * block + np.arange(block)
    running = before[:, None] + np.cumsum(np.take_along_axis(magnitude, columns, axis=1), axis=1)
    in_block = (running < threshold[:, None]).sum(axis=1)
    tail = (np.cumsum(magnitude[:, whole:], axis=1) + ends[:, -1:] < threshold[:, None]).sum(1)
    first = np.where(found, target * block + in_block, whole + tail)
    return totals, first


class Extractor:
    """Per-rate filterbanks, built once and reused for every clip."""

    def __init__(self) -> None:
        self._banks: dict[int, tuple] = {}
        self._window = dsp.hann(N_FFT).astype(np.float32)

    def banks(self, rate: int) -> tuple[np.ndarray, list, np.ndarray]:
        """(bin frequencies, mel filterbank as bands, chroma filterbank) at `rate`."""
        if rate not in self._banks:
            self._banks[rate] = (dsp.fft_frequencies(rate).astype(np.float32),
                                 dsp.filter_bands(dsp.mel_filters(rate, N_MELS)),
                                 dsp.chroma_filters(rate))
        return self._banks[rate]

    @staticmethod
    def _moments(freqs: np.ndarray) -> np.ndarray:
        return np.stack([freqs, freqs * freqs], axis=1)

    def batch(self, clips: list[np.ndarray], rate: int) -> list[ClipFeatures]:
        """Features of clips ([channels, samples] float arrays) at `rate`, one after another."""
        return [self.clip(audio, rate) for audio in clips]

    def clip(self, audio: np.ndarray, rate: int, thumbnail: bool = False) -> ClipFeatures:
        """Every metric of one [channels, samples] clip, from one STFT of its mono mix (and,
        with `thumbnail`, its spectrogram grid cell from that STFT)."""
        audio, all_finite = finite_audio(np.asarray(audio, dtype=np.float32))
        freqs, mel_bands, chroma_bank = self.banks(rate)
        power = dsp.power_spectrogram(audio.mean(axis=0), self._window)  # [frames, bins]
        magnitude = np.sqrt(power)

        # spectral shape, as librosa.feature.spectral_* (per frame, then the mean over frames)
        # (moments of the frequency under each frame's normalised magnitude, as matrix products)
        totals, first_above = _reaching(magnitude, ROLLOFF_FRACTION)
        sounding = totals > 0
        safe = np.where(sounding, totals, 1.0)
        moments = magnitude @ self._moments(freqs)  # [frames, 2]: sum of f |X|, of f^2 |X|
        centroid = moments[:, 0] / safe * sounding
        second = moments[:, 1] / safe * sounding
        bandwidth = np.sqrt(np.maximum(second - centroid * centroid, 0))
        rolloff = np.where(sounding, freqs[np.minimum(first_above, len(freqs) - 1)], np.nan)
        floored = np.maximum(power, 1e-10)
        flatness = np.exp(np.log(floored).mean(axis=1)) / floored.mean(axis=1)
        # hann-windowed frame levels from the same STFT (Parseval) for the silence ratio
        energy = (power[:, 0] + 2 * power[:, 1:-1].sum(axis=1) + power[:, -1]) / N_FFT
        frame_rms = np.sqrt(energy / np.square(self._window).sum())
        mel_power = dsp.apply_bands(power, mel_bands)  # [mels, frames]
        chroma_power = (power @ chroma_bank.T).T  # [12, frames]
        features = self.finish(audio, rate, mel_power, chroma_power, {
            "spectral_centroid_hz": float(centroid.mean()),
            "spectral_bandwidth_hz": float(bandwidth.mean()),
            "spectral_rolloff_hz": float(np.nanmean(rolloff)) if sounding.any() else np.nan,
            "spectral_flatness": float(flatness.mean()),
            "silence_ratio": float((frame_rms < 10 ** (SILENCE_DBFS / 20)).mean()),
            "true_peak_dbtp": float(loudness.true_peaks(audio).max()),
        })
        if not all_finite:
            features.flags.insert(0, "nan")
        if thumbnail:
            features.thumbnail = dsp.mel_thumbnail(power[:: dsp.N_FFT // HOP], rate)
        return features

    def finish(self, audio: np.ndarray, rate: int, mel_power: np.ndarray,
               chroma_power: np.ndarray, spectral: dict) -> ClipFeatures:
        """The per-clip rest: loudness, rhythm, key, structure, embedding."""
        flags: list[str] = []
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
        if peak == 0.0:
            flags.append("silent")
        cumulative = loudness.cumulative_power(audio, rate)
        lufs = loudness.integrated_loudness(audio, rate, cumulative)
        lra = loudness.loudness_range(audio, rate, cumulative)

        # rhythm: librosa's onset envelope, peak picking and tempo on our mel spectrogram
        mel_db = dsp.power_to_db(mel_power.astype(np.float64))
        envelope = dsp.onset_strength(mel_db)
        duration = audio.shape[-1] / rate
        if peak > 0 and np.ptp(envelope) > 0:
            onsets, tempo = dsp.onset_count(envelope, rate), dsp.tempo(envelope, rate)
        else:
            onsets, tempo = 0, float("nan")

        # tonality: chroma_stft's normalisation (per frame, max = 1), Krumhansl-Schmuckler key
        chroma = chroma_power / np.maximum(chroma_power.max(axis=0, keepdims=True), 1e-10)
        key, key_strength = estimate_key(chroma.mean(axis=1)) if peak > 0 else (None, np.nan)
        mfcc = dsp.mfcc(mel_db, N_MFCC)
        # structure: self-similarity of chroma + timbre, 0.5 s segments
        frames_per_segment = max(1, int(round(SEGMENT_SECONDS * rate / HOP)))
        timbre = mfcc[1:13]
        timbre = (timbre - timbre.mean(axis=1, keepdims=True)) / (
            timbre.std(axis=1, keepdims=True) + 1e-9)
        repetition, coherence = _self_similarity(np.vstack([chroma, timbre]),
                                                 frames_per_segment, 1 / SEGMENT_SECONDS)
        clipping = float(np.mean(np.abs(audio) >= CLIP_LEVEL)) if audio.size else float("nan")
        if clipping > 0:
            flags.append("clipped")
        tp = spectral.pop("true_peak_dbtp")

        def finite(value: float) -> float:
            return float(value) if np.isfinite(value) else float("nan")

        metrics = {
            "loudness_lufs": finite(lufs), "true_peak_dbtp": finite(tp),
            "plr_db": finite(tp - lufs), "lra_lu": finite(lra),
            "crest_factor_db": finite(20 * np.log10(peak / rms)) if rms > 0 else float("nan"),
            "clipping_ratio": clipping,
            **{k: finite(v) for k, v in spectral.items()},
            "onset_rate_hz": onsets / duration if duration > 0 else float("nan"),
            "tempo_bpm": tempo, "key": key, "key_strength": finite(key_strength),
            "repetition": repetition, "coherence": coherence,
        }
        embedding = np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1), chroma.mean(axis=1),
                                    chroma.std(axis=1)])
        return ClipFeatures({k: metrics[k] for k in CORE_METRICS + TEXT_METRICS},
                            [float(v) for v in np.nan_to_num(embedding)], flags)

"""librosa's analysis functions (version 0.11, their default arguments) rebuilt on numpy and
scipy, computed from one short-time Fourier transform per clip.

`acr analyze` used to call librosa for the onset envelope, onset peak picking, tempo, MFCC and
the mel and chroma filterbanks: importing librosa (and numba) costs a second or more per process,
and its functions recompute what the clip's one STFT already holds. Every function here names
the librosa function it reproduces; tests/test_analysis_dsp.py holds each against librosa's own
on a few signals.
"""
from __future__ import annotations

import functools

import numpy as np

N_FFT, HOP = 2048, 512
THUMBNAIL_MELS = 64  # mel bands of a spectrogram grid cell
TEMPO_WINDOW_SECONDS = 8.0  # librosa.feature.tempo's ac_size
START_BPM, STD_BPM, MAX_TEMPO = 120.0, 1.0, 320.0  # its log-normal tempo prior and ceiling


def power_spectrogram(mono: np.ndarray, window: np.ndarray, hop: int = HOP) -> np.ndarray:
    """|librosa.stft(mono, n_fft=2048, hop_length=hop)|**2 as [frames, bins] (centred frames,
    zero padding, a periodic Hann window; float32 in, float32 out)."""
    import scipy.fft  # (here and below: imported where used, as scipy's imports take time)

    padded = np.pad(mono, N_FFT // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::hop]
    spectrum = scipy.fft.rfft(frames * window, axis=-1, workers=1)
    return spectrum.real ** 2 + spectrum.imag ** 2


def hann(length: int) -> np.ndarray:
    """scipy.signal.get_window('hann', length, fftbins=True), librosa's window, computed as
    scipy does (a symmetric window one longer, its last value dropped) without importing
    scipy.signal (and with it scipy.stats)."""
    phase = np.linspace(-np.pi, np.pi, length + 1)
    return (np.zeros(length + 1) + 0.5 * np.cos(0 * phase) + 0.5 * np.cos(phase))[:-1]


def _hz_to_mel(frequencies: np.ndarray) -> np.ndarray:
    """librosa.hz_to_mel (Slaney's scale: linear below 1 kHz, logarithmic above)."""
    frequencies = np.atleast_1d(np.asarray(frequencies, dtype=np.float64))
    mels = frequencies / (200.0 / 3)
    log_region = frequencies >= 1000.0
    mels[log_region] = 15.0 + np.log(frequencies[log_region] / 1000.0) / (np.log(6.4) / 27.0)
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """librosa.mel_to_hz (Slaney's scale)."""
    mels = np.atleast_1d(np.asarray(mels, dtype=np.float64))
    frequencies = mels * (200.0 / 3)
    log_region = mels >= 15.0
    frequencies[log_region] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels[log_region] - 15.0))
    return frequencies


def fft_frequencies(rate: int) -> np.ndarray:
    """librosa.fft_frequencies(sr=rate, n_fft=2048)."""
    return np.fft.rfftfreq(N_FFT, 1.0 / rate)


def mel_filters(rate: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel(sr=rate, n_fft=2048, n_mels=n_mels): Slaney-normalised triangles
    from 0 Hz to rate / 2, [n_mels, bins] float32."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0)[0], _hz_to_mel(rate / 2)[0], n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_frequencies(rate)[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def filter_bands(bank: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """A filterbank [filters, bins] as each filter's (first bin, end bin, weights there): mel
    triangles cover a few bins each, so applying them band by band (apply_bands) costs a
    fraction of the full matrix product."""
    bands = []
    for row in bank:
        nonzero = np.flatnonzero(row)
        low, high = (int(nonzero[0]), int(nonzero[-1]) + 1) if len(nonzero) else (0, 0)
        bands.append((low, high, np.ascontiguousarray(row[low:high])))
    return bands


def apply_bands(power: np.ndarray, bands: list[tuple[int, int, np.ndarray]]) -> np.ndarray:
    """power [frames, bins] @ bank.T for the bank that filter_bands split: [filters, frames]."""
    out = np.zeros((len(bands), power.shape[0]), dtype=power.dtype)
    for index, (low, high, weights) in enumerate(bands):
        if high > low:
            out[index] = power[:, low:high] @ weights
    return out


def chroma_filters(rate: int) -> np.ndarray:
    """librosa.filters.chroma(sr=rate, n_fft=2048, tuning=0.0): Gaussian bumps per pitch
    class, weighted around octave 5 (2 octaves wide), C first, [12, bins] float32."""
    n_chroma = 12
    frequencies = np.linspace(0, rate, N_FFT, endpoint=False)[1:]
    bins = n_chroma * np.log2(frequencies / (440.0 / 16))
    bins = np.concatenate(([bins[0] - 1.5 * n_chroma], bins))
    widths = np.concatenate((np.maximum(bins[1:] - bins[:-1], 1.0), [1]))
    distance = np.subtract.outer(bins, np.arange(0, n_chroma, dtype="d")).T
    half = np.round(float(n_chroma) / 2)
    distance = np.remainder(distance + half + 10 * n_chroma, n_chroma) - half
    weights = np.exp(-0.5 * (2 * distance / np.tile(widths, (n_chroma, 1))) ** 2)
    norms = np.sqrt(np.sum(weights ** 2, axis=0, keepdims=True))
    weights = weights / np.where(norms < np.finfo(weights.dtype).tiny, 1.0, norms)
    weights *= np.tile(np.exp(-0.5 * ((bins / n_chroma - 5.0) / 2) ** 2), (n_chroma, 1))
    weights = np.roll(weights, -3, axis=0)
    return np.ascontiguousarray(weights[:, : 1 + N_FFT // 2], dtype=np.float32)


@functools.lru_cache(maxsize=4)
def _thumbnail_bank(rate: int) -> np.ndarray:
    return mel_filters(rate, THUMBNAIL_MELS)


def mel_thumbnail(power: np.ndarray, rate: int) -> np.ndarray:
    """A spectrogram grid cell: the mel spectrogram (THUMBNAIL_MELS bands) of [frames, bins]
    power, in dB below its loudest cell, [mels, frames] (frames every 2048 samples: every
    fourth frame of the analysis STFT)."""
    mel = power @ _thumbnail_bank(rate).T
    db = 10 * np.log10(np.maximum(mel.T, 1e-10))
    return db - db.max()


def power_to_db(power: np.ndarray) -> np.ndarray:
    """librosa.power_to_db(power): 10 log10 (floored at 1e-10), at most 80 dB below the top."""
    db = 10.0 * np.log10(np.maximum(1e-10, power))
    return np.maximum(db, db.max() - 80.0)


def onset_strength(mel_db: np.ndarray) -> np.ndarray:
    """librosa.onset.onset_strength(S=mel_db) ([mels, frames] in dB): the mean over bands of
    the positive frame-to-frame increase, delayed by the framing (3 frames), one value a frame."""
    flux = np.maximum(0.0, mel_db[:, 1:] - mel_db[:, :-1]).mean(axis=0)
    delay = 1 + N_FFT // (2 * HOP)
    return np.pad(flux, (delay, 0))[: mel_db.shape[1]]


def onset_count(envelope: np.ndarray, rate: int) -> int:
    """len(librosa.onset.onset_detect(onset_envelope=envelope, sr=rate)): peaks of the
    normalised envelope that are the maximum of their 30 ms neighbourhood, at least 0.07 above
    the mean of the surrounding 100 ms, and 30 ms after the previous onset."""
    x = envelope - envelope.min()
    x = x / (x.max() + np.finfo(x.dtype).tiny)
    if not x.any() or not np.isfinite(x).all():
        return 0
    pre_max, post_max = int(np.ceil(0.03 * rate // HOP)), int(np.ceil(0.00 * rate // HOP + 1))
    pre_avg, post_avg = int(np.ceil(0.10 * rate // HOP)), int(np.ceil(0.10 * rate // HOP + 1))
    wait = int(np.ceil(0.03 * rate // HOP))
    n = len(x)
    # window [i - pre, i + post) clipped to the signal, for every frame i
    padded = np.pad(x, (pre_max, post_max), constant_values=-np.inf)
    local_max = np.lib.stride_tricks.sliding_window_view(padded, pre_max + post_max)[:n]
    local_max = local_max.max(axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(x)])
    index = np.arange(n)
    low, high = np.maximum(0, index - pre_avg), np.minimum(n, index + post_avg)
    local_mean = (cumulative[high] - cumulative[low]) / (high - low)
    candidates = np.flatnonzero((x >= local_max) & (x >= local_mean + 0.07))
    count, next_allowed = 0, 0
    for frame in candidates:  # a peak silences the next `wait` frames
        if frame >= next_allowed:
            count += 1
            next_allowed = frame + wait + 1
    return count


def tempo(envelope: np.ndarray, rate: int) -> float:
    """librosa.feature.tempo(onset_envelope=envelope, sr=rate)[0]: the autocorrelation
    tempogram (8 s Hann windows, every frame) averaged over time, under a log-normal prior
    around 120 BPM, below 320 BPM.

    librosa normalises each frame's autocorrelation by its largest magnitude, which is its value
    at lag 0 (the frame's energy), then averages over frames. The transform is linear, so that
    mean is one inverse transform of the energy-weighted mean of the frames' power spectra (the
    same numbers to rounding, one inverse FFT instead of one per frame)."""
    import scipy.fft

    length = int(TEMPO_WINDOW_SECONDS * rate) // HOP
    n = len(envelope)
    padded = np.pad(envelope, length // 2, mode="linear_ramp", end_values=[0, 0])
    size = scipy.fft.next_fast_len(2 * length - 1, real=True)
    frames = np.zeros((n, size))  # each windowed frame, zero-padded for the transform
    np.multiply(np.lib.stride_tricks.sliding_window_view(padded, length)[:n], hann(length),
                out=frames[:, :length])
    energy = np.einsum("ij,ij->i", frames[:, :length], frames[:, :length])  # lag 0
    weight = 1.0 / np.where(energy < np.finfo(energy.dtype).tiny, 1.0, energy) / n
    spectrum = scipy.fft.rfft(frames.astype(np.float32), axis=-1, workers=1)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    mean = scipy.fft.irfft(weight @ power.astype(np.float64), n=size)[:length]
    bpms = np.full(length, np.inf)
    bpms[1:] = 60.0 * rate / (HOP * np.arange(1.0, length))
    with np.errstate(divide="ignore", invalid="ignore"):
        prior = -0.5 * ((np.log2(bpms) - np.log2(START_BPM)) / STD_BPM) ** 2
    prior[: int(np.argmax(bpms < MAX_TEMPO))] = -np.inf
    return float(bpms[int(np.argmax(np.log1p(1e6 * mean) + prior))])


def mfcc(mel_db: np.ndarray, n_mfcc: int) -> np.ndarray:
    """librosa.feature.mfcc(S=mel_db, n_mfcc=n_mfcc): the orthonormal DCT-II over bands."""
    import scipy.fft

    return scipy.fft.dct(mel_db, type=2, norm="ortho", axis=0)[:n_mfcc]

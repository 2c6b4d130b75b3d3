"""ITU-R BS.1770-4 loudness, EBU Tech 3342 loudness range and true peak, vectorised.

The K-weighting filters are designed at any rate from the analogue prototype behind the
standard's 48 kHz table (libebur128's design: at 48 kHz it gives the table's coefficients), and
run over all channels at once (sample by sample, or as a product of spectra: see
k_filtered); the gating is done over all blocks at
once. True peak uses the 48-tap, 4-phase interpolator of BS.1770's Annex 2 where a
window could beat the sample peak. Verified against EBU Tech 3341 / 3342 in the tests.
"""
from __future__ import annotations

import functools
import sys

import numpy as np

CHANNEL_GAINS = np.array([1.0, 1.0, 1.0, 1.41, 1.41])  # L, R, C, Ls, Rs
ABSOLUTE_GATE = -70.0
FILTER_TAIL_SECONDS = 0.25  # the K-weighting's impulse response is below 1e-26 after it
PEAK_BLOCK = 16  # windows per row of true_peaks' matrix product (at least 11)
FAST_FFT_MULTIPLE = 4096  # k_filtered_by_spectra's transform lengths are multiples of this
_FILTERS: dict[int, np.ndarray] = {}
# ITU-R BS.1770-4 Annex 2: the 48-tap interpolating filter for 4x oversampling, as the standard
# lists it: four phases of 12 taps, phase p giving y[4n + p] = sum_k ANNEX2_PHASES[p][k] x[n - k]
ANNEX2_PHASES = np.array([
    [0.0017089843750, 0.0109863281250, -0.0196533203125, 0.0332031250000, -0.0594482421875,
     0.1373291015625, 0.9721679687500, -0.1022949218750, 0.0476074218750, -0.0266113281250,
     0.0148925781250, -0.0083007812500],
    [-0.0291748046875, 0.0292968750000, -0.0517578125000, 0.0891113281250, -0.1665039062500,
     0.4650878906250, 0.7797851562500, -0.2003173828125, 0.1015625000000, -0.0582275390625,
     0.0330810546875, -0.0189208984375],
    [-0.0189208984375, 0.0330810546875, -0.0582275390625, 0.1015625000000, -0.2003173828125,
     0.7797851562500, 0.4650878906250, -0.1665039062500, 0.0891113281250, -0.0517578125000,
     0.0292968750000, -0.0291748046875],
    [-0.0083007812500, 0.0148925781250, -0.0266113281250, 0.0476074218750, -0.1022949218750,
     0.9721679687500, 0.1373291015625, -0.0594482421875, 0.0332031250000, -0.0196533203125,
     0.0109863281250, 0.0017089843750],
])


def k_weighting(rate: int) -> np.ndarray:
    """The two K-weighting stages at `rate` as second-order sections [[b0, b1, b2, 1, a1, a2]]:
    the +4 dB high shelf and the RLB high-pass of BS.1770-4 (bilinear transform of their
    analogue prototypes, the parameters that reproduce the standard's 48 kHz coefficients)."""
    if rate not in _FILTERS:
        k = np.tan(np.pi * 1681.974450955533 / rate)  # shelf: f0, gain (dB) and Q
        q, vh = 0.7071752369554196, 10 ** (3.999843853973347 / 20)
        vb = vh ** 0.4996667741545416
        norm = 1 + k / q + k * k
        shelf = [(vh + vb * k / q + k * k) / norm, 2 * (k * k - vh) / norm,
                 (vh - vb * k / q + k * k) / norm, 1.0, 2 * (k * k - 1) / norm,
                 (1 - k / q + k * k) / norm]
        k, q = np.tan(np.pi * 38.13547087602444 / rate), 0.5003270373238773  # high-pass
        norm = 1 + k / q + k * k
        high_pass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / norm, (1 - k / q + k * k) / norm]
        _FILTERS[rate] = np.array([shelf, high_pass])
    return _FILTERS[rate]


@functools.lru_cache(maxsize=8)
def _k_response(rate: int, size: int) -> np.ndarray:
    """The K-weighting's frequency response at the bins of a real FFT of `size` samples."""
    delay = np.exp(-2j * np.pi * np.arange(size // 2 + 1) / size)  # z^-1 on those bins
    response = np.ones(size // 2 + 1, dtype=np.complex128)
    for b0, b1, b2, a0, a1, a2 in k_weighting(rate):
        response *= (b0 + delay * (b1 + delay * b2)) / (a0 + delay * (a1 + delay * a2))
    return response


def k_filtered(audio: np.ndarray, rate: int) -> np.ndarray:
    """Each channel of [channels, samples] through the K-weighting filters, from rest
    (float64): sample by sample with scipy.signal.sosfilt when scipy.signal is already
    imported (2-3x faster a clip), else k_filtered_by_spectra (the same output to 1e-13,
    without the import: half a second on a small machine, as scipy.signal imports
    scipy.stats).
    Audio holding NaN or infinity gives NaN throughout, either way."""
    x = np.asarray(audio, dtype=np.float64)
    if not np.isfinite(x).all():
        return np.full(x.shape, np.nan)
    if "scipy.signal" in sys.modules:
        from scipy.signal import sosfilt

        return sosfilt(k_weighting(rate), x, axis=-1)
    return k_filtered_by_spectra(x, rate)


def k_filtered_by_spectra(audio: np.ndarray, rate: int) -> np.ndarray:
    """k_filtered as a product of spectra over the signal and FILTER_TAIL_SECONDS of zeros:
    the circular convolution equals the filters' causal output to within their impulse
    response after that tail (< 1e-26)."""
    import scipy.fft

    x = np.asarray(audio, dtype=np.float64)
    samples = x.shape[-1]
    size = fast_length(samples + int(FILTER_TAIL_SECONDS * rate) + 1)
    spectrum = scipy.fft.rfft(x, n=size, axis=-1, workers=1) * _k_response(rate, size)
    return scipy.fft.irfft(spectrum, n=size, axis=-1, workers=1)[..., :samples]


def fast_length(samples: int) -> int:
    """A transform length of at least `samples` that pocketfft computes fast: a 5-smooth
    multiple of FAST_FFT_MULTIPLE (the smallest 5-smooth length, next_fast_len, can take
    half as long again when its power of two is small: 328050 vs 331776 for 10 s at 32 kHz)."""
    import scipy.fft

    blocks = scipy.fft.next_fast_len(-(-samples // FAST_FFT_MULTIPLE), real=True)
    return blocks * FAST_FFT_MULTIPLE


def segment_length(rate: int) -> int:
    """Samples between the entries of cumulative_power at `rate`: the 0.1 s hop of the gating
    windows where their lengths (0.4 s and 3 s) are whole hops, else 1."""
    hop = int(round(0.1 * rate))
    whole = all(int(round(seconds * rate)) % hop == 0 for seconds in (0.4, 3.0))
    return hop if hop > 0 and whole else 1


def cumulative_power(audio: np.ndarray, rate: int) -> np.ndarray:
    """Running sum of the K-weighted power, with a leading 0, every segment_length(rate)
    samples: what every window mean needs (the windows start and end on those boundaries)."""
    step = segment_length(rate)
    y = k_filtered(audio, rate)
    if y.shape[0] > len(CHANNEL_GAINS):
        raise ValueError(f"{y.shape[0]} channels: BS.1770 weighs at most "
                         f"{len(CHANNEL_GAINS)} (L, R, C, Ls, Rs)")
    whole = y.shape[-1] // step * step
    segments = np.zeros(whole // step)
    for gain, channel in zip(CHANNEL_GAINS, y):  # the gating is linear in each channel's
        rows = channel[:whole].reshape(-1, step)  # weighted power: segment sums of squares,
        segments += gain * np.einsum("ij,ij->i", rows, rows)  # as dot products
    return np.concatenate([[0.0], np.cumsum(segments)])


def _window_means(cumulative: np.ndarray, rate: int, length: int, hop: int) -> np.ndarray:
    """Means over windows of `length` samples every `hop`, from a cumulative_power array."""
    step = segment_length(rate)
    n = ((len(cumulative) - 1) * step - length) // hop + 1
    if n < 1:
        return np.empty(0)
    starts = np.arange(n) * (hop // step)
    return (cumulative[starts + length // step] - cumulative[starts]) / length


def _lufs(mean_power: np.ndarray | float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -0.691 + 10 * np.log10(mean_power)


def _gated_levels(audio: np.ndarray, rate: int, cumulative: np.ndarray | None,
                  seconds: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean squares and loudness of `seconds`-long windows every 0.1 s, and which pass the
    -70 LUFS absolute gate."""
    cumulative = cumulative_power(audio, rate) if cumulative is None else cumulative
    means = _window_means(cumulative, rate, int(round(seconds * rate)),
                          int(round(0.1 * rate)))
    levels = _lufs(means) if means.size else means
    return means, levels, levels > ABSOLUTE_GATE


def integrated_loudness(audio: np.ndarray, rate: int, cumulative: np.ndarray | None = None
                        ) -> float:
    """Gated integrated loudness (LUFS) of [channels, samples] audio: 400 ms blocks (75%
    overlap), gated at -70 LUFS and 10 LU below their mean; -inf when every block is gated;
    NaN when the audio holds NaN or infinity."""
    powers, levels, kept = _gated_levels(audio, rate, cumulative, 0.4)
    if levels.size == 0 or np.isnan(powers).any():
        return float("nan")
    if not kept.any():
        return float("-inf")
    kept &= levels > _lufs(powers[kept].mean()) - 10.0
    return float(_lufs(powers[kept].mean()))


def loudness_range(audio: np.ndarray, rate: int, cumulative: np.ndarray | None = None) -> float:
    """EBU Tech 3342 loudness range (LU): short-term (3 s, 10 Hz) loudness, gated at -70 LUFS
    absolute and 20 LU below their power mean, spread between the 10th and 95th percentiles
    (NaN when nothing passes, or the audio holds NaN or infinity)."""
    powers, levels, kept = _gated_levels(audio, rate, cumulative, 3.0)
    if not kept.any() or np.isnan(powers).any():
        return float("nan")
    kept &= levels > 10 * np.log10(np.mean(10 ** (levels[kept] / 10))) - 20.0
    low, high = np.percentile(levels[kept], [10, 95])
    return float(high - low)


def _annex2_matrix(block: int, dtype) -> np.ndarray:
    """The 4x interpolation of `block` consecutive windows as one matrix: row j of a block's
    samples x[bB : bB + block + 11] times it gives the four phases of the windows starting at
    bB, ..., bB + block - 1, [block + 11, 4 * block]."""
    taps = ANNEX2_PHASES.shape[1]
    weight = ANNEX2_PHASES[:, ::-1].T  # a window holds x[n - 11], ..., x[n]: taps reversed
    matrix = np.zeros((block + taps - 1, block, 4))
    for start in range(block):
        matrix[start:start + taps, start, :] = weight
    return matrix.reshape(block + taps - 1, 4 * block).astype(dtype)


def _row_max(matrix: np.ndarray) -> np.ndarray:
    """matrix.max(axis=1) for a matrix of many short rows, column by column (numpy reduces a
    short inner axis several times slower)."""
    best = matrix[:, 0].copy()
    for column in range(1, matrix.shape[1]):
        np.maximum(best, matrix[:, column], out=best)
    return best


def true_peaks(signals: np.ndarray) -> np.ndarray:
    """True peak (dBTP) of each row of [rows, samples]: the largest |value| of the signal
    oversampled 4x with the BS.1770-4 Annex 2 filter, or of the samples themselves if larger
    (as libebur128 reports it). In floating point the standard's 12.04 dB headroom is moot.

    Exact but sparse: an interpolated value is a 12-sample weighted sum, so it cannot exceed
    L x (the largest |x| in its window), L being the largest per-phase sum of |taps|. Windows
    go in blocks of PEAK_BLOCK; only the blocks whose samples could beat the sample peak are
    interpolated, each block one row of a matrix product (numpy: no torch, no scipy)."""
    signals = np.atleast_2d(np.asarray(signals))
    taps, block = ANNEX2_PHASES.shape[1], PEAK_BLOCK
    bound = float(np.abs(ANNEX2_PHASES).sum(axis=1).max())
    matrix = _annex2_matrix(block, signals.dtype)
    peaks = []
    for row in signals:
        starts = len(row) + taps - 1  # window s holds padded[s : s + taps], row zero-padded
        blocks = -(-starts // block)
        padded = np.zeros((blocks + 1) * block, dtype=row.dtype)  # room for the last block
        padded[taps - 1: taps - 1 + len(row)] = row
        block_max = _row_max(np.abs(padded).reshape(blocks + 1, block))
        sample_peak = float(block_max.max())
        # a block's windows read its own samples and the next block's first taps - 1
        reach = np.maximum(block_max[:-1], block_max[1:])
        hot = np.flatnonzero(reach * bound > sample_peak)
        best = sample_peak
        if len(hot):
            item = padded.itemsize
            rows = np.lib.stride_tricks.as_strided(
                padded, (blocks, block + taps - 1), (block * item, item), writeable=False)
            values = rows[hot] @ matrix  # [hot blocks, 4 * block]
            best = max(best, float(values.max()), -float(values.min()))
        peaks.append(best)
    with np.errstate(divide="ignore"):
        return 20 * np.log10(np.asarray(peaks, dtype=np.float64))


def true_peak(audio: np.ndarray) -> float:
    """True peak in dBTP of [channels, samples] audio."""
    rows = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    return float(np.max(true_peaks(rows))) if rows.size else float("-inf")

"""ITU-R BS.1770-4 loudness, EBU Tech 3342 loudness range and true peak, vectorised.

The K-weighting filters are designed at any rate from the analogue prototype behind the
standard's 48 kHz table (libebur128's design: at 48 kHz it gives the table's coefficients), and
run as one second-order-sections filter over all channels at once; the gating is done over all
blocks at once. True peak uses the 48-tap, 4-phase interpolator of BS.1770's Annex 2 where a
window could beat the sample peak. Verified against EBU Tech 3341 / 3342 in the tests.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import sosfilt

CHANNEL_GAINS = np.array([1.0, 1.0, 1.0, 1.41, 1.41])  # L, R, C, Ls, Rs
ABSOLUTE_GATE = -70.0
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


def k_weighted_power(audio: np.ndarray, rate: int) -> np.ndarray:
    """Channel-weighted K-weighted power, sum_c G_c y_c^2: [samples] (float64).

    The gating of BS.1770 is linear in these per-sample powers, so channels collapse here."""
    x = np.asarray(audio, dtype=np.float64)
    y = sosfilt(k_weighting(rate), x, axis=-1)
    return np.einsum("c,ct->t", CHANNEL_GAINS[: x.shape[0]], y * y)


def cumulative_power(audio: np.ndarray, rate: int) -> np.ndarray:
    """Running sum of the K-weighted power, with a leading 0: what every window mean needs."""
    return np.concatenate([[0.0], np.cumsum(k_weighted_power(audio, rate))])


def _window_means(cumulative: np.ndarray, length: int, hop: int) -> np.ndarray:
    """Means over windows of `length` samples every `hop`, from a cumulative_power array."""
    n = (len(cumulative) - 1 - length) // hop + 1
    if n < 1:
        return np.empty(0)
    starts = np.arange(n) * hop
    return (cumulative[starts + length] - cumulative[starts]) / length


def _lufs(mean_power: np.ndarray | float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -0.691 + 10 * np.log10(mean_power)


def _gated_levels(audio: np.ndarray, rate: int, cumulative: np.ndarray | None,
                  seconds: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean squares and loudness of `seconds`-long windows every 0.1 s, and which pass the
    -70 LUFS absolute gate."""
    cumulative = cumulative_power(audio, rate) if cumulative is None else cumulative
    means = _window_means(cumulative, int(round(seconds * rate)), int(round(0.1 * rate)))
    levels = _lufs(means) if means.size else means
    return means, levels, levels > ABSOLUTE_GATE


def integrated_loudness(audio: np.ndarray, rate: int, cumulative: np.ndarray | None = None
                        ) -> float:
    """Gated integrated loudness (LUFS) of [channels, samples] audio: 400 ms blocks (75%
    overlap), gated at -70 LUFS and 10 LU below their mean; -inf when every block is gated."""
    powers, levels, kept = _gated_levels(audio, rate, cumulative, 0.4)
    if levels.size == 0:
        return float("nan")
    if not kept.any():
        return float("-inf")
    kept &= levels > _lufs(powers[kept].mean()) - 10.0
    return float(_lufs(powers[kept].mean()))


def loudness_range(audio: np.ndarray, rate: int, cumulative: np.ndarray | None = None) -> float:
    """EBU Tech 3342 loudness range (LU): short-term (3 s, 10 Hz) loudness, gated at -70 LUFS
    absolute and 20 LU below their power mean, spread between the 10th and 95th percentiles."""
    _, levels, kept = _gated_levels(audio, rate, cumulative, 3.0)
    if not kept.any():
        return float("nan")
    kept &= levels > 10 * np.log10(np.mean(10 ** (levels[kept] / 10))) - 20.0
    low, high = np.percentile(levels[kept], [10, 95])
    return float(high - low)


def true_peaks(signals: np.ndarray) -> np.ndarray:
    """True peak (dBTP) of each row of [rows, samples]: the largest |value| of the signal
    oversampled 4x with the BS.1770-4 Annex 2 filter, or of the samples themselves if larger
    (as libebur128 reports it). In floating point the standard's 12.04 dB headroom is moot.

    Exact but sparse: an interpolated value is a 12-sample weighted sum, so it cannot exceed
    L x (the largest |x| in its window), L being the largest per-phase sum of |taps|. Only
    windows that could beat the sample peak are interpolated, all phases at once (numpy: no
    torch on the analysis path)."""
    from scipy.ndimage import maximum_filter1d

    signals = np.atleast_2d(np.asarray(signals))
    taps = ANNEX2_PHASES.shape[1]
    # a window holds x[n - 11], ..., x[n]: each phase's taps, reversed, as the columns
    weight = ANNEX2_PHASES[:, ::-1].T.astype(signals.dtype)  # [taps, 4]
    bound = float(np.abs(ANNEX2_PHASES).sum(axis=1).max())
    peaks = []
    for row in signals:
        padded = np.pad(row, taps - 1)
        magnitude = np.abs(padded)
        sample_peak = magnitude.max() if len(row) else 0.0
        # the largest |x| of the window starting at each position
        window_max = maximum_filter1d(magnitude, taps, origin=-(taps // 2))
        window_max = window_max[: len(padded) - taps + 1]
        starts = np.flatnonzero(window_max * bound > sample_peak)
        best = float(sample_peak)
        if len(starts):
            windows = padded[starts[:, None] + np.arange(taps)]  # [candidates, taps]
            best = max(best, float(np.abs(windows @ weight).max()))
        peaks.append(best)
    with np.errstate(divide="ignore"):
        return 20 * np.log10(np.asarray(peaks, dtype=np.float64))


def true_peak(audio: np.ndarray) -> float:
    """True peak in dBTP of [channels, samples] audio."""
    rows = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    return float(np.max(true_peaks(rows))) if rows.size else float("-inf")

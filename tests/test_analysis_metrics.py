"""Per-clip metrics against published references (EBU Tech 3341 / 3342, ITU-R BS.1770-4's
tables), against libebur128 (pyebur128) and against librosa."""
import librosa
import numpy as np
import pyebur128
import pytest
from scipy.signal import upfirdn

from acr.commands.analyze.features import Extractor, estimate_key
from acr.core.loudness import (ANNEX2_PHASES, integrated_loudness, k_weighting,
                               loudness_range, true_peak)
from synth import drums, progression, sine

EBU = 48000


def stereo(signal):
    return np.stack([signal, signal])


@pytest.fixture(scope="module")
def extract():
    extractor = Extractor()
    return lambda audio, rate=32000: extractor.batch([np.atleast_2d(audio)], rate)[0]


# EBU Tech 3341 (loudness) and 3342 (loudness range) test signals: 1 kHz stereo sines
def test_ebu_3341_case_1_and_2():
    assert integrated_loudness(stereo(sine(1000, 20, EBU, -23)), EBU) == pytest.approx(-23, abs=0.1)
    assert integrated_loudness(stereo(sine(1000, 20, EBU, -33)), EBU) == pytest.approx(-33, abs=0.1)


def test_ebu_3341_case_5():
    signal = np.concatenate([sine(1000, 20, EBU, -26), sine(1000, 20.1, EBU, -20),
                             sine(1000, 20, EBU, -26)])
    assert integrated_loudness(stereo(signal), EBU) == pytest.approx(-23, abs=0.1)


def test_ebu_3342_case_1_loudness_range():
    signal = np.concatenate([sine(1000, 20, EBU, -20), sine(1000, 20, EBU, -30)])
    assert loudness_range(stereo(signal), EBU) == pytest.approx(10, abs=1)


@pytest.mark.slow
def test_true_peak_of_quarter_rate_sine_at_45_degrees(extract):
    signal = sine(EBU / 4, 1, EBU, phase=np.pi / 4) * 0.5 / 1.0  # samples read 0.354
    assert 20 * np.log10(np.abs(signal).max()) == pytest.approx(-9.0, abs=0.1)
    assert true_peak(signal[None]) == pytest.approx(-6.0, abs=0.1)
    assert extract(signal, EBU).metrics["true_peak_dbtp"] == pytest.approx(-6.0, abs=0.1)


@pytest.mark.parametrize("rate", [8000, 32000, 44100, 48000])
def test_k_filter_equals_scipys_sample_by_sample_filter(rate):
    """The frequency-domain K-weighting gives scipy.signal.sosfilt's output (the filters run
    sample by sample from rest), stereo: half a second of silence, then noise to the end (the
    filters' tail must not wrap around into the silence)."""
    from scipy.signal import sosfilt

    from acr.core.loudness import k_filtered_by_spectra as k_filtered

    x = np.random.default_rng(rate).standard_normal((2, 2 * rate))
    x[:, : rate // 2] = 0.0  # silence first: the filters start from rest
    expected = sosfilt(k_weighting(rate), x, axis=-1)
    np.testing.assert_allclose(k_filtered(x, rate), expected, rtol=0,
                               atol=1e-12 * np.abs(expected).max())


def test_loudness_of_audio_holding_nan_is_nan():
    """Whichever way the filters run (scipy.signal is imported here), NaN or infinity in the
    audio makes loudness and loudness range undefined, not a value from the finite part."""
    signal = stereo(sine(1000, 4, EBU, -23))
    signal[0, EBU] = np.nan
    assert np.isnan(integrated_loudness(signal, EBU))
    assert np.isnan(loudness_range(signal, EBU))
    signal[0, EBU] = np.inf
    assert np.isnan(integrated_loudness(signal, EBU))


def test_k_weighting_at_48k_is_the_standards_table():
    """BS.1770-4 Table 1 (pre-filter) and Table 2 (RLB high-pass) coefficients at 48 kHz."""
    shelf, high_pass = k_weighting(48000)
    assert shelf == pytest.approx([1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0,
                                   -1.69065929318241, 0.73248077421585], abs=1e-12)
    assert high_pass == pytest.approx([1.0, -2.0, 1.0, 1.0, -1.99004745483398,
                                       0.99007225036621], abs=1e-12)


def faded(audio, rate, seconds=0.05):
    """Raised-cosine fades at both ends: no step at the edges (where meters that stream, like
    libebur128, and ones that flush the filter tail would disagree)."""
    n = int(seconds * rate)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)
    audio = np.atleast_2d(np.array(audio, dtype=np.float64))
    audio[:, :n] *= ramp
    audio[:, -n:] *= ramp[::-1]
    return audio


def rendered_music(rate, seed):
    """Chords and drums in six 4 s sections at different levels (a loudness range of ~12 LU)."""
    bar = progression([[60, 64, 67], [65, 69, 72], [67, 71, 74], [57, 60, 64]], rate) + \
        0.5 * drums(110 + 10 * seed, 4, rate, seed=seed)
    return np.concatenate([bar * 10 ** (level / 20) for level in (0, -12, -6, -18, -3, -9)])


def stepped_noise(rate, seed):
    """Stereo white noise whose level steps every 2 s."""
    noise = 0.25 * np.random.default_rng(seed).standard_normal((2, 10 * rate))
    return noise * np.repeat(10 ** (np.array([0, -10, -5, -20, 0]) / 20), 2 * rate)


# sines at awkward frequencies and phases (stereo, the right channel 3 dB down), noise, music
SIGNALS = {
    **{f"sine {freq} Hz at {rate}, phase {phase:.2f}": (rate, lambda r=rate, f=freq, p=phase:
        np.stack([sine(f, 4, r, -1, phase=p), sine(f, 4, r, -4, phase=p + 1)]))
       for rate, freq, phase in [(48000, 997, 0.3), (48000, 5000, np.pi / 4),
                                 (48000, 12000, np.pi / 3), (44100, 3000, 1.2),
                                 (44100, 11025, 0.7), (32000, 8000, 3 * np.pi / 8),
                                 (32000, 1234.5, 2.0)]},
    **{f"noise at {rate}": (rate, lambda r=rate: stepped_noise(r, r)) for rate in (48000, 44100)},
    **{f"music at {rate}": (rate, lambda r=rate: np.stack([rendered_music(r, 1),
                                                           0.7 * rendered_music(r, 2)]))
       for rate in (48000, 32000)},
}


def libebur128(audio, rate):
    """(true peak dBTP, integrated LUFS, loudness range LU) from libebur128 (pyebur128)."""
    mode = pyebur128.MeasurementMode
    state = pyebur128.R128State(audio.shape[0], rate,
                                mode.MODE_I | mode.MODE_LRA | mode.MODE_TRUE_PEAK)
    state.add_frames(np.ascontiguousarray(audio.T).ravel(), audio.shape[1])
    peak = max(pyebur128.get_true_peak(state, c) for c in range(audio.shape[0]))
    return (20 * np.log10(peak), pyebur128.get_loudness_global(state),
            pyebur128.get_loudness_range(state))


def oversampled_peak(audio, taps):
    """dB of the largest |sample| of the signal and of it upsampled 4x through `taps` (scipy)."""
    peak = max(np.abs(audio).max(), max(np.abs(upfirdn(taps, row, 4)).max() for row in audio))
    return 20 * np.log10(peak)


ANNEX2_TAPS = ANNEX2_PHASES.T.ravel()  # the 48 taps in order: h[4k + p] = phase p, tap k
# libebur128 1.2's interpolator: a 49-tap Hann-windowed sinc for 4x (not the table of Annex 2)
_M = np.arange(49) - 24
LIBEBUR128_TAPS = np.sinc(_M / 4) * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(49) / 48))


@pytest.mark.parametrize("name", SIGNALS)
def test_true_peak_is_bs1770_annex2_oversampling(name):
    """The sparse, batched true peak equals upsampling with the standard's 48 taps (scipy)."""
    rate, make = SIGNALS[name]
    audio = faded(make(), rate)
    assert true_peak(audio) == pytest.approx(oversampled_peak(audio, ANNEX2_TAPS), abs=1e-3)


@pytest.mark.parametrize("name", SIGNALS)
def test_loudness_and_loudness_range_match_libebur128(name):
    rate, make = SIGNALS[name]
    audio = faded(make(), rate)
    _, loudness, loudness_range_lu = libebur128(audio, rate)
    assert integrated_loudness(audio, rate) == pytest.approx(loudness, abs=0.1)
    assert loudness_range(audio, rate) == pytest.approx(loudness_range_lu, abs=0.5)


# where the standard's filter and libebur128's agree: low tones, music rendered at 48 kHz
AGREE = {"sine 997 Hz at 48000, phase 0.30", "sine 1234.5 Hz at 32000, phase 2.00",
         "music at 48000"}


@pytest.mark.parametrize("name", SIGNALS)
def test_true_peak_against_libebur128(name):
    """libebur128 1.2 oversamples with its own 49-tap windowed sinc, not Annex 2's table (its
    reading is exactly that filter's, checked here). The standard's phases are up to 0.22 dB
    off unity gain where the sinc is flat, so a pure tone or white noise can read up to ~0.3 dB
    higher with the standard's filter: within 0.1 dB where the filters agree, 0.35 dB elsewhere."""
    rate, make = SIGNALS[name]
    audio = faded(make(), rate)
    peak = libebur128(audio, rate)[0]
    assert peak == pytest.approx(oversampled_peak(audio, LIBEBUR128_TAPS), abs=1e-3)
    assert true_peak(audio) == pytest.approx(peak, abs=0.1 if name in AGREE else 0.35)


def test_loudness_equals_libebur128_on_the_ebu_signals():
    for signal in (stereo(sine(1000, 20, EBU, -23)),
                   stereo(np.concatenate([sine(1000, 20, EBU, -20), sine(1000, 20, EBU, -30)]))):
        peak, loudness, loudness_range_lu = libebur128(signal, EBU)
        assert integrated_loudness(signal, EBU) == pytest.approx(loudness, abs=0.01)
        assert loudness_range(signal, EBU) == pytest.approx(loudness_range_lu, abs=0.5)


def test_white_noise_flatness_and_sine_centroid(extract):
    noise = np.random.default_rng(0).standard_normal(32000 * 5) * 0.1
    assert extract(noise).metrics["spectral_flatness"] == pytest.approx(0.5615, abs=0.005)
    for freq in (440.0, 1000.0, 3000.0):
        assert extract(sine(freq, 3, 32000, -6)).metrics["spectral_centroid_hz"] == \
            pytest.approx(freq, rel=0.01)


def test_spectral_metrics_equal_librosa(extract):
    rate = 32000
    y = progression([[60, 64, 67], [62, 65, 69]] * 2, rate) + 0.2 * drums(110, 4, rate)
    metrics = extract(y).metrics
    assert metrics["spectral_centroid_hz"] == pytest.approx(
        librosa.feature.spectral_centroid(y=y, sr=rate).mean(), rel=1e-3)
    assert metrics["spectral_bandwidth_hz"] == pytest.approx(
        librosa.feature.spectral_bandwidth(y=y, sr=rate).mean(), rel=1e-3)
    assert metrics["spectral_rolloff_hz"] == pytest.approx(
        librosa.feature.spectral_rolloff(y=y, sr=rate).mean(), rel=1e-2)
    assert metrics["spectral_flatness"] == pytest.approx(
        librosa.feature.spectral_flatness(y=y).mean(), rel=1e-2)


@pytest.mark.parametrize("bpm", [100, 128, 140])
def test_tempo_of_a_drum_pattern(extract, bpm):
    metrics = extract(drums(bpm, 12, 32000)).metrics
    assert metrics["tempo_bpm"] == pytest.approx(bpm, rel=0.04)
    # two hits an eighth note apart (hat on every eighth): 2 onsets per beat
    assert metrics["onset_rate_hz"] == pytest.approx(2 * bpm / 60, rel=0.15)


@pytest.mark.parametrize("chords, key", [
    ([[67, 71, 74], [60, 64, 67], [62, 66, 69], [67, 71, 74], [64, 67, 71], [60, 64, 67],
      [62, 66, 69], [67, 71, 74]], "G major"),
    ([[69, 72, 76], [62, 65, 69], [64, 68, 71], [69, 72, 76]] * 2, "A minor"),
    ([[60, 64, 67], [65, 69, 72], [67, 71, 74], [60, 64, 67]] * 2, "C major"),
])
def test_key_of_a_chord_progression(extract, chords, key):
    metrics = extract(progression(chords, 32000)).metrics
    assert metrics["key"] == key and metrics["key_strength"] > 0.6


def test_estimate_key_on_ideal_profiles():
    c_major = np.array([1, 0, 0.5, 0, 1, 0.5, 0, 1, 0, 0.5, 0, 0.5])
    assert estimate_key(c_major)[0] == "C major"
    assert estimate_key(np.roll(c_major, 2))[0] == "D major"
    assert estimate_key(np.zeros(12)) == (None, pytest.approx(np.nan, nan_ok=True))


def test_levels_crest_clipping_and_silence(extract):
    metrics = extract(sine(440, 4, 32000, -6)).metrics
    assert metrics["crest_factor_db"] == pytest.approx(3.01, abs=0.02)
    assert metrics["clipping_ratio"] == 0.0 and metrics["silence_ratio"] == 0.0
    square = np.sign(sine(100, 2, 32000))
    assert extract(square).metrics["clipping_ratio"] > 0.99
    assert "clipped" in extract(square).flags
    half = np.concatenate([np.zeros(64000), sine(440, 2, 32000, -6)])
    assert extract(half).metrics["silence_ratio"] == pytest.approx(0.5, abs=0.03)


def test_repetition_of_a_repeated_phrase(extract):
    rate = 32000
    phrase = progression([[60, 64, 67], [65, 69, 72], [67, 71, 74], [57, 60, 64]], rate, 0.5)
    repeated = np.tile(phrase, 4)  # 8 s: the same 2 s phrase four times
    varied = progression([[60 + (i * 5) % 12, 64 + (i * 7) % 12, 67 + (i * 3) % 12]
                          for i in range(16)], rate, 0.5)
    assert extract(repeated).metrics["repetition"] > 0.95
    assert extract(repeated).metrics["repetition"] > extract(varied).metrics["repetition"] + 0.1


def test_silent_and_nan_audio_is_flagged_not_fatal(extract):
    silent = extract(np.zeros((2, 32000)))
    assert silent.flags == ["silent"] and np.isnan(silent.metrics["loudness_lufs"])
    assert silent.metrics["key"] is None
    broken = np.zeros((1, 32000))
    broken[0, 100:200] = np.nan
    result = extract(broken)
    assert result.flags[0] == "nan" and all(np.isfinite(result.embedding))


def test_batched_equals_one_at_a_time():
    rate = 32000
    clips = [np.atleast_2d(drums(bpm, 3, rate, seed=bpm)) for bpm in (100, 120, 140)]
    together = Extractor().batch(clips, rate)
    alone = [Extractor().batch([c], rate)[0] for c in clips]
    for a, b in zip(together, alone):
        for name, value in a.metrics.items():
            if isinstance(value, float):
                assert value == pytest.approx(b.metrics[name], rel=1e-5, nan_ok=True), name

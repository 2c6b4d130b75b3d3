"""Per-clip metrics against published references and against librosa / pyloudnorm."""
import librosa
import numpy as np
import pyloudnorm
import pytest

from acr.commands.analyze.features import Extractor, estimate_key
from acr.core.loudness import integrated_loudness, loudness_range, true_peak
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
    assert true_peak(signal[None]) == pytest.approx(-6.0, abs=0.3)
    assert extract(signal, EBU).metrics["true_peak_dbtp"] == pytest.approx(-6.0, abs=0.3)


def test_loudness_equals_pyloudnorm_on_music_like_audio():
    rate = 32000
    audio = stereo(progression([[60, 64, 67], [65, 69, 72]] * 3, rate) + 0.3 * drums(120, 6, rate))
    expected = pyloudnorm.Meter(rate).integrated_loudness(audio.T)
    assert integrated_loudness(audio, rate) == pytest.approx(expected, abs=0.01)


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

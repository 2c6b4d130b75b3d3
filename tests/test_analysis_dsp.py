"""The analysis' numpy rebuilds of librosa's functions (acr/commands/analyze/dsp.py) against
librosa's own, on the same inputs: drum patterns, chords, noise and a tone at several rates."""
import librosa
import numpy as np
import pytest

from acr.commands.analyze import dsp
from acr.commands.analyze.features import Extractor
from synth import drums, progression, sine

SIGNALS = {
    "drums 100 bpm at 32 kHz": (32000, lambda: drums(100, 6, 32000, seed=1)),
    "drums 137 bpm at 44.1 kHz": (44100, lambda: drums(137, 5, 44100, seed=2)),
    "chords and drums at 32 kHz": (32000, lambda: progression(
        [[60, 64, 67], [65, 69, 72], [67, 71, 74], [57, 60, 64]], 32000)
        + 0.4 * drums(118, 4, 32000, seed=3)[: 4 * 32000]),
    "noise at 16 kHz": (16000, lambda: 0.1 * np.random.default_rng(4).standard_normal(64000)),
    "a 440 Hz tone at 48 kHz": (48000, lambda: sine(440, 3, 48000, -6)),
}


def mel_db_of(y, rate):
    power = dsp.power_spectrogram(y.astype(np.float32), dsp.hann(dsp.N_FFT).astype(np.float32))
    return dsp.power_to_db((power @ dsp.mel_filters(rate, 128).T).T.astype(np.float64))


@pytest.mark.parametrize("rate", [16000, 22050, 32000, 44100, 48000])
def test_filterbanks_equal_librosa(rate):
    np.testing.assert_allclose(dsp.mel_filters(rate, 128),
                               librosa.filters.mel(sr=rate, n_fft=2048, n_mels=128),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dsp.chroma_filters(rate),
                               librosa.filters.chroma(sr=rate, n_fft=2048, tuning=0.0),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(dsp.fft_frequencies(rate),
                                  librosa.fft_frequencies(sr=rate, n_fft=2048))
    np.testing.assert_array_equal(dsp.hann(2048), librosa.filters.get_window("hann", 2048))


@pytest.mark.parametrize("name", SIGNALS)
def test_spectrogram_db_and_mfcc_equal_librosa(name):
    rate, make = SIGNALS[name]
    y = make().astype(np.float32)
    power = dsp.power_spectrogram(y, dsp.hann(2048).astype(np.float32))
    reference = np.abs(librosa.stft(y, n_fft=2048, hop_length=512)) ** 2
    assert power.T.shape == reference.shape
    np.testing.assert_allclose(power.T, reference, rtol=1e-3, atol=1e-5 * reference.max())
    mel_power = (power @ dsp.mel_filters(rate, 128).T).T.astype(np.float64)
    mel_db = dsp.power_to_db(mel_power)
    np.testing.assert_allclose(mel_db, librosa.power_to_db(mel_power), rtol=0, atol=1e-9)
    np.testing.assert_allclose(dsp.mfcc(mel_db, 20), librosa.feature.mfcc(S=mel_db, n_mfcc=20),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", SIGNALS)
def test_onsets_and_tempo_equal_librosa(name):
    rate, make = SIGNALS[name]
    mel_db = mel_db_of(make(), rate)
    envelope = dsp.onset_strength(mel_db)
    reference = librosa.onset.onset_strength(S=mel_db, sr=rate, hop_length=512)
    np.testing.assert_allclose(envelope, reference, rtol=1e-12, atol=1e-12)
    assert dsp.onset_count(envelope, rate) == len(
        librosa.onset.onset_detect(onset_envelope=envelope, sr=rate, hop_length=512))
    assert dsp.tempo(envelope, rate) == pytest.approx(
        librosa.feature.tempo(onset_envelope=envelope, sr=rate, hop_length=512)[0], rel=1e-12)


@pytest.mark.parametrize("bpm", [96, 128, 150])
def test_clip_tempo_and_onsets_equal_librosa_from_the_audio(bpm):
    """End to end: the metrics of a clip equal librosa's functions called on its audio."""
    rate = 32000
    y = drums(bpm, 10, rate, seed=bpm).astype(np.float32)
    metrics = Extractor().batch([y[None]], rate)[0].metrics
    envelope = librosa.onset.onset_strength(y=y, sr=rate)
    assert metrics["tempo_bpm"] == pytest.approx(
        librosa.feature.tempo(onset_envelope=envelope, sr=rate)[0], rel=1e-9)
    assert metrics["onset_rate_hz"] * len(y) / rate == pytest.approx(
        len(librosa.onset.onset_detect(onset_envelope=envelope, sr=rate)))


def test_onset_count_keeps_librosas_wait_between_peaks():
    """Peaks closer than librosa's 30 ms wait count once; a flat envelope has none."""
    envelope = np.zeros(200)
    envelope[[20, 21, 60, 62, 100]] = [1.0, 0.99, 0.8, 0.9, 0.7]
    assert dsp.onset_count(envelope, 32000) == len(
        librosa.onset.onset_detect(onset_envelope=envelope, sr=32000))
    assert dsp.onset_count(np.ones(50), 32000) == 0


@pytest.mark.parametrize("name", SIGNALS)
def test_mel_bands_and_rolloff_bins_equal_librosa(name):
    """The mel filterbank applied band by band equals librosa's melspectrogram, and the
    rolloff bin of each frame (from block sums) is librosa's, but for frames where the 85%
    point falls within float32 rounding of a bin edge."""
    from acr.commands.analyze.features import ROLLOFF_FRACTION, _reaching

    rate, make = SIGNALS[name]
    y = make().astype(np.float32)
    power = dsp.power_spectrogram(y, dsp.hann(2048).astype(np.float32))
    bands = dsp.filter_bands(dsp.mel_filters(rate, 128))
    reference = librosa.feature.melspectrogram(S=power.T, sr=rate, n_fft=2048)
    np.testing.assert_allclose(dsp.apply_bands(power, bands), reference, rtol=1e-4,
                               atol=1e-6 * reference.max())
    magnitude = np.sqrt(power)
    totals, first = _reaching(magnitude, ROLLOFF_FRACTION)
    np.testing.assert_allclose(totals, magnitude.sum(axis=1), rtol=1e-5)
    freqs = dsp.fft_frequencies(rate)
    rolloff = librosa.feature.spectral_rolloff(S=magnitude.T, sr=rate, n_fft=2048,
                                               roll_percent=ROLLOFF_FRACTION)[0]
    sounding = totals > 0
    same = freqs[np.minimum(first, len(freqs) - 1)][sounding] == rolloff[sounding]
    assert same.mean() >= 0.995


@pytest.mark.parametrize("rate", [16000, 32000, 44100])
def test_spectrogram_cell_from_the_analysis_stft_equals_one_from_the_file(tmp_path, rate):
    """The grid cell the features make from every fourth frame of their STFT is the image
    read from the file with a 2048-sample hop."""
    import soundfile as sf

    from acr.commands.analyze.plots import mel_image

    y = (0.5 * drums(120, 3, rate, seed=5)).astype(np.float32)
    sf.write(tmp_path / "clip.wav", y, rate, subtype="FLOAT")
    cell = Extractor().clip(y[None], rate, thumbnail=True).thumbnail
    expected = mel_image(tmp_path / "clip.wav")
    assert cell.shape == expected.shape == (dsp.THUMBNAIL_MELS, 1 + len(y) // 2048)
    np.testing.assert_allclose(cell, expected, atol=1e-3)
    assert Extractor().clip(y[None], rate).thumbnail is None

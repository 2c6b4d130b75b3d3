"""acr's per-clip analysis vs a straightforward per-file librosa + pyloudnorm extraction.

Both analyse the same 40 clips of 10 s (32 kHz stereo: chords, a drum pattern, noise) read from
WAV files. The baseline does what a researcher would write per file: pyloudnorm's integrated
loudness, scipy's 4x resampling for the true peak, and librosa's spectral centroid / bandwidth /
rolloff / flatness, onset strength + detection, tempo, chroma_stft (tuning 0, as acr) and MFCC,
each from the audio. It leaves out LRA, key and self-similarity, which acr computes as well, so
the comparison is conservative. Prints seconds of audio analysed per second and the ratio; exits
1 if acr is under 3x faster.

    python benchmarks/analysis_features.py [--clips 40] [--seconds 10]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def synthesise(index: int, rate: int, seconds: float) -> np.ndarray:
    """A varied stereo clip: a chord progression, a drum pattern and noise in changing amounts."""
    rng = np.random.default_rng(index)
    t = np.arange(int(rate * seconds)) / rate
    root = 110 * 2 ** (index % 12 / 12)
    chord = sum(np.sin(2 * np.pi * root * ratio * t) for ratio in (1, 1.26, 1.5)) / 3
    beat = 60 / (90 + 3 * index)
    phase = (t % beat) / beat
    kick = np.sin(2 * np.pi * 60 * t) * np.exp(-30 * phase * beat)
    mono = 0.3 * chord + 0.4 * kick + 0.02 * rng.standard_normal(len(t))
    return np.stack([mono, 0.9 * mono + 0.01 * rng.standard_normal(len(t))])


def baseline(path: Path) -> dict:
    import librosa
    import pyloudnorm
    import soundfile as sf
    from scipy.signal import resample_poly

    data, rate = sf.read(str(path), always_2d=True)
    y = data.mean(axis=1)
    envelope = librosa.onset.onset_strength(y=y, sr=rate)
    return {
        "loudness_lufs": pyloudnorm.Meter(rate).integrated_loudness(data),
        "true_peak": 20 * np.log10(np.abs(resample_poly(data, 4, 1, axis=0)).max()),
        "centroid": librosa.feature.spectral_centroid(y=y, sr=rate).mean(),
        "bandwidth": librosa.feature.spectral_bandwidth(y=y, sr=rate).mean(),
        "rolloff": librosa.feature.spectral_rolloff(y=y, sr=rate).mean(),
        "flatness": librosa.feature.spectral_flatness(y=y).mean(),
        "onsets": len(librosa.onset.onset_detect(onset_envelope=envelope, sr=rate)),
        "tempo": librosa.feature.tempo(onset_envelope=envelope, sr=rate)[0],
        "chroma": librosa.feature.chroma_stft(y=y, sr=rate, tuning=0.0).mean(axis=1),
        "mfcc": librosa.feature.mfcc(y=y, sr=rate).mean(axis=1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--min-ratio", type=float, default=3.0)
    args = parser.parse_args()

    import soundfile as sf

    from acr.commands.analyze.cache import analyse_clips

    rate = 32000
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for index in range(args.clips):
            paths.append(Path(tmp) / f"clip-{index:03d}.wav")
            sf.write(str(paths[-1]), synthesise(index, rate, args.seconds).T, rate,
                     subtype="FLOAT")
        baseline(paths[0])  # warm-up: librosa's numba functions compile on first use
        analyse_clips(paths[:2])

        start = time.perf_counter()
        ours = analyse_clips(paths)
        acr_seconds = time.perf_counter() - start
        start = time.perf_counter()
        theirs = [baseline(path) for path in paths]
        baseline_seconds = time.perf_counter() - start

    for mine, reference in zip(ours, theirs):  # the same features, or the comparison is moot
        # (pyloudnorm's K-weighting approximates the standard's filters: ~0.05 LU apart)
        assert abs(mine.metrics["loudness_lufs"] - reference["loudness_lufs"]) < 0.1
        assert abs(mine.metrics["spectral_centroid_hz"] - reference["centroid"]) < 1.0
    audio = args.clips * args.seconds
    print(f"{args.clips} clips of {args.seconds:g} s (32 kHz stereo)")
    print(f"per-file librosa + pyloudnorm: {audio / baseline_seconds:8.1f} s of audio per second "
          f"({baseline_seconds:.2f} s)")
    print(f"acr analyze:                   {audio / acr_seconds:8.1f} s of audio per second "
          f"({acr_seconds:.2f} s)")
    ratio = baseline_seconds / acr_seconds
    print(f"ratio: acr is {ratio:.2f}x faster")
    if ratio < args.min_ratio:
        raise SystemExit(f"below the promised {args.min_ratio}x")


if __name__ == "__main__":
    main()

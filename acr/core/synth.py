"""Synthesised audio: tones, chords, progressions and drum patterns (numpy, float64).

Used by `acr finetune --make-demo-data` to make a captioned demo dataset, and by the tests as
signals with known properties (frequency, key, tempo, loudness).
"""
import numpy as np


def sine(freq: float, seconds: float, rate: int, dbfs: float = 0.0, phase: float = 0.0):
    t = np.arange(int(round(seconds * rate))) / rate
    return 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t + phase)


def tone(freq: float, seconds: float, rate: int, harmonics: int = 3):
    """A harmonic tone with 10 ms attack and 50 ms release."""
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, harmonics + 1))
    return wave * np.minimum(1, np.minimum(t / 0.01, (seconds - t) / 0.05))


def chord(midis, seconds: float, rate: int):
    return sum(tone(440 * 2 ** ((m - 69) / 12), seconds, rate) for m in midis) / len(midis)


def progression(chords, rate: int, seconds: float = 1.0):
    """Chords (lists of MIDI notes) one after another, `seconds` each."""
    return 0.3 * np.concatenate([chord(c, seconds, rate) for c in chords])


def drums(bpm: float, seconds: float, rate: int, seed: int = 0):
    """Kick on 1 and 3, snare on 2 and 4, hi-hat on every eighth note."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * rate))
    beat = 60 / bpm

    def hit(time, kind):
        start, n = int(time * rate), int(0.15 * rate)
        t = np.arange(n) / rate
        if kind == "kick":
            sound = np.sin(2 * np.pi * (50 + 100 * np.exp(-t * 40)) * t) * np.exp(-t * 25)
        elif kind == "snare":
            sound = 0.6 * rng.standard_normal(n) * np.exp(-t * 30)
        else:
            sound = 0.25 * rng.standard_normal(n) * np.exp(-t * 120)
        end = min(len(out), start + n)
        out[start:end] += sound[: end - start]

    eighth = 0
    while eighth * beat / 2 < seconds:
        hit(eighth * beat / 2, "hat")
        if eighth % 4 == 0:
            hit(eighth * beat / 2, "kick")
        if eighth % 4 == 2:
            hit(eighth * beat / 2, "snare")
        eighth += 1
    return 0.5 * out

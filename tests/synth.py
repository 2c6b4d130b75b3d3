"""Test audio: acr's synthesis helpers plus a WAV writer."""
import numpy as np

from acr.core.synth import chord, drums, progression, sine, tone  # noqa: F401


def write(path, audio, rate: int, subtype: str = "FLOAT"):
    """Write [channels, samples] (or [samples]) audio as a WAV file."""
    import soundfile as sf

    audio = np.atleast_2d(audio)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.T, rate, subtype=subtype)
    return path

"""acr: a command-line research toolkit for Meta's AudioCraft (MusicGen, AudioGen)."""

__version__ = "0.1.0"

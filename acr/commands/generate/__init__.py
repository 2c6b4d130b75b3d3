"""`acr generate`: prompts to one batch of audio (run), or a hybrid music + effects mix (mix)."""
from acr.commands.generate.run import run_generate

__all__ = ["run_generate"]

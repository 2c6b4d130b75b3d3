"""`acr describe-image`: the prompts images would become (CLIP-ranked phrases), nothing generated."""
from acr.commands.describe_image.run import describe

__all__ = ["describe"]

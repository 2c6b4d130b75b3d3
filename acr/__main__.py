"""`python -m acr ...` (what `torchrun -m acr` runs) is the same as the `acr` command."""
from acr.cli import app

app(prog_name="acr")

"""matplotlib without a screen, and atomic PNG writes: every plot acr draws goes through here."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (imported on first use: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110, tight: bool = True) -> Path:
    """Write `fig` as a PNG atomically and close it. `tight`: crop to the drawn content (which
    draws the figure twice; a figure laid out by hand can skip it)."""
    from acr.core.atomic import replacing

    with replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    pyplot().close(fig)
    return path

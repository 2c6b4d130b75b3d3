"""matplotlib without a screen, and atomic PNG writes: every plot acr draws goes through here."""
from __future__ import annotations

from pathlib import Path
from typing import Any

PNG_COMPRESS_LEVEL = 1  # zlib's fastest (PIL's default is 6): writing a 920 x 700 figure of an
# image took 0.080 s of CPU instead of 0.106 s here, its file 1% larger


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
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight" if tight else None,
                    pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    pyplot().close(fig)
    return path


def warm_up() -> None:
    """Draw a small throwaway figure (text, lines, an image, a colour bar) so that what
    matplotlib loads on its first drawing (the font, glyph and colour-map caches: a tenth of a
    second or more) is loaded here: worker processes forked afterwards start with it."""
    import io

    plt = pyplot()
    fig = plt.figure(figsize=(2, 2))
    ax = fig.add_subplot()
    image = ax.imshow([[0.0, 1.0]], cmap="viridis")
    ax.plot([0, 1], [0, 1])
    ax.set_title("warm-up", fontsize=8)
    ax.set_xticks([0, 1], ["a", "b"], rotation=30, ha="right")
    ax.text(0, 0, "1.5", fontsize=6)
    fig.colorbar(image, label="x")
    fig.savefig(io.BytesIO(), format="png", dpi=20)
    plt.close(fig)

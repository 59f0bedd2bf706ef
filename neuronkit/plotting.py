"""Plot files: matplotlib without a display, and PNG bytes that depend only on the figure."""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (jobs run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_png) -> None:
    """PNG without the software-version stamp, so identical inputs give identical bytes; frees the figure."""
    fig.savefig(out_png, metadata={"Software": None})
    pyplot().close(fig)

"""Small shared helpers for plotting (matplotlib imported lazily)."""

from __future__ import annotations


def get_ax(ax=None, figsize=(6, 4)):
    """Return ``(fig, ax)``, creating a figure when ``ax`` is None."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    return fig, ax


def finish(fig, ax, *, show: bool | None, save: str | None):
    """Save/show a figure like scanpy: return the axes when not shown."""
    import matplotlib.pyplot as plt

    if save:
        fig.savefig(save, bbox_inches="tight", dpi=150)
    if show:
        plt.show()
        return None
    return ax

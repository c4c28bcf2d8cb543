"""HTML pieces of the report (tables, sections, embedded PNG figures).

Private module of :mod:`imgprof.report`.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import pandas as pd


def fig_to_img(fig: Any, alt: str) -> str:
    """The figure as an embedded PNG ``<img>`` (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=110)
    plt.close(fig)
    return (f'<img alt="{html.escape(alt, quote=True)}" title="{html.escape(alt, quote=True)}" '
            f'src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>')


def table(df: pd.DataFrame, max_rows: int = 40, index: bool | None = None) -> str:
    """HTML table; a default RangeIndex is never shown (it is not data)."""
    if index is None:
        index = not isinstance(df.index, pd.RangeIndex)
    more = f"<p class='note'>First {max_rows} of {len(df)} rows.</p>" if len(df) > max_rows else ""
    return df.head(max_rows).to_html(classes="tbl", float_format=lambda x: f"{x:.3f}", border=0, index=index,
                                     na_rep="–") + more


def section(title: str, body: str, sid: str | None = None) -> str:
    """A ``<section>`` with a heading (and an anchor ``sid``)."""
    ident = f' id="{sid}"' if sid else ""
    return f"<section{ident}><h2>{html.escape(title)}</h2>{body}</section>"


def para(text: str) -> str:
    """An escaped paragraph."""
    return f"<p>{html.escape(text)}</p>"


def ul(items: list[str], cls: str = "") -> str:
    """An escaped bullet list."""
    c = f' class="{cls}"' if cls else ""
    return f"<ul{c}>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"



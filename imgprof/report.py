"""A self-contained HTML report (figures embedded as PNG) for a pipeline run."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

import pandas as pd


def _fig_to_img(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=110)
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>'


def _table(df: pd.DataFrame, max_rows: int = 40) -> str:
    return df.head(max_rows).to_html(classes="tbl", float_format=lambda x: f"{x:.3f}", border=0)


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def write_report(
    adata,
    path: str | os.PathLike,
    *,
    metrics: pd.DataFrame | None = None,
    extras: dict[str, Any] | None = None,
    config=None,
    timings: dict[str, float] | None = None,
) -> Path:
    """Write an HTML report of ``adata`` (and of a run's metrics) to ``path``.

    Figures: plate layout of cell counts and QC flags (when present), embeddings
    coloured by batch and label, mAP scatter, benchmark table, feature-group
    summary; tables: metrics, provenance, timings. A figure that cannot be drawn
    is listed with the reason instead of being left out silently.

    Examples
    --------
    >>> import imgprof as ip, tempfile, os
    >>> from imgprof.report import write_report
    >>> p = write_report(ip.datasets.simulate(n_plates=1, seed=0), os.path.join(tempfile.mkdtemp(), "r.html"))
    >>> p.name
    'r.html'
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    import imgprof as ip

    extras = extras or {}
    parts: list[str] = []
    notes: list[str] = []
    summary = pd.DataFrame(
        {"value": [adata.n_obs, adata.n_vars, adata.uns.get("imgprof", {}).get("level", "?"), ", ".join(adata.obsm.keys()) or "-"]},
        index=["profiles", "features", "level", "embeddings"],
    )
    parts.append(_section("Summary", _table(summary)))

    # Plate layouts.
    obs = adata.obs
    count_col = next((c for c in ("Metadata_Count_Cells", "Metadata_Object_Count", "Metadata_cell_count") if c in obs.columns), None)
    if {"Metadata_Well"} <= set(obs.columns) and count_col:
        try:
            plate_key = "Metadata_Plate" if "Metadata_Plate" in obs.columns else None
            plates = list(pd.unique(obs[plate_key].astype(str)))[:2] if plate_key else [None]
            imgs = []
            for pl_ in plates:
                ax = ip.pl.plate_layout(adata, count_col, plate=pl_, show=False)
                imgs.append(_fig_to_img(ax.figure))
            qc_cols = [c for c in obs.columns if c.startswith("Metadata_qc_")][:2]
            for c in qc_cols:
                ax = ip.pl.plate_layout(adata, c, plate=plates[0], show=False, cmap="Reds")
                imgs.append(_fig_to_img(ax.figure))
            parts.append(_section("Plate layout", "".join(imgs)))
        except Exception as e:  # a figure failing must not kill the report
            notes.append(f"plate layout skipped: {e}")
    # Embeddings.
    color = [c for c in ("Metadata_Batch", "Metadata_Plate") if c in obs.columns][:1]
    label = [c for c in ("Metadata_moa", "Metadata_target_gene", "Metadata_Perturbation", "Metadata_pert_type") if c in obs.columns][:1]
    emb_keys = [k for k in adata.obsm.keys() if k.startswith("X_") and k != "X_umap"]
    if emb_keys and (color or label):
        try:
            import scanpy as sc

            imgs = []
            for k in emb_keys[:6]:
                tmp = adata.copy() if len(emb_keys) > 1 else adata
                sc.pp.neighbors(tmp, use_rep=k, n_neighbors=15)
                sc.tl.umap(tmp, random_state=0)
                axes = ip.pl.embedding(tmp, "umap", color=color + label, show=False, title=[f"{k}: {c}" for c in color + label])
                imgs.append(_fig_to_img((axes[0] if isinstance(axes, list) else axes).figure))
            parts.append(_section("Embeddings (UMAP of each representation)", "".join(imgs)))
        except Exception as e:
            notes.append(f"embedding figures skipped: {e}")
    # Retrieval.
    for rep, mmap in (extras.get("map") or {}).items():
        try:
            if hasattr(ip.pl, "map_scatter"):
                ax = ip.pl.map_scatter(mmap, show=False)
                fig = ax.figure if hasattr(ax, "figure") else plt.gcf()
                fig.suptitle(f"mAP — {rep}")
                img = _fig_to_img(fig)
            else:
                img = ""
            parts.append(_section(f"Retrieval (mAP) — {rep}", img + _table(mmap.sort_values("mean_average_precision", ascending=False), 20)))
        except Exception as e:
            notes.append(f"mAP figure for {rep} skipped: {e}")
    # Benchmark.
    bm = extras.get("benchmark")
    if bm is not None:
        try:
            body = ""
            plot = getattr(ip.pl, "plot_results_table", None) or getattr(ip.pl, "benchmark_table", None)
            if plot is not None:
                res = plot(bm, show=False)
                fig = getattr(res, "figure", None) or plt.gcf()
                body += _fig_to_img(fig)
            body += _table(bm.get_results(tidy=False))
            parts.append(_section("Batch-correction benchmark", body))
        except Exception as e:
            notes.append(f"benchmark figure skipped: {e}")
    # Feature groups.
    if "feature_group" in adata.var.columns and adata.var["feature_group"].notna().any():
        try:
            ax = ip.pl.feature_groups(adata, groupby=["compartment", "feature_group"], show=False)
            parts.append(_section("Feature groups (mean |value|)", _fig_to_img(ax.figure)))
        except Exception as e:
            notes.append(f"feature-group figure skipped: {e}")
    if metrics is not None and len(metrics):
        parts.append(_section("Metrics", _table(metrics, 200)))
    prov = ip.provenance(adata)
    if len(prov):
        prov = prov.assign(params=prov["params"].map(lambda d: ", ".join(f"{k}={v}" for k, v in d.items())))
        parts.append(_section("Provenance", _table(prov[["function", "params", "shape", "time"]], 100)))
    if timings:
        parts.append(_section("Timings (s)", _table(pd.DataFrame({"seconds": timings}))))
    if notes:
        parts.append(_section("Notes", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"))
    cfg_txt = f"<pre>{html.escape(config.text)}</pre>" if config is not None and getattr(config, "text", "") else ""
    if cfg_txt:
        parts.append(_section("Config", cfg_txt))
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>imgprof report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
h1{{border-bottom:2px solid #4C72B0}} h2{{color:#4C72B0;margin-top:1.6em}} img{{max-width:100%;margin:.4em 0}}
.tbl{{border-collapse:collapse;font-size:12px}} .tbl td,.tbl th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}}
pre{{background:#f6f6f6;padding:1em;font-size:12px}}</style></head>
<body><h1>imgprof report</h1><p>imgprof {ip.__version__}</p>{''.join(parts)}</body></html>"""
    from .io._atomic import atomic_write_text

    return atomic_write_text(path, doc)  # temp file + rename: a failure never leaves half a report

"""The sections of the HTML report after the conclusions, one function each.

Private module of :mod:`imgprof.report`: :data:`SECTIONS` lists the section
builders in report order; each appends its HTML to ``ctx.parts`` (a figure that
cannot be drawn adds a line to ``ctx.notes`` instead).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._core.provenance import record
from ._report_html import fig_to_img, para, section, table, ul

#: What each metric measures and which direction is better (shown in the report).
METRIC_GUIDE: dict[str, tuple[str, str]] = {
    "same-batch share (10 NN)": (
        ("Of each non-control well's 10 nearest non-control wells, the share from its own batch. 1 = batches "
        "fully separated; the 'expected' value is what perfect mixing gives."), "lower"),
    "mean mAP (vs controls)": (
        ("Replicate retrieval: how well the wells of one label (here the target gene) find each other ahead of "
        "the negative-control wells (mean average precision, averaged over labels). The biological signal kept."),
        "higher"),
    "fraction active": ("Share of labels whose mAP is significant against the controls (corrected p < 0.05).",
                        "higher"),
    "Isolated labels": ("Silhouette of the labels present in the fewest batches.", "higher"),
    "Leiden NMI / ARI, KMeans NMI / ARI": (
        ("Agreement between clusters of the embedding and the labels (Leiden and k-means clusters; imgprof adds "
        "Leiden to scib-metrics' default set)."), "higher"),
    "Silhouette label": ("How well wells of one label separate from other labels (rescaled to 0–1).", "higher"),
    "cLISI": ("Label purity of each well's neighbourhood (scaled to 0–1).", "higher"),
    "mAP nonrep / mAP negcon": (
        ("Replicate retrieval against wells of other labels / against negative controls (imgprof's additions, "
        "Arevalo et al. 2024)."), "higher"),
    "BRAS": ("Batch-removal silhouette: within each label, how mixed the batches are (0–1).", "higher"),
    "iLISI": (("Batch diversity of each well's neighbourhood, scaled so 0 = one batch only, 1 = all batches "
               "evenly."), "higher"),
    "KBET": ("Share of neighbourhoods whose batch composition matches the overall one (kBET test not rejected).",
             "higher"),
    "Graph connectivity": ("Whether each label's wells form one connected kNN graph.", "higher"),
    "PCR comparison": (
        ("Drop in variance explained by batch relative to the uncorrected PCA; the uncorrected PCA itself scores "
        "0 by construction."), "higher"),
    "Batch correction / Bio conservation / Total": (
        ("Means of the metrics of each kind; Total = 0.4 × batch + 0.6 × bio (scib's weights). A summary that "
        "mixes metrics of different reliability: read the headline numbers first."), "higher"),
}


@dataclass
class ReportContext:
    """What the section builders read, and the HTML parts and notes they write."""

    adata: Any
    metrics: pd.DataFrame
    extras: dict[str, Any]
    config: Any
    timings: dict[str, float] | None
    flags: pd.DataFrame
    prov: pd.DataFrame
    parts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def bm(self) -> Any:
        """The run's Benchmarker (``None`` without a [benchmark] step)."""
        return self.extras.get("benchmark")

    def unpack(self) -> tuple:
        """``adata, metrics, extras, config, timings, flags, prov, parts, notes, bm``."""
        return (self.adata, self.metrics, self.extras, self.config, self.timings, self.flags, self.prov,
                self.parts, self.notes, self.bm)


def warnings_section(ctx: ReportContext) -> None:
    """Every warning of the run, the benchmark's flags and the library's guardrail findings."""
    adata, metrics, extras, config, timings, flags, prov, parts, notes, bm = ctx.unpack()
    warn_rows = list(extras.get("warnings") or [])
    seen = {w["message"] for w in warn_rows}
    for _, f in flags.iterrows():
        if f["message"] not in seen:
            warn_rows.append({"step": "benchmark", "category": f"flag: {f['kind']}", "message": f["message"]})
    for _, row in prov.iterrows():  # guardrail findings recorded by the library itself
        msg = row["extra"].get("guardrail_warning") if isinstance(row["extra"], dict) else None
        if msg and msg not in seen:
            warn_rows.append({"step": row["function"], "category": "FeatureDominanceWarning", "message": msg})
            seen.add(msg)
    if warn_rows:
        wdf = pd.DataFrame(warn_rows)[["step", "category", "message"]]
        body = para(f"{len(wdf)} warning(s) were raised during the run; all are listed.") + \
            "<table class='tbl warn'><tr><th>step</th><th>warning</th><th>message</th></tr>" + "".join(
                f"<tr><td>{html.escape(str(r.step))}</td><td>{html.escape(str(r.category))}</td>"
                f"<td class='msg'>{html.escape(str(r.message))}</td></tr>" for r in wdf.itertuples()) + "</table>"
    else:
        body = para("No warning was raised during the run.")
    parts.append(section("Warnings", body, "warnings"))


def inputs_section(ctx: ReportContext) -> None:
    """What went in: input files, features dropped by the join and by feature selection."""
    adata, metrics, extras, config, timings, flags, prov, parts, notes, bm = ctx.unpack()
    items = []
    for _, row in prov.iterrows():
        if row["function"] == "io.read_input":
            files = row["params"].get("files", [])
            n_obs, n_vars = row["extra"].get("n_obs", []), row["extra"].get("n_vars", [])
            inp = pd.DataFrame({"file": files, "rows": n_obs, "features": n_vars})
            items.append(table(inp, 50, index=False))
            dropped = row["extra"].get("dropped_by_join", [])
            join = row["params"].get("join", "inner")
            items.append(para(f"Features dropped by the {join} join between the files (present in some files "
                            f"only): {len(dropped)}."))
            if dropped:
                items.append("<details><summary>Features dropped by the join</summary><p class='note'>"
                             + html.escape(", ".join(dropped)) + "</p></details>")
        elif row["function"] == "pp.normalize":
            p = row["params"]
            items.append(para(f"normalize: method={p.get('method')}, by={p.get('by')}, "
                            f"fitted on {p.get('controls') or 'all wells'}."))
        elif row["function"] == "pp.feature_select":
            nd = row["extra"].get("n_dropped", {})
            items.append(para("feature_select: " + ", ".join(f"{k} dropped {v}" for k, v in nd.items())
                            + f"; {row['extra'].get('n_kept')} features kept."))
    ev = getattr(config, "sections", {}).get("evaluate", {}) if config is not None else {}
    if ev.get("perturbation_key") in adata.obs.columns:
        lab = adata.obs[ev["perturbation_key"]]
        n_neg = None
        if ev.get("controls"):
            try:
                n_neg = int(adata.obs.eval(ev["controls"]).sum())
            except Exception:
                n_neg = None
        items.append(para(f"Evaluation: replicates = wells sharing {ev['perturbation_key']} ({lab.nunique()} values); "
                        f"negative controls = {ev.get('controls')}" + (f" ({n_neg} wells)." if n_neg is not None else ".")))
    fs = adata.uns.get("feature_select")
    if isinstance(fs, dict) and any(len(v) for v in fs.values()):
        items.append("<details><summary>Features dropped by feature selection</summary>" + ul(
            [f"{op}: {', '.join(map(str, v))}" for op, v in fs.items() if len(v)]) + "</details>")
    summary = pd.DataFrame(
        {"value": [adata.n_obs, adata.n_vars, record(adata).level or "?",
                   ", ".join(adata.obsm.keys()) or "-"]},
        index=["profiles", "features", "level", "embeddings"],
    )
    parts.append(section("What went in", table(summary) + "".join(items), "inputs"))


def guide_section(ctx: ReportContext) -> None:
    """What each metric measures and which direction is better."""
    guide = pd.DataFrame([{"metric": k, "what it measures": v[0], "better": v[1]} for k, v in METRIC_GUIDE.items()])
    ctx.parts.append(section("How to read the metrics", table(guide, 50, index=False), "metric-guide"))


def embeddings_section(ctx: ReportContext) -> None:
    """UMAP of each representation, coloured by batch and by label."""
    adata, metrics, extras, config, timings, flags, prov, parts, notes, bm = ctx.unpack()
    obs = adata.obs
    color = [c for c in ("Metadata_Batch", "Metadata_Plate") if c in obs.columns][:1]
    label = [c for c in ("Metadata_moa", "Metadata_target_gene", "Metadata_Perturbation", "Metadata_pert_type")
             if c in obs.columns][:1]
    emb_keys = [k for k in adata.obsm if k.startswith("X_") and k != "X_umap"][:8]
    if emb_keys and (color or label):
        try:
            w = metrics.pivot_table(index="embedding", columns="metric", values="value", sort=False) \
                if len(metrics) else pd.DataFrame()
            titles = {}
            for k in emb_keys:
                t = k
                if k in w.index and "same_batch_share_10nn" in w:
                    t += f"\nsame-batch {w.loc[k, 'same_batch_share_10nn']:.2f} · mAP {w.loc[k, 'mean_mAP']:.3f}"
                titles[k] = t
            imgs = umap_grids(adata, emb_keys, color + label, titles)
            parts.append(section("Embeddings (UMAP of each representation)", "".join(imgs), "embeddings"))
        except Exception as e:
            notes.append(f"embedding figures skipped: {e}")


def retrieval_section(ctx: ReportContext) -> None:
    """mAP against the negative controls per embedding (table, scatter, per label)."""
    import matplotlib.pyplot as plt

    import imgprof as ip

    adata, metrics, extras, config, timings, flags, prov, parts, notes, bm = ctx.unpack()
    maps = extras.get("map") or {}
    if maps:
        try:
            rows = []
            for rep, mmap in maps.items():
                rows.append({"embedding": rep, "mean mAP": float(mmap["mean_average_precision"].mean()),
                             "fraction active": float(mmap["below_corrected_p"].mean()), "labels": len(mmap)})
            body = table(pd.DataFrame(rows), 50, index=False)
            n = len(maps)
            ncol = min(4, n)
            fig, axes = plt.subplots(int(np.ceil(n / ncol)), ncol, figsize=(3.4 * ncol, 3.0 * np.ceil(n / ncol)),
                                     squeeze=False)
            for ax in axes.ravel():
                ax.axis("off")
            for ax, (rep, mmap) in zip(axes.ravel(), maps.items()):
                ax.axis("on")
                ip.pl.map_scatter(mmap, ax=ax, show=False, title=rep)
            fig.tight_layout()
            body += fig_to_img(fig, "mAP (x) against −log10 corrected p-value (y) per label, one panel per "
                                "embedding; red = significant.")
            body += para("Points at the top of the y axis have the smallest p-value the permutation null can give "
                       "(about 1 / (null_size + 1)); they are not more significant than each other.")
            details = "".join(
                f"<details><summary>mAP per label — {html.escape(rep)}</summary>"
                + table(mmap.drop(columns=[c for c in ("indices",) if c in mmap.columns])
                         .sort_values("mean_average_precision", ascending=False), 50, index=False) + "</details>"
                for rep, mmap in maps.items())
            parts.append(section("Retrieval (mAP against negative controls)", body + details, "retrieval"))
        except Exception as e:
            notes.append(f"mAP figures skipped: {e}")


def benchmark_section(ctx: ReportContext) -> None:
    """The Benchmarker's results table (flags marked)."""
    import imgprof as ip

    adata, metrics, extras, config, timings, flags, prov, parts, notes, bm = ctx.unpack()
    if bm is not None:
        try:
            wide = bm._results_multi(False, True) if hasattr(bm, "_results_multi") else None
            body = ""
            if wide is not None:
                marked = wide.copy()
                circ = set(flags.loc[flags["kind"] == "circular", "embedding"]) if len(flags) else set()
                marked.index = [f"{k} (!)" if k in circ else k for k in marked.index]
                deg = set(flags.loc[flags["kind"] == "degenerate", "metric"]) if len(flags) else set()
                marked.columns = pd.MultiIndex.from_tuples(
                    [(t, f"{m} *" if m in deg else m) for t, m in marked.columns], names=wide.columns.names)
                ax = ip.pl.plot_results_table(marked, show=False)
                body += fig_to_img(ax.figure, "Benchmark results table: one row per embedding, a coloured circle "
                                    "per metric (scaled per column), bars for the aggregate scores.")
                body += para("(!) = flagged as circular; * = flagged as degenerate, it cannot rank the embeddings "
                           "(the reason is under Warnings). Raw (unscaled) values; higher is better for every "
                           "column. Colours are scaled per column.")
                flat = wide.copy()
                flat.columns = [m for _, m in wide.columns]
                body += table(flat.reset_index(), 50, index=False)
            parts.append(section("Batch-correction benchmark (scib-style metrics)", body, "benchmark"))
        except Exception as e:
            notes.append(f"benchmark figure skipped: {e}")


def plate_section(ctx: ReportContext) -> None:
    """Plate maps of the cell count and of QC flags."""
    import imgprof as ip

    adata, metrics, extras, config, timings, flags, prov, parts, notes, bm = ctx.unpack()
    obs = adata.obs
    count_col = next((c for c in ("Metadata_Count_Cells", "Metadata_Object_Count", "Metadata_cell_count")
                      if c in obs.columns), None)
    if {"Metadata_Well"} <= set(obs.columns) and count_col:
        try:
            plate_key = "Metadata_Plate" if "Metadata_Plate" in obs.columns else None
            batch_key = "Metadata_Batch" if "Metadata_Batch" in obs.columns else None
            imgs = []
            groups: list[tuple[str | None, Any]] = [(None, None)]
            if batch_key and obs[batch_key].nunique() > 1:
                groups = [(batch_key, b) for b in pd.unique(obs[batch_key].astype(str))[:2]]
            elif plate_key:
                groups = [(plate_key, p) for p in pd.unique(obs[plate_key].astype(str))[:2]]
            cnt = pd.to_numeric(obs[count_col], errors="coerce")
            lo, hi = float(np.nanmin(cnt)), float(np.nanmax(cnt))  # one colour scale for every plate map
            for key, val in groups:
                sub = adata if key is None else adata[obs[key].astype(str) == val]
                ax = ip.pl.plate_layout(sub, count_col, plate=None, show=False, vmin=lo, vmax=hi)
                if val is not None:
                    ax.set_title(f"{val}\n{count_col}", fontsize=8)
                imgs.append(fig_to_img(ax.figure, f"Plate map of {count_col} per well ({val or 'all wells'})."))
                for c in [c for c in obs.columns if c.startswith("Metadata_qc_")][:2]:
                    ax = ip.pl.plate_layout(sub, c, show=False, cmap="Reds")
                    imgs.append(fig_to_img(ax.figure, f"Plate map of QC flag {c} ({val or 'all wells'}); "
                                            "white = 0 (not flagged)."))
            parts.append(section("Plate layout", "<div class='row'>" + "".join(
                f"<div>{im}</div>" for im in imgs) + "</div>", "plate"))
        except Exception as e:
            notes.append(f"plate layout skipped: {e}")


def features_section(ctx: ReportContext) -> None:
    """Mean absolute value per compartment and feature group."""
    import imgprof as ip

    adata, metrics, extras, config, timings, flags, prov, parts, notes, bm = ctx.unpack()
    if "feature_group" in adata.var.columns and adata.var["feature_group"].notna().any():
        try:
            ax = ip.pl.feature_groups(adata, groupby=["compartment", "feature_group"], show=False)
            parts.append(section("Feature groups (mean |value|)", fig_to_img(
                ax.figure, "Mean absolute value of the features of each compartment and feature group.")))
        except Exception as e:
            notes.append(f"feature-group figure skipped: {e}")


def tables_section(ctx: ReportContext) -> None:
    """Metrics, provenance, timings, notes and the config."""
    adata, metrics, extras, config, timings, flags, prov, parts, notes, bm = ctx.unpack()
    if len(metrics):
        parts.append(section("Metrics (all)", "<details><summary>Long table</summary>"
                              + table(metrics, 400, index=False) + "</details>"))
    if len(prov):
        pv = prov.assign(params=prov["params"].map(
            lambda d: ", ".join(f"{k}={v}" for k, v in d.items() if k not in ("files",))))
        parts.append(section("Provenance", table(pv[["function", "params", "shape", "time"]], 100, index=False)))
    if timings:
        parts.append(section("Timings (s)", table(pd.DataFrame({"seconds": timings}))))
    if notes:
        parts.append(section("Notes", ul(notes)))
    if config is not None and str(getattr(config, "text", None) or ""):
        parts.append(section("Config", f"<pre>{html.escape(config.text)}</pre>"))


def umap_grids(adata: Any, emb_keys: list[str], color_keys: list[str], titles: dict[str, str]) -> list[str]:
    """One figure per colour key: a panel per embedding, one legend below (never truncated)."""
    import matplotlib.pyplot as plt
    import scanpy as sc

    coords = {}
    for k in emb_keys:
        tmp = sc.AnnData(np.asarray(adata.obsm[k], dtype=np.float32))
        sc.pp.neighbors(tmp, use_rep="X", n_neighbors=15)
        sc.tl.umap(tmp, random_state=0)
        coords[k] = tmp.obsm["X_umap"]
    imgs = []
    ncol = min(4, len(emb_keys))
    nrow = int(np.ceil(len(emb_keys) / ncol))
    palette = plt.get_cmap("tab10")
    for col in color_keys:
        cats = pd.Categorical(adata.obs[col].astype(str))
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 3.3 * nrow + 0.3), squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for i, k in enumerate(emb_keys):
            ax = axes.ravel()[i]
            U = coords[k]
            for j, c in enumerate(cats.categories):
                sel = np.asarray(cats == c)
                ax.scatter(U[sel, 0], U[sel, 1], s=6, color=palette(j % 10), label=c, linewidths=0, alpha=0.8)
            ax.set_title(titles.get(k, k), fontsize=9)
        handles, labels = axes.ravel()[0].get_legend_handles_labels()
        fig.tight_layout()
        # below the panels (upper edge of the legend at the figure's bottom): never over a panel, never cut
        fig.legend(handles, labels, loc="upper center", ncol=1 if max(map(len, labels)) > 30 else min(6, len(labels)),
                   fontsize=9, frameon=False, markerscale=2.5, title=col, title_fontsize=9,
                   bbox_to_anchor=(0.5, 0.0))
        alt = (f"UMAP of each embedding ({', '.join(emb_keys)}), wells coloured by {col}; "
               f"{len(cats.categories)} categories, legend below.")
        imgs.append(fig_to_img(fig, alt))
    return imgs


#: Section builders in report order (after the conclusions and "not supported").
SECTIONS: list[Callable[[ReportContext], None]] = [
    warnings_section, inputs_section, guide_section, embeddings_section, retrieval_section, benchmark_section, plate_section,
    features_section, tables_section,
]

"""A self-contained HTML report (figures embedded as PNG) for a pipeline run.

The report is written to be read by a scientist choosing a method: it opens
with the conclusions the numbers support (each correction against an
uncorrected baseline in the same space), what the data do *not* support,
every warning raised during the run, what went in, and what each metric
measures and which direction is better; figures and full tables follow.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Thresholds of the headline verdict (same-batch share drop, tolerated mAP change).
SHARE_GAIN = 0.10
MAP_TOLERANCE = 0.02

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


def _fig_to_img(fig, alt: str) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=110)
    plt.close(fig)
    return (f'<img alt="{html.escape(alt, quote=True)}" title="{html.escape(alt, quote=True)}" '
            f'src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>')


def _table(df: pd.DataFrame, max_rows: int = 40, index: bool | None = None) -> str:
    """HTML table; a default RangeIndex is never shown (it is not data)."""
    if index is None:
        index = not isinstance(df.index, pd.RangeIndex)
    more = f"<p class='note'>First {max_rows} of {len(df)} rows.</p>" if len(df) > max_rows else ""
    return df.head(max_rows).to_html(classes="tbl", float_format=lambda x: f"{x:.3f}", border=0, index=index,
                                     na_rep="–") + more


def _section(title: str, body: str, sid: str | None = None) -> str:
    ident = f' id="{sid}"' if sid else ""
    return f"<section{ident}><h2>{html.escape(title)}</h2>{body}</section>"


def _p(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _ul(items: list[str], cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f"<ul{c}>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def _made_by(adata) -> dict[str, dict]:
    """For each .obsm key, the provenance entry that wrote it."""
    import imgprof as ip

    out: dict[str, dict] = {}
    prov = ip.provenance(adata)
    for _, row in prov.iterrows():
        key = row["extra"].get("key_added") if isinstance(row["extra"], dict) else None
        if key is not None:
            out[key] = {"function": row["function"], "params": row["params"], "extra": row["extra"]}
    return out


def _baseline_of(key: str, made: dict[str, dict], keys: list[str]) -> str | None:
    info = made.get(key)
    if info is None or info["function"] in ("tl.no_correction", "tl.pca") or key == "X_pca":
        return None
    space = info["params"].get("use_rep") or "X"
    if space == "X":
        nones = [k for k in keys if made.get(k, {}).get("function") == "tl.no_correction"
                 and (made[k]["params"].get("use_rep") or "X") == "X"]
        return nones[0] if nones else ("X" if "X" in keys else None)
    return space if space in keys else None


def _method_name(key: str) -> str:
    if key == "X_pca":
        return "uncorrected PCA"
    if key in ("X_none", "X"):
        return "none (uncorrected features)"
    return key.removeprefix("X_")


def _conclusions(adata, metrics: pd.DataFrame, extras: dict, flags: pd.DataFrame) -> tuple[str, list[str], pd.DataFrame]:
    """Headline table (each correction vs its same-space baseline), verdict sentences, the numbers."""
    m = metrics[metrics["metric"].isin(["mean_mAP", "same_batch_share_10nn", "same_batch_share_expected",
                                        "fraction_active"])]
    if m.empty or "same_batch_share_10nn" not in set(m["metric"]):
        return "", [], pd.DataFrame()
    wide = m.pivot_table(index="embedding", columns="metric", values="value", sort=False)
    keys = list(wide.index)
    made = _made_by(adata)
    maps = extras.get("map") or {}
    circular = set(flags.loc[flags["kind"] == "circular", "embedding"]) if len(flags) else set()
    rows, sentences = [], []
    for key in keys:
        base = _baseline_of(key, made, keys)
        if base is None or base not in wide.index:
            continue
        sh, sh0 = wide.loc[key, "same_batch_share_10nn"], wide.loc[base, "same_batch_share_10nn"]
        mp, mp0 = wide.loc[key, "mean_mAP"], wide.loc[base, "mean_mAP"]
        se = np.nan
        if key in maps and base in maps:
            lab = [c for c in maps[key].columns if c not in ("mean_average_precision", "p_value", "corrected_p_value",
                                                               "below_p", "below_corrected_p", "indices")]
            if lab:
                a = maps[key].set_index(lab[0])["mean_average_precision"]
                b = maps[base].set_index(lab[0])["mean_average_precision"]
                d = (a - b.reindex(a.index)).dropna()
                if len(d) > 1:
                    se = float(d.std(ddof=1) / np.sqrt(len(d)))
        E = adata.X if key == "X" else adata.obsm.get(key)
        E0 = adata.X if base == "X" else adata.obsm.get(base)
        identical = False
        if E is not None and E0 is not None and np.shape(E) == np.shape(E0):
            A, A0 = np.asarray(E, dtype=float), np.asarray(E0, dtype=float)
            identical = bool(np.linalg.norm(A - A0) <= 1e-2 * max(np.linalg.norm(A0), 1e-12))
        name = _method_name(key)
        if key in circular:
            verdict = "not comparable (flagged: tuned or fitted on what it is evaluated with)"
        elif identical:
            verdict = "practically identical to its baseline (changes < 1 % of its norm)"
        elif sh - sh0 <= -SHARE_GAIN and abs(mp - mp0) <= MAP_TOLERANCE:
            verdict = "mixes batches clearly better and keeps the gene signal"
        elif sh - sh0 <= -SHARE_GAIN and mp - mp0 > MAP_TOLERANCE:
            verdict = "mixes batches clearly better; replicate mAP higher"
        elif sh - sh0 <= -SHARE_GAIN:
            verdict = "mixes batches clearly better but loses gene signal"
        else:
            verdict = "no clear gain in batch mixing"
        rows.append({
            "method": name, "baseline (same space)": _method_name(base),
            "same-batch share": sh, "baseline share": sh0, "Δ share": sh - sh0,
            "mAP": mp, "baseline mAP": mp0, "Δ mAP": mp - mp0, "SE of Δ mAP (over labels)": se,
            "verdict": verdict,
        })
        if verdict.startswith("mixes batches clearly better and keeps"):
            sentences.append(
                f"{name} mixes the batches clearly better than its baseline, {_method_name(base)}: the "
                f"share of same-batch wells among the 10 nearest non-control wells falls from {sh0:.2f} to {sh:.2f}, "
                f"while target-gene replicate mAP stays within {MAP_TOLERANCE} ({mp0:.3f} → {mp:.3f}).")
    table = pd.DataFrame(rows)
    if table.empty:
        return "", [], table
    exp = float(wide["same_batch_share_expected"].iloc[0]) if "same_batch_share_expected" in wide else np.nan
    if not sentences:
        sentences.append(
            f"No correction both lowers the same-batch share by at least {SHARE_GAIN:.2f} and keeps replicate mAP "
            f"within {MAP_TOLERANCE} of its baseline: on these data no method can be recommended on batch mixing.")
    body = "<div class='conclusion'>" + "".join(f"<p><b>{html.escape(s)}</b></p>" for s in sentences) + "</div>"
    body += _p(
        f"Each correction is compared with the uncorrected profiles in its own space (harmony starts from the PCA, "
        f"so its baseline is the PCA; methods working on the features are compared with 'none'). Verdict: "
        f"'clearly better' = same-batch share at least {SHARE_GAIN:.2f} lower; 'keeps the gene signal' = mAP within "
        f"{MAP_TOLERANCE}. Perfect mixing would give a same-batch share of about {exp:.2f}.")
    styled = table.copy()
    body += _table(styled, 50, index=False)
    return body, sentences, table


def _not_supported(metrics: pd.DataFrame, table: pd.DataFrame, flags: pd.DataFrame, adata, extras) -> list[str]:
    out: list[str] = []
    w = metrics.pivot_table(index="embedding", columns="metric", values="value", sort=False) if len(metrics) else None
    if w is not None and "same_batch_share_10nn" in w:
        best = w["same_batch_share_10nn"].min()
        exp = float(w["same_batch_share_expected"].iloc[0]) if "same_batch_share_expected" in w else np.nan
        if np.isfinite(exp) and best > exp + 0.05:
            out.append(f"That any method removes the batch effect: the lowest same-batch share is {best:.2f}, "
                       f"against about {exp:.2f} under perfect mixing.")
    if w is not None and "Total" in w:
        tot = w["Total"].dropna().sort_values(ascending=False)
        if len(tot) > 1:
            out.append(f"A ranking by the aggregate 'Total' score ({tot.index[0]} {tot.iloc[0]:.3f} … "
                       f"{tot.index[-1]} {tot.iloc[-1]:.3f}): it averages metrics of unequal reliability (see the "
                       "warnings), some of them degenerate; rely on the headline comparison above.")
    if len(flags):
        for emb in sorted(set(flags.loc[flags["kind"] == "circular", "embedding"])):
            v = w.loc[emb, "mean_mAP"] if w is not None and emb in w.index and "mean_mAP" in w else np.nan
            msgs = " ".join(flags.loc[(flags["kind"] == "circular") & (flags["embedding"] == emb), "message"])
            why = []
            if "fitted on" in msgs:
                why.append("it was fitted on the control wells that serve as the negatives")
            if "tuned on" in msgs or "hyperparameter" in msgs:
                why.append("its hyperparameter was chosen on the label it is scored with")
            out.append(f"That {_method_name(emb)} preserves biology better: its mAP against the controls "
                       f"({v:.3f}) is inflated because " + (" and ".join(why) or "it is circular") + ".")
        deg = flags.loc[flags["kind"] == "degenerate", "metric"].tolist()
        if deg:
            out.append("Any difference between methods on " + ", ".join(deg) + ": flagged as degenerate (see "
                       "Warnings for the reason); it still moves the aggregate scores.")
    if w is not None and "fraction_active" in w and w["fraction_active"].nunique() == 1 and len(w) > 1:
        out.append(f"A difference in 'fraction active': {w['fraction_active'].iloc[0]:.2f} for every embedding.")
    if len(table) and "SE of Δ mAP (over labels)" in table:
        small = table[(table["Δ mAP"].abs() < 2 * table["SE of Δ mAP (over labels)"])]
        if len(small):
            out.append("That mAP differs between " + ", ".join(f"{r['method']} and {r['baseline (same space)']}"
                       for _, r in small.iterrows()) + ": the change is smaller than two standard errors over labels.")
    ident = table.loc[table["verdict"].str.startswith("practically identical"), "method"].tolist() if len(table) else []
    for name in ident:
        why = (" (ComBat adjusts each batch's mean and scale, which per-batch standardization has already done)"
               if name == "combat" else "")
        out.append(f"Any effect of {name} here: its output is practically its baseline's{why}.")
    labels = None
    for col in ("Metadata_target_gene", "Metadata_moa", "Metadata_Perturbation"):
        if col in adata.obs.columns:
            labels = col
            break
    if labels is not None:
        n_lab = adata.obs[labels].nunique()
        out.append(f"Conclusions beyond this dataset: {adata.n_obs} wells, {n_lab} values of {labels} "
                   f"(controls included); label-based metrics rest on few labels.")
    return out


def _evaluation_flags(adata, config) -> pd.DataFrame:
    """Without a Benchmarker: flag embeddings tuned on the evaluation label or fitted on its controls."""
    rows = []
    ev = getattr(config, "sections", {}).get("evaluate", {}) if config is not None else {}
    label, controls = ev.get("perturbation_key"), ev.get("controls")
    neg = None
    if isinstance(controls, str):
        try:
            neg = adata.obs.eval(controls).to_numpy(dtype=bool)
        except Exception:
            neg = None
    for key, info in _made_by(adata).items():
        extra = info["extra"]
        if label is not None and extra.get("tuned_on_label") == label:
            rows.append({"embedding": key, "metric": "mAP", "kind": "circular",
                         "message": f"{key}: tuned on {label!r}, the label mAP is computed on."})
        fitted = extra.get("fitted_on_rows")
        if neg is not None and fitted is not None and len(neg) == adata.n_obs and neg[np.asarray(fitted, int)].any():
            rows.append({"embedding": key, "metric": "mAP", "kind": "circular",
                         "message": f"{key}: fitted on {extra.get('fitted_on')!r}, the negative controls of mAP."})
    return pd.DataFrame(rows, columns=["embedding", "metric", "kind", "message"])


def _umap_grids(adata, emb_keys: list[str], color_keys: list[str], titles: dict[str, str]) -> list[str]:
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
        imgs.append(_fig_to_img(fig, alt))
    return imgs


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

    Sections: conclusions (each correction against an uncorrected baseline in
    the same space: same-batch share among the 10 nearest non-control
    neighbours and replicate mAP), what the data do not support, every warning
    raised during the run and every guardrail flag of the benchmark, what
    went in (input files, features dropped by the join, by feature
    selection), what each metric measures and which direction is better;
    then figures (UMAPs coloured by batch and label, mAP, benchmark table,
    plate layout, feature groups) and tables (metrics, provenance, timings,
    config). A figure that cannot be drawn is listed with the reason.

    Parameters
    ----------
    adata
        The processed profiles.
    path
        Output ``.html`` file.
    metrics
        Long metrics table (``embedding``, ``metric``, ``value``) of a run.
    extras
        ``{"map": {embedding: mAP table}, "benchmark": Benchmarker, "warnings": [...]}`` from
        :func:`imgprof.pipeline.run_pipeline`.
    config
        The run's :class:`imgprof.pipeline.Config` (its text is shown).
    timings
        Seconds per step.

    Returns
    -------
    The path written.

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
    metrics = metrics if metrics is not None else pd.DataFrame(columns=["embedding", "metric", "value"])
    parts: list[str] = []
    notes: list[str] = []
    bm = extras.get("benchmark")
    flags = bm.flags if bm is not None and hasattr(bm, "flags") else pd.DataFrame(
        columns=["embedding", "metric", "kind", "message"])
    prov = ip.provenance(adata)
    if bm is None:
        flags = _evaluation_flags(adata, config)

    # ------------------------------------------------------------------ conclusions
    conc_html, _, conc_table = "", [], pd.DataFrame()
    try:
        conc_html, _, conc_table = _conclusions(adata, metrics, extras, flags)
    except Exception as e:
        notes.append(f"conclusions skipped: {e}")
    if conc_html:
        parts.append(_section("Conclusions", conc_html, "conclusions"))
    try:
        ns = _not_supported(metrics, conc_table, flags, adata, extras)
        if ns:
            parts.append(_section("What these data do not support", _ul(ns), "not-supported"))
    except Exception as e:
        notes.append(f"'not supported' list skipped: {e}")

    # ------------------------------------------------------------------ warnings
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
        body = _p(f"{len(wdf)} warning(s) were raised during the run; all are listed.") + \
            "<table class='tbl warn'><tr><th>step</th><th>warning</th><th>message</th></tr>" + "".join(
                f"<tr><td>{html.escape(str(r.step))}</td><td>{html.escape(str(r.category))}</td>"
                f"<td class='msg'>{html.escape(str(r.message))}</td></tr>" for r in wdf.itertuples()) + "</table>"
    else:
        body = _p("No warning was raised during the run.")
    parts.append(_section("Warnings", body, "warnings"))

    # ------------------------------------------------------------------ inputs
    items = []
    for _, row in prov.iterrows():
        if row["function"] == "io.read_input":
            files = row["params"].get("files", [])
            n_obs, n_vars = row["extra"].get("n_obs", []), row["extra"].get("n_vars", [])
            inp = pd.DataFrame({"file": files, "rows": n_obs, "features": n_vars})
            items.append(_table(inp, 50, index=False))
            dropped = row["extra"].get("dropped_by_join", [])
            join = row["params"].get("join", "inner")
            items.append(_p(f"Features dropped by the {join} join between the files (present in some files "
                            f"only): {len(dropped)}."))
            if dropped:
                items.append("<details><summary>Features dropped by the join</summary><p class='note'>"
                             + html.escape(", ".join(dropped)) + "</p></details>")
        elif row["function"] == "pp.normalize":
            p = row["params"]
            items.append(_p(f"normalize: method={p.get('method')}, by={p.get('by')}, "
                            f"fitted on {p.get('controls') or 'all wells'}."))
        elif row["function"] == "pp.feature_select":
            nd = row["extra"].get("n_dropped", {})
            items.append(_p("feature_select: " + ", ".join(f"{k} dropped {v}" for k, v in nd.items())
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
        items.append(_p(f"Evaluation: replicates = wells sharing {ev['perturbation_key']} ({lab.nunique()} values); "
                        f"negative controls = {ev.get('controls')}" + (f" ({n_neg} wells)." if n_neg is not None else ".")))
    fs = adata.uns.get("feature_select")
    if isinstance(fs, dict) and any(len(v) for v in fs.values()):
        items.append("<details><summary>Features dropped by feature selection</summary>" + _ul(
            [f"{op}: {', '.join(map(str, v))}" for op, v in fs.items() if len(v)]) + "</details>")
    summary = pd.DataFrame(
        {"value": [adata.n_obs, adata.n_vars, adata.uns.get("imgprof", {}).get("level", "?"),
                   ", ".join(adata.obsm.keys()) or "-"]},
        index=["profiles", "features", "level", "embeddings"],
    )
    parts.append(_section("What went in", _table(summary) + "".join(items), "inputs"))

    # ------------------------------------------------------------------ metric guide
    guide = pd.DataFrame([{"metric": k, "what it measures": v[0], "better": v[1]} for k, v in METRIC_GUIDE.items()])
    parts.append(_section("How to read the metrics", _table(guide, 50, index=False), "metric-guide"))

    # ------------------------------------------------------------------ embeddings
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
            imgs = _umap_grids(adata, emb_keys, color + label, titles)
            parts.append(_section("Embeddings (UMAP of each representation)", "".join(imgs), "embeddings"))
        except Exception as e:
            notes.append(f"embedding figures skipped: {e}")

    # ------------------------------------------------------------------ retrieval
    maps = extras.get("map") or {}
    if maps:
        try:
            rows = []
            for rep, mmap in maps.items():
                rows.append({"embedding": rep, "mean mAP": float(mmap["mean_average_precision"].mean()),
                             "fraction active": float(mmap["below_corrected_p"].mean()), "labels": len(mmap)})
            body = _table(pd.DataFrame(rows), 50, index=False)
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
            body += _fig_to_img(fig, "mAP (x) against −log10 corrected p-value (y) per label, one panel per "
                                "embedding; red = significant.")
            body += _p("Points at the top of the y axis have the smallest p-value the permutation null can give "
                       "(about 1 / (null_size + 1)); they are not more significant than each other.")
            details = "".join(
                f"<details><summary>mAP per label — {html.escape(rep)}</summary>"
                + _table(mmap.drop(columns=[c for c in ("indices",) if c in mmap.columns])
                         .sort_values("mean_average_precision", ascending=False), 50, index=False) + "</details>"
                for rep, mmap in maps.items())
            parts.append(_section("Retrieval (mAP against negative controls)", body + details, "retrieval"))
        except Exception as e:
            notes.append(f"mAP figures skipped: {e}")

    # ------------------------------------------------------------------ benchmark
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
                body += _fig_to_img(ax.figure, "Benchmark results table: one row per embedding, a coloured circle "
                                    "per metric (scaled per column), bars for the aggregate scores.")
                body += _p("(!) = flagged as circular; * = flagged as degenerate, it cannot rank the embeddings "
                           "(the reason is under Warnings). Raw (unscaled) values; higher is better for every "
                           "column. Colours are scaled per column.")
                flat = wide.copy()
                flat.columns = [m for _, m in wide.columns]
                body += _table(flat.reset_index(), 50, index=False)
            parts.append(_section("Batch-correction benchmark (scib-style metrics)", body, "benchmark"))
        except Exception as e:
            notes.append(f"benchmark figure skipped: {e}")

    # ------------------------------------------------------------------ plate layouts
    count_col = next((c for c in ("Metadata_Count_Cells", "Metadata_Object_Count", "Metadata_cell_count")
                      if c in obs.columns), None)
    if {"Metadata_Well"} <= set(obs.columns) and count_col:
        try:
            plate_key = "Metadata_Plate" if "Metadata_Plate" in obs.columns else None
            batch_key = "Metadata_Batch" if "Metadata_Batch" in obs.columns else None
            imgs = []
            groups = [(None, None)]
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
                imgs.append(_fig_to_img(ax.figure, f"Plate map of {count_col} per well ({val or 'all wells'})."))
                for c in [c for c in obs.columns if c.startswith("Metadata_qc_")][:2]:
                    ax = ip.pl.plate_layout(sub, c, show=False, cmap="Reds")
                    imgs.append(_fig_to_img(ax.figure, f"Plate map of QC flag {c} ({val or 'all wells'}); "
                                            "white = 0 (not flagged)."))
            parts.append(_section("Plate layout", "<div class='row'>" + "".join(
                f"<div>{im}</div>" for im in imgs) + "</div>", "plate"))
        except Exception as e:
            notes.append(f"plate layout skipped: {e}")

    # ------------------------------------------------------------------ features, tables
    if "feature_group" in adata.var.columns and adata.var["feature_group"].notna().any():
        try:
            ax = ip.pl.feature_groups(adata, groupby=["compartment", "feature_group"], show=False)
            parts.append(_section("Feature groups (mean |value|)", _fig_to_img(
                ax.figure, "Mean absolute value of the features of each compartment and feature group.")))
        except Exception as e:
            notes.append(f"feature-group figure skipped: {e}")
    if len(metrics):
        parts.append(_section("Metrics (all)", "<details><summary>Long table</summary>"
                              + _table(metrics, 400, index=False) + "</details>"))
    if len(prov):
        pv = prov.assign(params=prov["params"].map(
            lambda d: ", ".join(f"{k}={v}" for k, v in d.items() if k not in ("files",))))
        parts.append(_section("Provenance", _table(pv[["function", "params", "shape", "time"]], 100, index=False)))
    if timings:
        parts.append(_section("Timings (s)", _table(pd.DataFrame({"seconds": timings}))))
    if notes:
        parts.append(_section("Notes", _ul(notes)))
    if config is not None and getattr(config, "text", ""):
        parts.append(_section("Config", f"<pre>{html.escape(config.text)}</pre>"))
    toc = " · ".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("conclusions", "Conclusions"), ("not-supported", "Not supported"), ("warnings", "Warnings"),
        ("inputs", "Inputs"), ("metric-guide", "Metrics"), ("embeddings", "Embeddings"), ("retrieval", "mAP"),
        ("benchmark", "Benchmark")))
    doc = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>imgprof report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;color:#222;line-height:1.4}}
h1{{border-bottom:2px solid #4C72B0}} h2{{color:#4C72B0;margin-top:1.6em}} img{{max-width:100%;margin:.4em 0}}
.tbl{{border-collapse:collapse;font-size:12px;margin:.4em 0}} .tbl td,.tbl th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}}
.row{{display:flex;gap:1em;flex-wrap:wrap}} .row>div{{flex:1 1 45%}}
.tbl td.msg{{text-align:left;max-width:760px}} .warn td{{background:#fff8e6}}
.conclusion{{background:#eef5ee;border-left:4px solid #55a868;padding:.3em 1em}} .note{{color:#666;font-size:12px}}
nav{{font-size:13px}} details{{margin:.3em 0}} pre{{background:#f6f6f6;padding:1em;font-size:12px;overflow-x:auto}}</style></head>
<body><h1>imgprof report</h1><p>imgprof {ip.__version__}</p><nav>{toc}</nav>{''.join(parts)}</body></html>"""
    from .io._atomic import atomic_write_text

    return atomic_write_text(path, doc)  # temp file + rename: a failure never leaves half a report

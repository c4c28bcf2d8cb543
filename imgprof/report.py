"""A self-contained HTML report (figures embedded as PNG) for a pipeline run.

The report is written to be read by a scientist choosing a method: it opens
with the conclusions the numbers support (each correction against an
uncorrected baseline in the same space), what the data do *not* support,
every warning raised during the run, what went in, and what each metric
measures and which direction is better; figures and full tables follow.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._report_html import para, section, ul
from ._report_html import table as html_table
from ._report_sections import METRIC_GUIDE, SECTIONS, ReportContext

__all__ = ["MAP_TOLERANCE", "METRIC_GUIDE", "SHARE_GAIN", "write_report"]

#: Thresholds of the headline verdict (same-batch share drop, tolerated mAP change).
SHARE_GAIN = 0.10
MAP_TOLERANCE = 0.02

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


def _delta_map_se(maps: dict, key: str, base: str) -> float:
    """Standard error over labels of the mAP difference between ``key`` and its baseline."""
    if key not in maps or base not in maps:
        return np.nan
    lab = [c for c in maps[key].columns if c not in ("mean_average_precision", "p_value", "corrected_p_value",
                                                       "below_p", "below_corrected_p", "indices")]
    if not lab:
        return np.nan
    a = maps[key].set_index(lab[0])["mean_average_precision"]
    b = maps[base].set_index(lab[0])["mean_average_precision"]
    d = (a - b.reindex(a.index)).dropna()
    return float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else np.nan


def _identical(adata: Any, key: str, base: str) -> bool:
    """Whether the representation differs from its baseline by less than 1 % of the baseline's norm."""
    E = adata.X if key == "X" else adata.obsm.get(key)
    E0 = adata.X if base == "X" else adata.obsm.get(base)
    if E is None or E0 is None or np.shape(E) != np.shape(E0):
        return False
    A, A0 = np.asarray(E, dtype=float), np.asarray(E0, dtype=float)
    return bool(np.linalg.norm(A - A0) <= 1e-2 * max(float(np.linalg.norm(A0)), 1e-12))


def _verdict(circular: bool, identical: bool, d_share: float, d_map: float) -> str:
    if circular:
        return "not comparable (flagged: tuned or fitted on what it is evaluated with)"
    if identical:
        return "practically identical to its baseline (changes < 1 % of its norm)"
    if d_share <= -SHARE_GAIN and abs(d_map) <= MAP_TOLERANCE:
        return "mixes batches clearly better and keeps the gene signal"
    if d_share <= -SHARE_GAIN and d_map > MAP_TOLERANCE:
        return "mixes batches clearly better; replicate mAP higher"
    if d_share <= -SHARE_GAIN:
        return "mixes batches clearly better but loses gene signal"
    return "no clear gain in batch mixing"


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
        se = _delta_map_se(maps, key, base)
        name = _method_name(key)
        verdict = _verdict(key in circular, _identical(adata, key, base), sh - sh0, mp - mp0)
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
    body += para(
        f"Each correction is compared with the uncorrected profiles in its own space (harmony starts from the PCA, "
        f"so its baseline is the PCA; methods working on the features are compared with 'none'). Verdict: "
        f"'clearly better' = same-batch share at least {SHARE_GAIN:.2f} lower; 'keeps the gene signal' = mAP within "
        f"{MAP_TOLERANCE}. Perfect mixing would give a same-batch share of about {exp:.2f}.")
    styled = table.copy()
    body += html_table(styled, 50, index=False)
    return body, sentences, table


def _flagged_claims(flags: pd.DataFrame, w: pd.DataFrame | None) -> list[str]:
    """Claims the benchmark's circular and degenerate flags rule out."""
    out: list[str] = []
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
    return out


def _not_supported(metrics: pd.DataFrame, table: pd.DataFrame, flags: pd.DataFrame, adata: Any, extras: dict) -> list[str]:
    """Claims the numbers do not support (each with the reason)."""
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
        out += _flagged_claims(flags, w)
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


def _conclusion_sections(c: ReportContext) -> None:
    """Conclusions (each correction against its baseline) and what the data do not support."""
    conc_html, conc_table = "", pd.DataFrame()
    try:
        conc_html, _, conc_table = _conclusions(c.adata, c.metrics, c.extras, c.flags)
    except Exception as e:
        c.notes.append(f"conclusions skipped: {e}")
    if conc_html:
        c.parts.append(section("Conclusions", conc_html, "conclusions"))
    try:
        ns = _not_supported(c.metrics, conc_table, c.flags, c.adata, c.extras)
        if ns:
            c.parts.append(section("What these data do not support", ul(ns), "not-supported"))
    except Exception as e:
        c.notes.append(f"'not supported' list skipped: {e}")


def write_report(
    adata: Any,
    path: str | os.PathLike,
    *,
    metrics: pd.DataFrame | None = None,
    extras: dict[str, Any] | None = None,
    config: Any = None,
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

    import imgprof as ip

    extras = extras or {}
    metrics = metrics if metrics is not None else pd.DataFrame(columns=["embedding", "metric", "value"])
    bm = extras.get("benchmark")
    flags = bm.flags if bm is not None and hasattr(bm, "flags") else pd.DataFrame(
        columns=["embedding", "metric", "kind", "message"])
    if bm is None:
        flags = _evaluation_flags(adata, config)
    c = ReportContext(adata=adata, metrics=metrics, extras=extras, config=config, timings=timings, flags=flags,
                      prov=ip.provenance(adata))
    _conclusion_sections(c)
    for build in SECTIONS:
        build(c)
    parts = c.parts
    toc = " · ".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("conclusions", "Conclusions"), ("not-supported", "Not supported"), ("warnings", "Warnings"),
        ("inputs", "Inputs"), ("metric-guide", "Metrics"), ("embeddings", "Embeddings"), ("retrieval", "mAP"),
        ("benchmark", "Benchmark")))
    doc = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>imgprof report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;color:#222;line-height:1.4}}
h1{{border-bottom:2px solid #4C72B0}} h2{{color:#4C72B0;margin-top:1.6em}} img{{max-width:100%;margin:.4em 0}}
.tbl{{border-collapse:collapse;font-size:12px;margin:.4em 0}} .tbl td,.tbl th{{padding:2px 8px;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top}}
.row{{display:flex;gap:1em;flex-wrap:wrap}} .row>div{{flex:1 1 45%}}
.tbl td.msg{{text-align:left;max-width:760px}} .warn td{{background:#fff8e6}}
.conclusion{{background:#eef5ee;border-left:4px solid #55a868;padding:.3em 1em}} .note{{color:#666;font-size:12px}}
nav{{font-size:13px}} details{{margin:.3em 0}} pre{{background:#f6f6f6;padding:1em;font-size:12px;overflow-x:auto}}</style></head>
<body><h1>imgprof report</h1><p>imgprof {ip.__version__}</p><nav>{toc}</nav>{''.join(parts)}</body></html>"""
    from .io._atomic import atomic_write_text

    return atomic_write_text(path, doc)  # temp file + rename: a failure never leaves half a report

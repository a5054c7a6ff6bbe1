"""Plotly figures for calibration and evaluation, built from :mod:`core.calibration.metrics` data.

Why separate: the evaluate report and the dashboard draw the same charts, so
they share one implementation. Each function takes plain data (curve dicts
from :mod:`core.calibration.metrics`, or probabilities and labels) and returns a
``plotly.graph_objects.Figure``; nothing here touches files or Streamlit.
A ``curves`` argument is either one curve dict or a mapping name → curve dict,
so before/after or per-source comparisons are one call.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy.stats import norm

from core.calibration import metrics as M

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf")
_DET_TICKS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95)
_DET_CLIP = 5e-4


def _named(curves: Mapping[str, Any], marker: str) -> dict[str, Mapping[str, Any]]:
    """Accept one curve dict (recognised by ``marker``) or a mapping of them."""
    return {"model": curves} if marker in curves else dict(curves)


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white",
                      legend={"orientation": "h", "y": -0.2}, margin={"t": 60, "b": 40})
    return fig


def reliability_figure(curves: Mapping[str, Any], title: str = "Reliability diagram") -> go.Figure:
    """Observed share of fakes against mean predicted probability per bin (from ``metrics.reliability_curve``).

    Marker size follows the bin count; error bars are 95% Wilson intervals.
    """
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line={"dash": "dash", "color": "#999"}))
    for i, (name, c) in enumerate(_named(curves, "mean_predicted").items()):
        counts = np.asarray(c["count"], dtype=float)
        size = 6 + 14 * np.sqrt(counts / counts.max()) if counts.size else []
        frac = np.asarray(c["fraction_fake"], dtype=float)
        fig.add_trace(go.Scatter(
            x=c["mean_predicted"], y=c["fraction_fake"], mode="lines+markers",
            name=f"{name} (ECE {c['ece']:.3f})", marker={"size": size, "color": _COLOURS[i % len(_COLOURS)]},
            line={"color": _COLOURS[i % len(_COLOURS)]},
            error_y={"type": "data", "symmetric": False, "array": (np.asarray(c["ci_high"]) - frac).tolist(),
                     "arrayminus": (frac - np.asarray(c["ci_low"])).tolist(), "thickness": 1},
            customdata=np.stack([c["count"], c["bin_lower"], c["bin_upper"]], axis=-1) if counts.size else None,
            hovertemplate="predicted %{x:.3f}<br>observed %{y:.3f}<br>n=%{customdata[0]}"
                          "<br>bin [%{customdata[1]:.3f}, %{customdata[2]:.3f}]<extra></extra>",
        ))
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1])
    return _layout(fig, title, "mean predicted probability of fake", "observed share of fakes")


def roc_figure(curves: Mapping[str, Any], title: str = "ROC") -> go.Figure:
    """True-positive (fake caught) rate against false-positive rate (from ``metrics.roc_points``)."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dash", "color": "#999"}))
    for i, (name, c) in enumerate(_named(curves, "tpr").items()):
        fig.add_trace(go.Scatter(x=c["fpr"], y=c["tpr"], mode="lines", name=f"{name} (AUC {c['auc']:.3f})",
                                 line={"color": _COLOURS[i % len(_COLOURS)], "shape": "hv"},
                                 customdata=c["threshold"],
                                 hovertemplate="FPR %{x:.3f}<br>TPR %{y:.3f}<br>threshold %{customdata:.4f}"
                                               "<extra></extra>"))
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1])
    return _layout(fig, title, "false positive rate (reals called fake)", "true positive rate (fakes caught)")


def _probit(x: Sequence[float]) -> np.ndarray:
    return norm.ppf(np.clip(np.asarray(x, dtype=float), _DET_CLIP, 1 - _DET_CLIP))


def det_figure(curves: Mapping[str, Any], title: str = "DET") -> go.Figure:
    """Miss rate against false-alarm rate on normal-deviate axes (from ``metrics.det_points``)."""
    fig = go.Figure()
    for i, (name, c) in enumerate(_named(curves, "fnr").items()):
        colour = _COLOURS[i % len(_COLOURS)]
        fig.add_trace(go.Scatter(x=_probit(c["fpr"]), y=_probit(c["fnr"]), mode="lines",
                                 name=f"{name} (EER {c['eer']:.3f})", line={"color": colour},
                                 customdata=np.stack([c["fpr"], c["fnr"]], axis=-1) if c["fpr"] else None,
                                 hovertemplate="FPR %{customdata[0]:.3f}<br>FNR %{customdata[1]:.3f}<extra></extra>"))
        if c["eer"] == c["eer"]:
            fig.add_trace(go.Scatter(x=_probit([c["eer"]]), y=_probit([c["eer"]]), mode="markers", showlegend=False,
                                     marker={"color": colour, "size": 9, "symbol": "x"},
                                     hovertemplate=f"EER {c['eer']:.3f}<extra></extra>"))
    lim = [float(_probit([0.0])[0]) - 0.1, float(_probit([1.0])[0]) + 0.1]  # clipped corners stay visible
    fig.add_trace(go.Scatter(x=lim, y=lim, mode="lines", name="FPR = FNR", line={"dash": "dot", "color": "#999"}))
    ticks = {"tickvals": _probit(_DET_TICKS).tolist(), "ticktext": [f"{t:.1%}".replace(".0%", "%") for t in _DET_TICKS],
             "range": lim}
    fig.update_xaxes(**ticks)
    fig.update_yaxes(**ticks)
    return _layout(fig, title, "false positive rate (reals called fake)", "false negative rate (fakes missed)")


def robustness_figure(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ("auc", "accuracy", "ap", "ece"),
                      conditions: Sequence[str] | None = None, title: str = "Robustness") -> go.Figure:
    """One panel per metric: value per perturbation condition, one line per source (``ALL`` bold).

    ``rows`` are metrics.csv rows (dicts with source, condition and the metric columns).
    """
    if conditions is None:
        conditions = list(dict.fromkeys(r["condition"] for r in rows))
    sources = list(dict.fromkeys(r["source"] for r in rows))
    cols = 2
    fig = make_subplots(rows=(len(metrics) + cols - 1) // cols, cols=cols, subplot_titles=[m.upper() for m in metrics])
    lookup = {(r["source"], r["condition"]): r for r in rows}
    for si, source in enumerate(sources):
        colour = "#000" if source == "ALL" else _COLOURS[si % len(_COLOURS)]
        for mi, metric in enumerate(metrics):
            ys = [lookup.get((source, c), {}).get(metric) for c in conditions]
            fig.add_trace(go.Scatter(x=list(conditions), y=[None if v is None or v != v else v for v in ys],
                                     mode="lines+markers", name=source, legendgroup=source, showlegend=mi == 0,
                                     line={"color": colour, "width": 3 if source == "ALL" else 1.5}),
                          row=mi // cols + 1, col=mi % cols + 1)
    fig.update_layout(title=title, template="plotly_white", height=350 * ((len(metrics) + 1) // 2),
                      legend={"orientation": "h", "y": -0.1})
    return fig


def score_histogram_figure(probs: Sequence[float], labels: Sequence[int], tiers: Mapping[str, Any] | None = None,
                           bins: int = 40, title: str = "Calibrated probability by class") -> go.Figure:
    """Overlaid histograms of real and fake probabilities, with the tier thresholds as lines."""
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels)
    fig = go.Figure()
    for label, name, colour in ((0, "real", _COLOURS[0]), (1, "fake", _COLOURS[1])):
        fig.add_trace(go.Histogram(x=p[y == label], name=name, opacity=0.6, marker_color=colour,
                                   xbins={"start": 0, "end": 1, "size": 1 / bins}))
    if tiers:
        for key, text in (("real_below", "real below"), ("fake_at_or_above", "fake at or above")):
            fig.add_vline(x=float(tiers[key]), line_dash="dash", annotation_text=f"{text} {float(tiers[key]):.3f}")
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(range=[0, 1])
    return _layout(fig, title, "probability of fake", "images")


def curves_by_group(probs: Sequence[float], labels: Sequence[int], groups: Sequence[str] | None = None,
                    n_bins: int = M.ECE_BINS) -> dict[str, dict[str, dict[str, Any]]]:
    """Reliability, ROC and DET data for all items and for each group (e.g. source)."""
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels)
    keys = {"ALL": np.ones(p.size, dtype=bool)}
    if groups is not None:
        g = np.asarray(groups)
        keys.update({str(name): g == name for name in dict.fromkeys(g.tolist())})
    return {
        "reliability": {k: M.reliability_curve(p[m], y[m], n_bins) for k, m in keys.items()},
        "roc": {k: M.roc_points(p[m], y[m]) for k, m in keys.items()},
        "det": {k: M.det_points(p[m], y[m]) for k, m in keys.items()},
    }

"""Evaluation engine: score a labelled WildRF-layout folder, per source and
under perturbations, and write a report.

Why: offline AUC alone hides what breaks in production (over-confidence, a
wrong threshold, one weak source, JPEG re-compression). This module scores
every image with the checkpoint's own preprocessing (``Detector.prepare``),
batching equal-size tensors, and computes one :func:`core.calibration.metrics.metrics_row`
per (source, condition) plus an ``ALL`` row per condition.

Robustness conditions are applied to the *decoded original* image, before the
model's preprocessing: JPEG re-encoding (Pillow, quality 95/75/50/30, its
default 4:2:0 chroma subsampling), downscaling by 0.5 (Pillow bicubic,
antialiased) and Gaussian blur with sigma 1 (scipy, per channel).
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import io
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from core.evaluation import charts
from core.calibration import calibrators as _cal
from core.calibration import tiers as _tiers
from core.training.datasets import LabelledImage, list_images
from core.scoring.detector import Detector
from core.errors import DetectorError
from core.calibration.metrics import metrics_row

Perturbation = Callable[[Image.Image], Image.Image]


def _jpeg(quality: int) -> Perturbation:
    def apply(img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as out:
            return out.convert("RGB")
    return apply


def _downscale(factor: float) -> Perturbation:
    def apply(img: Image.Image) -> Image.Image:
        size = (max(1, round(img.width * factor)), max(1, round(img.height * factor)))
        return img.resize(size, Image.Resampling.BICUBIC)
    return apply


def _blur(sigma: float) -> Perturbation:
    def apply(img: Image.Image) -> Image.Image:
        arr = gaussian_filter(np.asarray(img, dtype=np.float32), sigma=(sigma, sigma, 0), mode="reflect")
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
    return apply


#: Condition name → perturbation of the decoded image (``clean`` is the unperturbed one).
CONDITIONS: dict[str, Perturbation] = {
    "clean": lambda img: img,
    "jpeg_q95": _jpeg(95),
    "jpeg_q75": _jpeg(75),
    "jpeg_q50": _jpeg(50),
    "jpeg_q30": _jpeg(30),
    "downscale_0.5": _downscale(0.5),
    "blur_sigma1": _blur(1.0),
}
ROBUSTNESS_CONDITIONS = tuple(c for c in CONDITIONS if c != "clean")

#: metrics.csv columns, in order (tier columns are empty without tiers).
METRICS_COLUMNS = ("source", "condition", "n", "n_real", "n_fake", "accuracy", "real_accuracy", "fake_accuracy",
                   "ap", "auc", "eer", "ece", "ece_mass", "brier", "nll", "tpr_at_fpr05", "threshold",
                   "review_share", "tier_fpr", "tier_fnr", "accuracy_outside_review")
SCORES_COLUMNS = ("file", "label", "source", "condition", "logit", "probability")
#: The columns of the printed / markdown table.
TABLE_COLUMNS = ("source", "n", "accuracy", "real_accuracy", "fake_accuracy", "ap", "auc", "eer", "ece")
TIER_TABLE_COLUMNS = ("review_share", "tier_fpr", "tier_fnr", "accuracy_outside_review")
ALL = "ALL"


class BatchScorer:
    """Collects model inputs and runs them through the network in batches of equal shape.

    Keys are arbitrary; :attr:`logits` maps each key to its image logit (mean of the patch map).
    """

    def __init__(self, detector: Detector, batch_size: int = 32) -> None:
        self.detector = detector
        self.batch_size = max(1, int(batch_size))
        self.logits: dict[Any, float] = {}
        self._pending: dict[tuple[int, ...], list[tuple[Any, torch.Tensor]]] = {}

    def add(self, key: Any, tensor: torch.Tensor) -> None:
        shape = tuple(tensor.shape[1:])
        bucket = self._pending.setdefault(shape, [])
        bucket.append((key, tensor))
        if len(bucket) >= self.batch_size:
            self._run(shape)

    def _run(self, shape: tuple[int, ...]) -> None:
        bucket = self._pending.pop(shape, [])
        if not bucket:
            return
        maps = self.detector.patch_map(torch.cat([t for _, t in bucket]))
        means = maps.reshape(len(bucket), -1).astype(np.float64).mean(axis=1)
        for (key, _), value in zip(bucket, means):
            self.logits[key] = float(value)

    def flush(self) -> dict[Any, float]:
        for shape in list(self._pending):
            self._run(shape)
        return self.logits


def score_images(detector: Detector, items: Sequence[LabelledImage | str | os.PathLike],
                 conditions: Sequence[str] = ("clean",), *, batch_size: int = 32, progress: bool = True,
                 desc: str = "scoring") -> tuple[dict[tuple[int, str], float], list[tuple[str, str]]]:
    """Logits of every (item index, condition); each image is decoded once and perturbed per condition.

    Returns ``(logits, failures)`` where failures are ``(file, reason)`` of unreadable images.
    """
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise DetectorError(f"Unknown condition(s) {unknown}; known: {', '.join(CONDITIONS)}")
    scorer = BatchScorer(detector, batch_size)
    failures: list[tuple[str, str]] = []
    bar = tqdm(items, desc=desc, unit="img", disable=not progress, file=sys.stderr, leave=False)
    for i, item in enumerate(bar):
        path = item.path if isinstance(item, LabelledImage) else Path(item)
        try:
            decoded = detector.decode(path)
            for cond in conditions:
                img = decoded if cond == "clean" else dataclasses.replace(decoded,
                                                                          image=CONDITIONS[cond](decoded.image))
                scorer.add((i, cond), detector.prepare(img).tensor)
        except DetectorError as exc:
            failures.append((str(path), str(exc)))
    bar.close()
    return scorer.flush(), failures


@dataclass
class EvaluationResult:
    """Per-image scores and per-(source, condition) metrics of one evaluation run."""

    model: dict[str, Any]
    data_dir: str
    conditions: list[str]
    threshold: float
    calibration: dict[str, Any] | None
    tiers: dict[str, Any] | None
    scores: list[dict[str, Any]]  #: file, label, source, condition, logit, probability
    rows: list[dict[str, Any]]  #: metrics.csv rows
    failures: list[tuple[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    created_at: str = ""

    def rows_for(self, condition: str = "clean") -> list[dict[str, Any]]:
        return [r for r in self.rows if r["condition"] == condition]

    def row(self, source: str = ALL, condition: str = "clean") -> dict[str, Any]:
        for r in self.rows:
            if r["source"] == source and r["condition"] == condition:
                return r
        raise KeyError((source, condition))

    def arrays(self, condition: str = "clean") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(logits, probabilities, labels, sources) of one condition."""
        sel = [s for s in self.scores if s["condition"] == condition]
        return (np.array([s["logit"] for s in sel], dtype=np.float64),
                np.array([s["probability"] for s in sel], dtype=np.float64),
                np.array([s["label"] for s in sel], dtype=np.int64),
                np.array([s["source"] for s in sel], dtype=object))

    def markdown_table(self, condition: str = "clean", columns: Sequence[str] | None = None) -> str:
        cols = list(columns or (TABLE_COLUMNS + (TIER_TABLE_COLUMNS if self.tiers else ())))
        return markdown_table(self.rows_for(condition), cols)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def markdown_table(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-markdown table of ``columns`` (floats to 3 decimals, nan empty)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def group_rows(probs: np.ndarray, labels: np.ndarray, sources: np.ndarray, condition: str, threshold: float,
               tiers: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One metrics row per source (in order of appearance) and an ``ALL`` row."""
    groups = [(str(s), sources == s) for s in dict.fromkeys(sources.tolist())]
    groups.append((ALL, np.ones(labels.size, dtype=bool)))
    rows = []
    for name, mask in groups:
        row: dict[str, Any] = {"source": name, "condition": condition}
        row.update(metrics_row(probs[mask], labels[mask], threshold))
        if tiers:
            proj = _tiers.project_tiers(probs[mask], labels[mask], tiers["real_below"], tiers["fake_at_or_above"])
            row.update(review_share=proj["review_share"], tier_fpr=proj["fpr"], tier_fnr=proj["fnr"],
                       accuracy_outside_review=proj["accuracy_outside_review"])
        rows.append(row)
    return rows


def evaluate(detector: Detector, data_dir: str | os.PathLike, robustness: bool = False, progress: bool = True, *,
             threshold: float = 0.5, batch_size: int = 32,
             conditions: Sequence[str] | None = None) -> EvaluationResult:
    """Score every labelled image under ``data_dir`` (clean, plus perturbations with ``robustness``).

    ``threshold`` applies to the model's probability (calibrated when the
    checkpoint has a calibration). ``conditions`` overrides the condition list.
    """
    t0 = time.perf_counter()
    items = list_images(data_dir)
    conds = list(conditions) if conditions else (["clean", *ROBUSTNESS_CONDITIONS] if robustness else ["clean"])
    logits, failures = score_images(detector, items, conds, batch_size=batch_size, progress=progress,
                                    desc="evaluating")
    scores: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for cond in conds:
        idx = [i for i in range(len(items)) if (i, cond) in logits]
        z = np.array([logits[(i, cond)] for i in idx], dtype=np.float64)
        p, _ = detector.probability(z)
        p = np.atleast_1d(np.asarray(p, dtype=np.float64))
        labels = np.array([items[i].label for i in idx], dtype=np.int64)
        sources = np.array([items[i].source for i in idx], dtype=object)
        for j, i in enumerate(idx):
            scores.append({"file": str(items[i].path), "label": items[i].label, "source": items[i].source,
                           "condition": cond, "logit": float(z[j]), "probability": float(p[j])})
        if idx:
            rows.extend(group_rows(p, labels, sources, cond, threshold, detector.checkpoint.tiers))
    if not scores:
        raise DetectorError(f"No image under {data_dir} could be scored ({len(failures)} failed).")
    return EvaluationResult(
        model=detector.identity, data_dir=str(data_dir), conditions=conds, threshold=float(threshold),
        calibration=detector.checkpoint.calibration, tiers=detector.checkpoint.tiers, scores=scores, rows=rows,
        failures=failures, elapsed_s=time.perf_counter() - t0,
        created_at=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    )


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(round(v, 6)) if abs(v) < 1e6 else repr(v)
    return v


def write_report(result: EvaluationResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write report.md, metrics.csv, scores.csv and plotly HTML charts into ``out_dir``.

    Charts share one ``plotly.min.js`` copied next to them, so they open offline.
    Returns name → path of everything written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    paths["metrics.csv"] = out / "metrics.csv"
    with open(paths["metrics.csv"], "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(METRICS_COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in result.rows:
            w.writerow({c: _csv_value(r.get(c, "")) for c in METRICS_COLUMNS})

    paths["scores.csv"] = out / "scores.csv"
    with open(paths["scores.csv"], "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(SCORES_COLUMNS))
        w.writeheader()
        for s in result.scores:
            w.writerow({**s, "logit": f"{s['logit']:.6f}", "probability": f"{s['probability']:.6f}"})

    _, p, y, src = result.arrays("clean")
    data = charts.curves_by_group(p, y, src)
    figures = {
        "reliability.html": charts.reliability_figure(data["reliability"], "Reliability (clean), per source"),
        "roc.html": charts.roc_figure(data["roc"], "ROC (clean), per source"),
        "det.html": charts.det_figure(data["det"], "DET (clean), per source"),
        "scores.html": charts.score_histogram_figure(p, y, result.tiers, title="Probability of fake by class (clean)"),
    }
    if len(result.conditions) > 1:
        figures["robustness.html"] = charts.robustness_figure(result.rows, conditions=result.conditions,
                                                              title="Robustness to perturbations")
    for name, fig in figures.items():
        paths[name] = out / name
        fig.write_html(paths[name], include_plotlyjs="directory", full_html=True)

    paths["report.md"] = out / "report.md"
    paths["report.md"].write_text(_report_markdown(result, [n for n in figures]))
    return paths


def _report_markdown(result: EvaluationResult, chart_names: list[str]) -> str:
    m = result.model
    all_clean = result.row(ALL, "clean")
    lines = [
        f"# Evaluation: {m.get('label')} on `{result.data_dir}`",
        "",
        f"- model: `{m.get('path')}` (sha256 `{(m.get('sha256') or '')[:16]}…`), preprocessing "
        f"`{m.get('preprocess_fingerprint')}`: {m.get('preprocess_summary')}",
        f"- calibration: {_cal.describe(result.calibration)}",
        f"- tiers: {_tiers.describe(result.tiers)}",
        f"- images: {all_clean['n']} ({all_clean['n_real']} real / {all_clean['n_fake']} fake); "
        f"{len(result.failures)} unreadable; conditions: {', '.join(result.conditions)}",
        f"- accuracy columns call an image fake when its probability is >= {result.threshold:g}; "
        "AP/AUC/EER rank by that probability; ECE uses 15 equal-width bins"
        + ("; tier columns: review_share = share in the review band, tier_fpr = reals called clearly fake, "
           "tier_fnr = fakes called clearly real" if result.tiers else ""),
        f"- generated {result.created_at} in {result.elapsed_s:.1f} s",
        "",
        "## Per source (clean)",
        "",
        result.markdown_table("clean"),
        "",
    ]
    if len(result.conditions) > 1:
        lines += ["## Robustness (all sources)", "",
                  "Perturbations are applied to the decoded image before the model's preprocessing: "
                  "JPEG re-encoding (Pillow, 4:2:0), downscaling by 0.5 (bicubic), Gaussian blur sigma 1.", "",
                  markdown_table([r for r in result.rows if r["source"] == ALL],
                                 ["condition", *TABLE_COLUMNS[1:], *(TIER_TABLE_COLUMNS if result.tiers else ())]),
                  ""]
        for metric in ("auc", "accuracy"):
            sources = list(dict.fromkeys(r["source"] for r in result.rows))
            lookup = {(r["source"], r["condition"]): r.get(metric) for r in result.rows}
            pivot = [{"source": s, **{c: lookup.get((s, c), math.nan) for c in result.conditions}} for s in sources]
            lines += [f"### {metric.upper()} per source and condition", "",
                      markdown_table(pivot, ["source", *result.conditions]), ""]
    if result.failures:
        lines += ["## Unreadable images", ""] + [f"- `{f}`: {why}" for f, why in result.failures] + [""]
    lines += ["## Files", "", "- `metrics.csv`: one row per source and condition (`ALL` = every source)",
              "- `scores.csv`: one row per image and condition"]
    lines += [f"- `{name}`" for name in chart_names]
    return "\n".join(lines) + "\n"

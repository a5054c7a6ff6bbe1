"""The improvement plan's decision tree, run on the live data: which branch are we on, on what
evidence, and what to do next.

The plan (``../shared/seeds/improvement-plan.txt``, "Decision Tree for Next
Steps") reacts to three situations after deployment, and otherwise keeps
monitoring (node B):

* **C — false-positive spike**: many real images flagged. Raise the fake
  threshold (C1) and check that enough fakes are still caught; if raising it
  loses too many, strengthen the guardrails instead (C4). Or recalibrate on
  recent labels.
* **D — false-negative spike**: new fakes called real. Gather them (export the
  hard negatives, D1→D2), then adapt or retrain (D3).
* **E — drift in the inputs**: the score distribution moved (PSI / KS).
  Diagnose what changed — sources, formats, sizes (E1) — then recalibrate or
  retrain (E2/E3).

Measured on the recent window (default: the last 7 days) against the
reference window before it (28 days), through the store's public API only.
False positives and negatives are counted on the *clear* tiers, because
review-tier items are the model abstaining, not erring: the false-positive
share is the share of labelled clearly-fake calls that reviewers labelled
real, the false-negative share that of labelled clearly-real calls labelled
fake. A share is a spike when it reaches :data:`SPIKE_SHARE` on at least
:data:`MIN_CALLS` labelled calls. Every branch says what it measured, so an
analyst can disagree with the evidence and not only with the verdict.
"""
from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from core.model.registry import ModelRegistry, ModelVersion
    from core.review.store import ReviewStore

#: Share of labelled clear calls overturned that counts as a spike (one in five).
SPIKE_SHARE = 0.20
#: Fewest labelled clear calls in the recent window before a share is judged.
MIN_CALLS = 10
#: A raised threshold should bring the false-positive share down to this.
TARGET_SHARE = 0.10
#: Scorings per window the drift test needs (as the Monitor page).
MIN_DRIFT_SAMPLES = 30
#: Items read to compare what was uploaded in the two windows.
COMPARE_ITEMS = 5000

BRANCH_ORDER = ("false_positive_spike", "false_negative_spike", "drift")


@dataclass
class Action:
    """One step the analyst can take; ``kind`` says how the dashboard offers it."""

    key: str  #: raise_threshold, recalibrate, export_hard_negatives, adapt_or_retrain, diagnose
    label: str
    kind: str  #: "run" (a button calling core), "page" (a link to a dashboard page) or "command"
    target: str  #: the page path, or the command line
    detail: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "kind": self.kind, "target": self.target,
                "detail": self.detail, "params": dict(self.params)}


@dataclass
class Branch:
    key: str
    node: str  #: the decision tree's node
    title: str
    active: bool
    judged: bool  #: False when there was not enough data to judge this branch
    evidence: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "node": self.node, "title": self.title, "active": self.active,
                "judged": self.judged, "evidence": list(self.evidence),
                "actions": [a.to_json() for a in self.actions], "figures": dict(self.figures)}


@dataclass
class Playbook:
    """All three checks, and the branch the data is on (the first active one, else monitoring)."""

    branch: Branch
    checks: list[Branch]
    reference_window: tuple[str, str]
    recent_window: tuple[str, str]

    @property
    def active(self) -> list[Branch]:
        return [b for b in self.checks if b.active]

    def to_json(self) -> dict[str, Any]:
        return {"branch": self.branch.key, "primary": self.branch.to_json(),
                "active": [b.key for b in self.active], "checks": [b.to_json() for b in self.checks],
                "reference_window": list(self.reference_window), "recent_window": list(self.recent_window)}


# ---------------------------------------------------------------------------
# reading the store
# ---------------------------------------------------------------------------
def _clear_calls(rows: Sequence[dict[str, Any]], tier: str) -> list[dict[str, Any]]:
    """Labelled (real/fake) items whose latest scoring put them in the clear ``tier``."""
    return [r for r in rows if r.get("tier") == tier and r.get("label") in ("real", "fake")]


def _share(rows: Sequence[dict[str, Any]], wrong: str) -> tuple[int, int, float | None]:
    n = len(rows)
    k = sum(1 for r in rows if r["label"] == wrong)
    return n, k, (k / n if n else None)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def _suggest_threshold(calls: Sequence[dict[str, Any]], current: float,
                       target: float = TARGET_SHARE) -> tuple[float | None, int, int]:
    """Lowest fake threshold above ``current`` bringing the labelled false-positive share to ``target``.

    Returns ``(threshold or None, fakes still called fake, fakes that would move to review)``.
    """
    probs = sorted({float(r["probability"]) for r in calls if r.get("probability") is not None})
    fakes = [r for r in calls if r["label"] == "fake"]
    for t in probs:
        if t <= current:
            continue
        kept = [r for r in calls if float(r["probability"]) >= t]
        if kept and sum(r["label"] == "real" for r in kept) / len(kept) <= target:
            still = sum(1 for r in fakes if float(r["probability"]) >= t)
            return t, still, len(fakes) - still
    return None, 0, len(fakes)


def _false_positive(recent: list[dict], reference: list[dict], tiers: dict[str, float]) -> Branch:
    calls, ref_calls = _clear_calls(recent, "fake"), _clear_calls(reference, "fake")
    n, k, share = _share(calls, "real")
    rn, rk, rshare = _share(ref_calls, "real")
    judged = n >= MIN_CALLS
    active = judged and share is not None and share >= SPIKE_SHARE
    hi = float(tiers.get("fake_at_or_above", 0.8))
    evidence = [f"{k} of {n} labelled clearly-fake calls in the recent window were labelled real by reviewers "
                f"({_pct(share)}; a spike is {SPIKE_SHARE:.0%} on at least {MIN_CALLS} calls)."]
    evidence.append(f"Reference window: {rk} of {rn} ({_pct(rshare)})." if rn else
                    "Reference window: no labelled clearly-fake calls to compare with.")
    actions: list[Action] = []
    figures = {"calls": n, "overturned": k, "share": share, "reference_calls": rn, "reference_overturned": rk,
               "reference_share": rshare, "fake_at_or_above": hi}
    if active:
        t, still, lost = _suggest_threshold(calls, hi)
        figures.update(suggested_threshold=t, fakes_kept=still, fakes_to_review=lost)
        if t is not None:
            evidence.append(f"Raising the fake threshold from {hi:.3f} to {t:.3f} brings the labelled share to at most "
                            f"{TARGET_SHARE:.0%}; {still} labelled fakes stay clearly fake and {lost} move to review "
                            "(C1: check that this still catches enough fakes).")
            actions.append(Action("raise_threshold", f"Raise the fake threshold to {t:.3f}", "run",
                                  "core.review.playbook.raise_threshold",
                                  "Saves and activates a new model version with this threshold (roll back on the "
                                  "Calibration page).", {"fake_at_or_above": t}))
        else:
            evidence.append("No higher threshold brings the share down while keeping any clearly-fake call "
                            "(C2: too many misses): strengthen the guardrails instead (C4).")
        actions.append(Action("recalibrate", "Recalibrate on recent labels", "page", "views/calibration.py",
                              "Fit a calibration on the reviewed items and compare before activating it."))
    return Branch("false_positive_spike", "C", "False-positive spike: real images are being flagged fake",
                  active, judged, evidence, actions, figures)


def _false_negative(recent: list[dict], reference: list[dict], since: str) -> Branch:
    calls, ref_calls = _clear_calls(recent, "real"), _clear_calls(reference, "real")
    n, k, share = _share(calls, "fake")
    rn, rk, rshare = _share(ref_calls, "fake")
    judged = n >= MIN_CALLS
    active = judged and share is not None and share >= SPIKE_SHARE
    evidence = [f"{k} of {n} labelled clearly-real calls in the recent window were labelled fake by reviewers "
                f"({_pct(share)}; a spike is {SPIKE_SHARE:.0%} on at least {MIN_CALLS} calls)."]
    evidence.append(f"Reference window: {rk} of {rn} ({_pct(rshare)})." if rn else
                    "Reference window: no labelled clearly-real calls to compare with.")
    actions: list[Action] = []
    if active:
        evidence.append("New fakes are getting through as 'clearly real': gather them (D1→D2), then adapt or "
                        "retrain on them (D3) and test before deploying (D5).")
        actions.append(Action("export_hard_negatives", "Export the hard negatives of the recent window", "run",
                              "ReviewStore.export_batch",
                              "Writes the recalibration CSV and the hard-negative zip (a `core train --data` "
                              "folder once unzipped) for labels since the window start.",
                              {"since": since, "only_new": False}))
        actions.append(Action("adapt_or_retrain", "Then adapt or retrain", "command",
                              "python -m core train --data HARD_NEGATIVES_DIR --out NEW.pt --resume",
                              "Fine-tune on the exported hard negatives (with the original training data), "
                              "evaluate, then recalibrate and activate."))
    return Branch("false_negative_spike", "D", "False-negative spike: fakes are being called real",
                  active, judged, evidence, actions,
                  {"calls": n, "overturned": k, "share": share, "reference_calls": rn, "reference_overturned": rk,
                   "reference_share": rshare})


def _in(at: str | None, window: tuple[str, str]) -> bool:
    return bool(at) and window[0] <= at < window[1]


def _what_changed(store: "ReviewStore", ref_w: tuple[str, str], recent_w: tuple[str, str]) -> list[str]:
    """Sources (uploaders), formats and file sizes of the items scored in each window, biggest changes first."""
    rows = store.recent_items(limit=COMPARE_ITEMS)
    ref = [r for r in rows if _in(r.get("scored_at"), ref_w)]
    cur = [r for r in rows if _in(r.get("scored_at"), recent_w)]
    if not ref or not cur:
        return []
    out: list[tuple[float, str]] = []
    for what, key in (("format", "ext"), ("source (uploader)", "uploader")):
        a = Counter((r.get(key) or "unknown") for r in ref)
        b = Counter((r.get(key) or "unknown") for r in cur)
        for value in set(a) | set(b):
            sa, sb = a[value] / len(ref), b[value] / len(cur)
            if abs(sb - sa) >= 0.10:
                out.append((abs(sb - sa), f"{what} {value}: {sa:.0%} of the reference items → {sb:.0%} of recent ones"))
    ma = statistics.median(r["size"] for r in ref if r.get("size"))
    mb = statistics.median(r["size"] for r in cur if r.get("size"))
    ratio = mb / ma if ma else 1.0
    if ratio >= 1.5 or ratio <= 1 / 1.5:
        out.append((abs(ratio - 1), f"median file size {ma / 1024:.0f} kB → {mb / 1024:.0f} kB"))
    out.sort(key=lambda t: -t[0])
    return [text for _, text in out[:6]]


def _drift(store: "ReviewStore", ref_w: tuple[str, str], recent_w: tuple[str, str],
           model_sha256: str | None) -> Branch:
    d = store.drift(ref_w, recent_w, model_sha256=model_sha256, min_samples=MIN_DRIFT_SAMPLES)
    judged = not d["insufficient_data"]
    active = judged and d["alert"] in ("warn", "alert")
    if judged:
        evidence = [f"Scores of the recent window against the reference: PSI {d['psi']:.3f} (warn ≥ "
                    f"{d['thresholds']['warn']}, alert ≥ {d['thresholds']['alert']}), KS {d['ks']:.3f}"
                    + (f" (p = {d['ks_pvalue']:.2g})" if d.get("ks_pvalue") is not None else "")
                    + f", on {d['n_reference']} / {d['n_recent']} scorings: {d['alert']}."]
    else:
        evidence = [f"Not enough scorings to judge drift ({d['n_reference']} reference / {d['n_recent']} recent; "
                    f"{MIN_DRIFT_SAMPLES} needed in each)."]
    actions: list[Action] = []
    if active:
        changed = _what_changed(store, ref_w, recent_w)
        evidence.append("What changed (E1): " + ("; ".join(changed) + "." if changed else
                        "no shift in formats, sources or file sizes — look at the image content (new generators, "
                        "new platforms)."))
        actions.append(Action("recalibrate", "Recalibrate on recent labels", "page", "views/calibration.py",
                              "Recalibrate (E2/E3) once the recent window has labels; retrain if the domain is new."))
    return Branch("drift", "E", "Drift: the score distribution has moved", active, judged, evidence, actions,
                  {k: d.get(k) for k in ("psi", "ks", "ks_pvalue", "alert", "n_reference", "n_recent")})


def evaluate(store: "ReviewStore", *, tiers: dict[str, Any] | None = None, recent_days: int = 7,
             reference_days: int = 28, model_sha256: str | None = None) -> Playbook:
    """Run the three checks on the store and pick the branch (first active in C, D, E order; else B)."""
    ref_w, recent_w = store.default_windows(int(recent_days), int(reference_days))
    recent = store.labelled_items(since=recent_w[0], until=recent_w[1], model_sha256=model_sha256, limit=None)
    reference = store.labelled_items(since=ref_w[0], until=ref_w[1], model_sha256=model_sha256, limit=None)
    from core.scoring.policy import DEFAULT_TIERS

    thresholds = {**DEFAULT_TIERS, **{k: float(v) for k, v in (tiers or {}).items()
                                      if k in ("real_below", "fake_at_or_above") and v is not None}}
    checks = [_false_positive(recent, reference, thresholds), _false_negative(recent, reference, recent_w[0]),
              _drift(store, ref_w, recent_w, model_sha256)]
    active = [b for b in checks if b.active]
    if active:
        primary = active[0]
    else:
        unjudged = [b.key.replace("_", " ") for b in checks if not b.judged]
        evidence = ["No false-positive or false-negative spike and no drift in the recent window: keep the model, "
                    "recalibrate periodically and keep monitoring (B)."]
        if unjudged:
            evidence.append("Not judged for lack of data: " + ", ".join(unjudged) + ".")
        primary = Branch("monitor", "B", "Keep monitoring: no branch of the decision tree is triggered", False,
                         not unjudged, evidence, [], {})
    return Playbook(branch=primary, checks=checks, reference_window=tuple(ref_w), recent_window=tuple(recent_w))


def raise_threshold(registry: "ModelRegistry", checkpoint: Any, fake_at_or_above: float, *,
                    by: str | None = None) -> "ModelVersion":
    """C1: save and activate a version serving ``checkpoint``'s calibration with a higher fake threshold.

    The clearly-real threshold is kept; the version can be rolled back like any other.
    """
    from core.calibration.tiers import manual_tiers
    from core.errors import CalibrationError
    from core.scoring.policy import DEFAULT_TIERS

    current = dict(checkpoint.tiers or DEFAULT_TIERS)
    lo, hi = float(current["real_below"]), float(fake_at_or_above)
    if hi <= float(current["fake_at_or_above"]):
        raise CalibrationError(f"The new fake threshold {hi:.3f} is not above the current "
                               f"{float(current['fake_at_or_above']):.3f}.")
    tiers = manual_tiers(min(lo, hi), hi, calibration_version=checkpoint.calibration_version)
    return registry.save_version(calibration=checkpoint.calibration, tiers=tiers, created_by=by, activate=True,
                                 note=f"playbook C1: fake threshold raised to {hi:.3f} after a false-positive spike")


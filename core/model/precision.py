"""Which numeric precision serves the model on this CPU, decided once at model load.

Why: the LaDeDa convolutions already run near the fp32 peak of an AVX2 core, so
more speed needs lower precision, and only some processors have the units that
make it pay (AMX tiles, AVX-512 bf16/VNNI). The choice is a pure function of
the CPU's feature flags (``/proc/cpuinfo``) and ``LADEDA_PRECISION``, so it is
testable on any machine.

Paths (each a small variant of the same folded, traced serving graph, see
:mod:`core.model.serving`):

- ``fp32``  exact serving graph; every CPU; what ``LADEDA_PRECISION=fp32`` forces.
- ``bf16``  NPR/gradient stem and the stem conv in fp32, the residual body in
  bfloat16 (oneDNN uses AMX or AVX-512 bf16 kernels), head in fp32. Served when
  asked for (``LADEDA_PRECISION=bf16``); chosen automatically only once it is in
  :data:`ENABLED`, i.e. after its contract test has passed on a CPU with
  ``amx_bf16``/``avx512_bf16`` (not yet: the machines this was built on are
  AVX2-only, where bf16 is emulated at ~6x the fp32 time and cannot be measured
  on the corpus; on a random 768×576 input LaDeDa9 moved 0.025 in image logit).
- ``int8``  ONNX Runtime static quantisation (:mod:`core.model.int8`): representation, stem conv and
  head in fp32, the body's convs int8 (per-channel weights, uint8 activations calibrated on corpus
  train images). Served on request (``LADEDA_PRECISION=int8``) only on CPUs with ``avx512_vnni`` or
  ``amx_int8``; chosen automatically only once it is in :data:`ENABLED`. Not enabled: on an Ice Lake
  Xeon (avx512_vnni, 2 shared cores) its analyst contract failed on a 1-in-8 subset (40 images): fused
  probability change max 0.0009, tier unchanged 40/40, but patch-map Spearman median 0.937 < 0.95
  (``benchmarks/int8_contract.subset.json``; README "Precision").

Accuracy contracts a path must meet against fp32 before it may be enabled:

- bf16: on ``../shared/corpus/test``, AUC change ≤ 0.005, median |Δ image logit| ≤ 0.02,
  max |Δ image logit| ≤ 0.1 (:func:`contract_report`).
- int8: on what the analyst sees (:func:`analyst_contract_report`, the real ``analyse`` path with the
  CLIP second opinion): fused probability change ≤ 0.01 on every image, tier unchanged on ≥ 99 % of
  ``../shared/corpus/test`` + ``../shared/unseen/*/test``, patch-map Spearman median ≥ 0.95
  (:data:`ANALYST_CONTRACT`; ``python -m core.bench --contract``).

Both are checked by ``tests/test_precision.py`` on CPUs that have the feature.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from core.errors import DetectorError

ENV_VAR = "LADEDA_PRECISION"

#: Every path the code knows, fastest first.
PATHS = ("int8", "bf16", "fp32")

#: Paths that passed the accuracy contract on the shipped model and may be chosen automatically.
ENABLED = ("fp32",)

#: Paths that have a serving graph (an explicit request may pick any of these; int8 only on a CPU with its units).
IMPLEMENTED = ("int8", "bf16", "fp32")

#: A path is usable on a CPU that has any one of these flags (fp32 needs none).
REQUIRED_FLAGS: dict[str, frozenset[str]] = {
    "bf16": frozenset({"amx_bf16", "avx512_bf16"}),
    "int8": frozenset({"amx_int8", "avx512_vnni"}),
}

#: Flags worth reporting (the ones that change the choice).
RELEVANT_FLAGS = frozenset().union(*REQUIRED_FLAGS.values())


@dataclass(frozen=True)
class Contract:
    """Largest allowed change of a lower-precision path against fp32."""

    max_auc_change: float = 0.005
    max_median_abs_logit_change: float = 0.02
    max_abs_logit_change: float = 0.1


CONTRACT = Contract()


class PrecisionError(DetectorError):
    """An unknown precision was asked for."""

    code = "precision_error"


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags as ``lscpu`` lists them (empty where /proc/cpuinfo is absent)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def available_paths(flags: Iterable[str]) -> list[str]:
    """Paths this CPU has the hardware for, fastest first (``fp32`` always)."""
    have = set(flags)
    return [p for p in PATHS if p == "fp32" or have & REQUIRED_FLAGS[p]]


def choose_precision(flags: Iterable[str], requested: str | None = None,
                     enabled: Iterable[str] | None = None) -> str:
    """The path to serve: ``requested`` when explicit, else the fastest ``enabled`` one the CPU supports.

    ``requested`` is ``None``/``""``/``"auto"`` (choose), ``"fp32"`` (exact),
    ``"bf16"`` (honoured even without the hardware: correct, only slow) or ``"int8"``
    (honoured only on a CPU with ``avx512_vnni``/``amx_int8``: on AVX2 the u8×s8 kernels
    may saturate, so the contract measured with VNNI would not carry over).
    """
    want = (requested or "auto").strip().lower()
    if want == "auto":
        allowed = set(ENABLED if enabled is None else enabled) & set(IMPLEMENTED)
        return next(p for p in available_paths(flags) if p in allowed or p == "fp32")
    if want not in PATHS:
        raise PrecisionError(f"{ENV_VAR}={requested!r} is not a precision; use auto, fp32 or bf16.")
    if want not in IMPLEMENTED:
        raise PrecisionError(f"Precision {want} is not available: no {want} path meets the accuracy contract "
                             "(AUC change ≤ 0.005, median |Δlogit| ≤ 0.02, max ≤ 0.1). Use auto, fp32 or bf16.")
    if want == "int8" and want not in available_paths(flags):
        raise PrecisionError("Precision int8 needs a CPU with avx512_vnni or amx_int8 (this one has neither): "
                             "without them the int8 kernels may saturate and the accuracy contract does not hold. "
                             "Use auto, fp32 or bf16.")
    return want


def resolve_precision(requested: str | None = None) -> str:
    """:func:`choose_precision` for this machine; ``requested`` defaults to ``$LADEDA_PRECISION``."""
    if requested is None:
        requested = os.environ.get(ENV_VAR)
    return choose_precision(cpu_flags(), requested)


def contract_report(fp32_logits, other_logits, labels, contract: Contract = CONTRACT) -> dict:
    """Measured changes of one path against fp32 on labelled images, and whether they meet ``contract``."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    a = np.asarray(fp32_logits, dtype=np.float64)
    b = np.asarray(other_logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    delta = np.abs(a - b)
    auc_change = abs(float(roc_auc_score(y, a)) - float(roc_auc_score(y, b)))
    report = {
        "images": int(a.size),
        "auc_change": auc_change,
        "median_abs_logit_change": float(np.median(delta)),
        "max_abs_logit_change": float(delta.max()),
    }
    report["meets_contract"] = (auc_change <= contract.max_auc_change
                                and report["median_abs_logit_change"] <= contract.max_median_abs_logit_change
                                and report["max_abs_logit_change"] <= contract.max_abs_logit_change)
    return report


@dataclass(frozen=True)
class AnalystContract:
    """What an analyst sees must not move: the contract a faster path meets before it is enabled."""

    max_abs_probability_change: float = 0.01  #: fused (served) probability, every image
    min_tier_agreement: float = 0.99  #: share of images whose tier is unchanged
    min_median_spearman: float = 0.95  #: patch map's rank correlation with fp32, median over images


ANALYST_CONTRACT = AnalystContract()


def _spearman(a, b) -> float:
    import numpy as np
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(spearmanr(a, b).statistic)


def analyst_contract_report(items, reference, candidate, *, encoder=None, guardrails: bool = False,
                            contract: AnalystContract = ANALYST_CONTRACT, progress=None) -> dict:
    """Score ``items`` through the real analysis path with two detectors (``reference``: fp32) and measure
    what an analyst would see change: the served (fused) probability, the tier (OOD guard and the parts'
    agreement rule included) and the patch map's Spearman correlation.

    ``items``: paths, or ``(path, source)`` pairs (``source`` groups the per-source figures). ``encoder``:
    a CLIP encoder (``core.encoders.clip.load_encoder()``) or None (LaDeDa alone); its features are computed
    once per image and shared, so only LaDeDa's pass differs. Images the detector refuses are counted,
    not scored. ``progress(i, n, record)`` is called after each image.
    """
    import numpy as np

    from core.errors import DetectorError
    from core.scoring.analysis import analyse

    items = [(i, None) if not isinstance(i, tuple) else i for i in items]
    records, skipped = [], []
    for k, (path, source) in enumerate(items):
        try:
            decoded = reference.decode(path)
            prepared = reference.prepare(decoded)
        except DetectorError as exc:
            skipped.append({"file": str(path), "error": str(exc)})
            continue
        clip = encoder.encode(decoded) if encoder is not None else None
        a = analyse(reference, decoded, name=str(path), guardrails=guardrails, encoder=encoder, prepared=prepared,
                    clip=clip)
        b = analyse(candidate, decoded, name=str(path), guardrails=guardrails, encoder=encoder, prepared=prepared,
                    clip=clip)
        oa, ob = a.served.ood if a.served else None, b.served.ood if b.served else None
        rec = {
            "file": str(path), "source": source,
            "probability": a.probability, "probability_change": abs(a.probability - b.probability),
            "tier": a.tier, "tier_other": b.tier,
            "ladeda_logit_change": abs(a.score.logit - b.score.logit),
            "spearman": _spearman(a.score.patch_logits, b.score.patch_logits),
            "pooled_rel_change": float(np.linalg.norm(a.score.pooled_features - b.score.pooled_features)
                                       / max(float(np.linalg.norm(a.score.pooled_features)), 1e-12)),
            "ood_distance": float(oa["distance"]) if oa else None,
            "ood_distance_change": (abs(float(oa["distance"]) - float(ob["distance"]))
                                    if oa and ob and "distance" in oa and "distance" in ob else None),
            "ood_tripped": bool(oa["tripped"]) if oa else None, "ood_tripped_other": bool(ob["tripped"]) if ob else None,
            "forward_ms": a.score.timings_ms["forward"], "forward_ms_other": b.score.timings_ms["forward"],
        }
        records.append(rec)
        if progress is not None:
            progress(k + 1, len(items), rec)
    report = summarise_contract(records, contract)
    report["skipped"] = skipped
    report["precision"] = getattr(candidate, "precision", None)
    report["guardrails"] = guardrails
    report["encoder"] = getattr(encoder, "key", None)
    return report


def summarise_contract(records: list[dict], contract: AnalystContract = ANALYST_CONTRACT) -> dict:
    """The contract figures over per-image records (see :func:`analyst_contract_report`)."""
    import numpy as np

    if not records:
        return {"images": 0, "meets_contract": False, "records": []}
    dp = np.array([r["probability_change"] for r in records])
    same = np.array([r["tier"] == r["tier_other"] for r in records])
    rho = np.array([r["spearman"] for r in records])
    dz = np.array([r["ladeda_logit_change"] for r in records])
    by_source: dict[str, dict] = {}
    for r in records:
        s = by_source.setdefault(str(r["source"]), {"images": 0, "tier_changed": 0, "max_probability_change": 0.0})
        s["images"] += 1
        s["tier_changed"] += int(r["tier"] != r["tier_other"])
        s["max_probability_change"] = max(s["max_probability_change"], r["probability_change"])
    report = {
        "images": len(records),
        "max_abs_probability_change": float(dp.max()),
        "median_abs_probability_change": float(np.median(dp)),
        "tier_agreement": float(same.mean()),
        "tier_changes": [{"file": r["file"], "from": r["tier"], "to": r["tier_other"]}
                         for r in records if r["tier"] != r["tier_other"]],
        "median_spearman": float(np.median(rho)),
        "min_spearman": float(rho.min()),
        "max_abs_ladeda_logit_change": float(dz.max()),
        "median_abs_ladeda_logit_change": float(np.median(dz)),
        # Context for the tier figure: how the fp32 tiers are spread (all "review" makes agreement easy) and
        # whether the OOD guard, which reads LaDeDa's pooled features, trips the same way.
        "tiers_fp32": {t: sum(r["tier"] == t for r in records) for t in sorted({r["tier"] for r in records})},
        "ood_trip_agreement": (float(np.mean([r.get("ood_tripped") == r.get("ood_tripped_other") for r in records]))
                               if any(r.get("ood_tripped") is not None for r in records) else None),
        "max_ood_distance_change": max((r["ood_distance_change"] for r in records
                                        if r.get("ood_distance_change") is not None), default=None),
        "median_pooled_rel_change": (float(np.median([r["pooled_rel_change"] for r in records]))
                                     if all("pooled_rel_change" in r for r in records) else None),
        "median_forward_ms": float(np.median([r["forward_ms"] for r in records])),
        "median_forward_ms_other": float(np.median([r["forward_ms_other"] for r in records])),
        "by_source": by_source,
        "contract": {"max_abs_probability_change": contract.max_abs_probability_change,
                     "min_tier_agreement": contract.min_tier_agreement,
                     "min_median_spearman": contract.min_median_spearman},
        "records": records,
    }
    report["meets_contract"] = bool(report["max_abs_probability_change"] <= contract.max_abs_probability_change
                                    and report["tier_agreement"] >= contract.min_tier_agreement
                                    and report["median_spearman"] >= contract.min_median_spearman)
    return report

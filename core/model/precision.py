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
- ``int8``  detected (``amx_int8`` / ``avx512_vnni``) but not enabled: no int8
  graph has been shown to meet the accuracy contract, so it is never chosen.

Accuracy contract a path must meet against fp32 on ``../shared/corpus/test``
before it may be enabled: AUC change ≤ 0.005, median |Δ image logit| ≤ 0.02,
max |Δ image logit| ≤ 0.1 (:func:`meets_contract`; checked by
``tests/test_precision.py`` on CPUs that have the feature).
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

#: Paths that have a serving graph (an explicit request may pick any of these).
IMPLEMENTED = ("bf16", "fp32")

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
                     enabled: Iterable[str] = ENABLED) -> str:
    """The path to serve: ``requested`` when explicit, else the fastest ``enabled`` one the CPU supports.

    ``requested`` is ``None``/``""``/``"auto"`` (choose), ``"fp32"`` (exact) or
    ``"bf16"`` (honoured even without the hardware: correct, only slow).
    ``"int8"`` is refused: no int8 graph exists that meets the accuracy contract.
    """
    want = (requested or "auto").strip().lower()
    if want == "auto":
        allowed = set(enabled) & set(IMPLEMENTED)
        return next(p for p in available_paths(flags) if p in allowed or p == "fp32")
    if want not in PATHS:
        raise PrecisionError(f"{ENV_VAR}={requested!r} is not a precision; use auto, fp32 or bf16.")
    if want not in IMPLEMENTED:
        raise PrecisionError(f"Precision {want} is not available: no {want} path meets the accuracy contract "
                             "(AUC change ≤ 0.005, median |Δlogit| ≤ 0.02, max ≤ 0.1). Use auto, fp32 or bf16.")
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

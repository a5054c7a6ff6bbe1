"""Our checkpoint format: weights + architecture + preprocessing spec +
calibration + tiers + provenance in one file, so a model can never be served
with the wrong preprocessing.

Files are written with ``torch.save`` and read with ``weights_only=True``
(plain tensors, strings and numbers only), atomically (temp file + rename).
The model's identity is the SHA-256 of the file bytes.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from core.errors import CheckpointError, InvalidArgumentError
from core.model.models import arch_label, arch_record, build_model
from core.model.preprocess import PreprocessSpec, official_spec

FORMAT = "ladeda-checkpoint"
FORMAT_VERSION = 1

RESEARCH_LICENCE_NOTE = (
    "Official LaDeDa/Tiny-LaDeDa weights (barcavia/RealTime-DeepfakeDetection-in-the-RealWorld) are "
    "released for research use only. Load them only if you obtained them yourself; do not redistribute."
)


def plain(obj: Any) -> Any:
    """Reduce metadata to JSON types so ``weights_only`` loading always accepts it."""
    if obj is None:
        return None
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class Checkpoint:
    """A loaded (or about to be saved) model file."""

    arch: dict[str, Any]
    spec: PreprocessSpec
    state_dict: dict[str, torch.Tensor]
    calibration: dict[str, Any] | None = None
    tiers: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    #: Optional learned parts on top of the network (CLIP head, fusion, its calibration
    #: and tiers, OOD guard; see core.learning.parts). Tensors allowed, like the weights.
    learning: dict[str, Any] | None = None
    path: Path | None = None
    sha256: str | None = None

    @property
    def label(self) -> str:
        """Human name of the architecture, e.g. 'LaDeDa9' or 'Tiny-LaDeDa'."""
        return arch_label(self.arch)

    @property
    def calibration_version(self) -> str | None:
        return (self.calibration or {}).get("version")

    def build_model(self) -> nn.Module:
        """A float32 eval-mode network with these weights (strict key match)."""
        model = build_model(self.arch, self.spec.input_representation)
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in self.state_dict.items()}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0:3]
            raise CheckpointError(f"Weights do not match the {self.label} architecture: {' '.join(first)}") from None
        return model.eval()

    def with_updates(self, **changes: Any) -> "Checkpoint":
        """A copy with fields replaced (path and sha cleared: it is a new file)."""
        return replace(self, path=None, sha256=None, **changes)

    def to_payload(self, dtype: str = "float32") -> dict[str, Any]:
        if dtype not in ("float32", "float16"):
            raise InvalidArgumentError("dtype must be float32 or float16")
        tdtype = torch.float16 if dtype == "float16" else torch.float32
        state = {k: (v.detach().to("cpu", tdtype) if v.is_floating_point() else v.detach().cpu())
                 for k, v in self.state_dict.items()}
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "arch": dict(self.arch),
            "preprocess": self.spec.to_dict(),
            "weights_dtype": dtype,
            "state_dict": state,
            "calibration": plain(self.calibration),
            "tiers": plain(self.tiers),
            "provenance": plain(dict(self.provenance)),
            **({"learning": self.learning} if self.learning else {}),
        }

    def save(self, path: str | os.PathLike, dtype: str = "float32") -> str:
        """Write atomically; returns the new file's SHA-256 and updates ``self``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            torch.save(self.to_payload(dtype), tmp)
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; model files are meant to be shared
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.path, self.sha256 = path, file_sha256(path)
        return self.sha256


def _looks_like_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load and validate one of our checkpoints; refuse anything without a spec."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path.name} is not a readable model file ({type(exc).__name__}).") from None
    if _looks_like_state_dict(payload):
        raise CheckpointError(
            f"{path.name} is a bare state dict with no preprocessing spec. Wrap it first: "
            f"python -m core import-official --arch {{ladeda9,tiny}} --weights {path} --out model.pt"
        )
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is not a {FORMAT} file.")
    if int(payload.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path.name} was written by a newer version (format {payload['format_version']}).")
    for key in ("arch", "preprocess", "state_dict"):
        if not payload.get(key):
            raise CheckpointError(f"{path.name} lacks its '{key}' section.")
    ckpt = Checkpoint(
        arch=dict(payload["arch"]),
        spec=PreprocessSpec.from_dict(payload["preprocess"]),
        state_dict=payload["state_dict"],
        calibration=payload.get("calibration"),
        tiers=payload.get("tiers"),
        provenance=dict(payload.get("provenance") or {}),
        learning=payload.get("learning") or None,
        path=path,
        sha256=file_sha256(path),
    )
    ckpt.build_model()  # validates weights against the architecture
    return ckpt


def import_official(arch: str, weights: str | os.PathLike, out: str | os.PathLike) -> Checkpoint:
    """Wrap an official LaDeDa9 / Tiny-LaDeDa state dict with the official test preprocessing."""
    weights = Path(weights)
    if not weights.is_file():
        raise CheckpointError(f"Weights file not found: {weights}")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{weights.name} is not a readable PyTorch file ({type(exc).__name__}).") from None
    if isinstance(state, dict) and "state_dict" in state and not _looks_like_state_dict(state):
        state = state["state_dict"]
    if not _looks_like_state_dict(state):
        raise CheckpointError(f"{weights.name} does not hold a state dict.")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    record = arch_record(arch)
    representation = "right_diag" if record["name"] == "tiny" else "NPR"
    dtype = "float16" if any(v.dtype == torch.float16 for v in state.values()) else "float32"
    ckpt = Checkpoint(
        arch=record,
        spec=official_spec(representation),
        state_dict=state,
        provenance={
            "source": "official",
            "weights_file": weights.name,
            "weights_sha256": file_sha256(weights),
            "created_at": now_iso(),
            "licence": RESEARCH_LICENCE_NOTE,
        },
    )
    ckpt.build_model()
    ckpt.save(out, dtype=dtype)
    return ckpt

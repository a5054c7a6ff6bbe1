"""Calibrated model versions kept in the data directory, and which one is served.

Why: recalibrating from reviewed items must never overwrite the bundled
checkpoint, must be reversible, and the choice must survive a restart. A
*version* is a full checkpoint file (same weights as its base, a new
calibration record and/or review tiers) written under
``<data dir>/models/``; ``registry.json`` beside it lists the versions, the
active one and every activation (so "roll back" returns to the previous one).

The *base* is the checkpoint the deployment names (``$LADEDA_MODEL`` or the
bundled ``data/models/ladeda9.pt``). A version records its base's SHA-256 and
is served only while that base is unchanged: replacing the bundled model makes
older calibrations inapplicable, and the registry says so instead of serving
them silently.

Writes take an exclusive file lock and replace ``registry.json`` atomically,
so several dashboard processes can share one data directory.
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import re
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from core.model.checkpoint import Checkpoint, file_sha256, load_checkpoint, now_iso
from core.errors import CheckpointError
from core.paths import data_dir, default_model_path

REGISTRY_FILE = "registry.json"
REGISTRY_FORMAT = "ladeda-model-registry"
REGISTRY_FORMAT_VERSION = 1

_SHA_CACHE: dict[tuple[str, int, int], str] = {}
_SHA_LOCK = threading.Lock()


def cached_sha256(path: str | os.PathLike) -> str:
    """File SHA-256, cached by (path, size, mtime) so asking again is free."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _SHA_LOCK:
        if key in _SHA_CACHE:
            return _SHA_CACHE[key]
    digest = file_sha256(p)
    with _SHA_LOCK:
        _SHA_CACHE[key] = digest
    return digest


@dataclass
class ModelVersion:
    """One saved version (a row of the registry)."""

    id: str  #: "v0001", "v0002", ...
    file: str  #: file name under the registry folder
    sha256: str
    created_at: str
    created_by: str | None
    base_path: str
    base_sha256: str
    label: str  #: architecture, e.g. "LaDeDa9"
    calibration_version: str | None
    calibration_method: str | None
    tiers: dict[str, Any] | None
    note: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)  #: before/after on the fitting data
    adapt: dict[str, Any] = field(default_factory=dict)  #: set by ``adapt``: labels used, out-of-fold metrics

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelVersion":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ActiveModel:
    """What is served now, and why."""

    path: Path
    version: ModelVersion | None  #: None: the base checkpoint itself
    base_path: Path
    base_sha256: str
    warning: str | None = None  #: set when the registry's choice could not be honoured

    @property
    def name(self) -> str:
        return self.version.id if self.version else "base"


def weights_key(checkpoint: Checkpoint) -> str:
    """Identifies the weights (and preprocessing) of a checkpoint, ignoring calibration and tiers.

    Versions saved by this registry carry their base's SHA-256; any other file is its own base.
    """
    prov = checkpoint.provenance or {}
    key = f"{prov.get('base_sha256') or checkpoint.sha256}:{checkpoint.spec.fingerprint()}"
    # an adapted version refits the LaDeDa head (fc): same backbone, different network
    return key + (f":head-{prov['ladeda_head_sha256'][:12]}" if prov.get("ladeda_head_sha256") else "")


_BACKBONE_CACHE: dict[tuple[str | None, int], str] = {}


def backbone_key(checkpoint: Checkpoint) -> str:
    """Identifies the backbone and preprocessing only: the key of stored pooled features.

    A hash of every weight except the head (``fc``), so it survives a head refit,
    a recalibration, or rewriting the file with extra learned parts.
    """
    import hashlib

    cache_key = (checkpoint.sha256, id(checkpoint.state_dict))
    with _SHA_LOCK:
        if cache_key in _BACKBONE_CACHE:
            return _BACKBONE_CACHE[cache_key]
    h = hashlib.sha256()
    for name in sorted(checkpoint.state_dict):
        if name.startswith("fc."):
            continue
        t = checkpoint.state_dict[name]
        h.update(name.encode())
        h.update((t.float() if t.is_floating_point() else t).contiguous().numpy().tobytes())
    key = f"backbone-{h.hexdigest()[:24]}:{checkpoint.spec.fingerprint()}"
    with _SHA_LOCK:
        _BACKBONE_CACHE[cache_key] = key
    return key


def rebind(detector: Any, checkpoint: Checkpoint) -> Any:
    """A detector serving ``checkpoint`` that shares ``detector``'s network (no rebuild, no re-trace).

    Only valid when both checkpoints have the same weights and preprocessing
    (same :func:`weights_key`); calibration, tiers and identity come from ``checkpoint``.
    """
    if weights_key(detector.checkpoint) != weights_key(checkpoint):
        raise CheckpointError("Cannot rebind: the two checkpoints do not share weights and preprocessing.")
    other = copy.copy(detector)
    other.checkpoint = checkpoint
    other.spec = checkpoint.spec
    return other


class ModelRegistry:
    """Versions under ``root`` (default ``<data dir>/models``) on top of ``base`` (default model)."""

    def __init__(self, root: str | os.PathLike | None = None, base: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else data_dir() / "models"
        self.base = Path(base) if base is not None else default_model_path()
        self._thread_lock = threading.RLock()

    # -- storage ---------------------------------------------------------
    @property
    def registry_path(self) -> Path:
        return self.root / REGISTRY_FILE

    def _empty(self) -> dict[str, Any]:
        return {"format": REGISTRY_FORMAT, "format_version": REGISTRY_FORMAT_VERSION, "active": None,
                "versions": [], "activations": []}

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.registry_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return self._empty()
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"The model registry {self.registry_path} is unreadable ({exc}).") from None
        if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT:
            raise CheckpointError(f"{self.registry_path} is not a model registry file.")
        for key, default in self._empty().items():
            data.setdefault(key, default)
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".registry.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=2, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.registry_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write under an exclusive lock (threads and processes)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, open(self.root / ".registry.lock", "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                data = self._read()
                yield data
                self._write(data)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    # -- reading ---------------------------------------------------------
    def base_sha256(self) -> str:
        if not self.base.is_file():
            raise CheckpointError(f"Model file not found: {self.base}")
        return cached_sha256(self.base)

    def versions(self) -> list[ModelVersion]:
        """All saved versions, oldest first."""
        return [ModelVersion.from_dict(v) for v in self._read()["versions"]]

    def version(self, version_id: str) -> ModelVersion:
        for v in self.versions():
            if v.id == version_id:
                return v
        raise CheckpointError(f"No saved model version {version_id!r}.")

    def path_of(self, version: ModelVersion) -> Path:
        return self.root / version.file

    def activations(self) -> list[dict[str, Any]]:
        """Every activation (and roll back), oldest first: ``{"version", "at", "by", "action"}``."""
        return list(self._read()["activations"])

    def compatible(self, version: ModelVersion) -> bool:
        """True when ``version`` was made on the current base checkpoint and its file is intact."""
        path = self.path_of(version)
        return (version.base_sha256 == self.base_sha256() and path.is_file()
                and cached_sha256(path) == version.sha256)

    def active(self) -> ActiveModel:
        """The checkpoint to serve: the active version when it still applies, else the base."""
        data = self._read()
        base_sha = self.base_sha256()
        chosen = data.get("active")
        if chosen:
            match = [ModelVersion.from_dict(v) for v in data["versions"] if v["id"] == chosen]
            if not match:
                return ActiveModel(self.base, None, self.base, base_sha,
                                   warning=f"Active version {chosen} is missing from the registry; serving the base.")
            version = match[0]
            path = self.path_of(version)
            if version.base_sha256 != base_sha:
                return ActiveModel(self.base, None, self.base, base_sha, warning=(
                    f"Version {version.id} was calibrated for another base model "
                    f"({version.base_sha256[:12]}…); serving the current base {self.base.name} instead."))
            if not path.is_file() or cached_sha256(path) != version.sha256:
                return ActiveModel(self.base, None, self.base, base_sha, warning=(
                    f"The file of version {version.id} is missing or altered; serving the base."))
            return ActiveModel(path, version, self.base, base_sha)
        return ActiveModel(self.base, None, self.base, base_sha)

    def same_weights(self) -> list[str]:
        """SHA-256s of every model file that shares the base's weights: the base and each version made on it.

        Scorings by any of them describe the same network, so their logits can be calibrated together.
        """
        base_sha = self.base_sha256()
        return [base_sha, *(v.sha256 for v in self.versions() if v.base_sha256 == base_sha)]

    # -- writing ---------------------------------------------------------
    def save_version(self, *, calibration: dict[str, Any] | None, tiers: dict[str, Any] | None = None,
                     created_by: str | None = None, note: str = "", activate: bool = False,
                     head: dict[str, torch.Tensor] | None = None, learning: dict[str, Any] | None = None,
                     adapt: dict[str, Any] | None = None) -> ModelVersion:
        """Write a new version: the base's weights and spec with this calibration and these tiers.

        ``calibration=None`` keeps the base's own calibration; ``tiers=None``
        keeps the base's tiers (or the calibration record's ``tiers``).
        An *adapt* update also passes ``head`` (new ``fc.weight``/``fc.bias``: the
        backbone is untouched), ``learning`` (CLIP head, fusion, OOD guard, see
        core.learning.parts) and ``adapt`` (its provenance and out-of-fold metrics).
        """
        base_sha = self.base_sha256()
        base = load_checkpoint(self.base)
        head_sha = None
        if head is not None:
            import hashlib

            if set(head) != {"fc.weight", "fc.bias"}:
                raise CheckpointError("A head update holds exactly fc.weight and fc.bias.")
            for k, v in head.items():
                if tuple(v.shape) != tuple(base.state_dict[k].shape):
                    raise CheckpointError(f"Head update {k} has shape {tuple(v.shape)}, the model needs "
                                          f"{tuple(base.state_dict[k].shape)}.")
            head = {k: v.detach().to(base.state_dict[k].dtype) for k, v in head.items()}
            h = hashlib.sha256()
            for k in sorted(head):
                h.update(head[k].float().numpy().tobytes())
            head_sha = h.hexdigest()
        if calibration is not None:
            from core.calibration.calibrators import validate_record

            calibration = validate_record(dict(calibration))
        cal = calibration if calibration is not None else base.calibration
        chosen_tiers = tiers if tiers is not None else ((calibration or {}).get("tiers") or base.tiers)
        if chosen_tiers is not None:
            from core.calibration.tiers import validate_tiers

            chosen_tiers = validate_tiers(dict(chosen_tiers))
        dtype = "float16" if any(t.dtype == torch.float16 for t in base.state_dict.values()) else "float32"
        with self._locked() as data:
            number = 1 + max((int(v["id"][1:]) for v in data["versions"] if re.fullmatch(r"v\d+", v["id"])),
                             default=0)
            vid = f"v{number:04d}"
            slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{base.label}-{(cal or {}).get('version') or 'uncalibrated'}")
            file = f"{vid}-{slug}"[:120] + ".pt"
            provenance = {**(base.provenance or {}), "base_path": str(self.base), "base_sha256": base_sha,
                          "registry_version": vid, "created_at": now_iso(), "created_by": created_by,
                          "note": note}
            changes: dict[str, Any] = {}
            if head is not None:
                provenance["ladeda_head_sha256"] = head_sha
                changes["state_dict"] = {**base.state_dict, **head}
            if learning is not None:
                changes["learning"] = learning
            if adapt is not None:
                provenance["adapt"] = adapt
            ckpt = base.with_updates(calibration=cal, tiers=chosen_tiers, provenance=provenance, **changes)
            sha = ckpt.save(self.root / file, dtype=dtype)
            # the version lists the calibration and tiers that serve: the fused ones when it fuses
            fused = bool(learning and learning.get("clip_head") and learning.get("fusion")
                         and learning.get("calibration"))
            shown = learning["calibration"] if fused else cal
            shown_tiers = (learning.get("tiers") or chosen_tiers) if fused else chosen_tiers
            version = ModelVersion(
                id=vid, file=file, sha256=sha, created_at=provenance["created_at"], created_by=created_by,
                base_path=str(self.base), base_sha256=base_sha, label=base.label,
                calibration_version=(shown or {}).get("version"), calibration_method=(shown or {}).get("method"),
                tiers=shown_tiers, note=note,
                metrics={k: (shown or {}).get(k) for k in ("metrics_before", "metrics_after", "n", "n_real", "n_fake")
                         if (shown or {}).get(k) is not None},
                adapt=dict(adapt or {}),
            )
            data["versions"].append(version.to_dict())
            if activate:
                self._activate_in(data, vid, created_by, "activate")
        return version

    def activate(self, version_id: str | None, *, by: str | None = None) -> ActiveModel:
        """Serve ``version_id`` from now on (``None``: the base checkpoint). Survives restarts."""
        with self._locked() as data:
            if version_id is not None:
                match = [ModelVersion.from_dict(v) for v in data["versions"] if v["id"] == version_id]
                if not match:
                    raise CheckpointError(f"No saved model version {version_id!r}.")
                if not self.compatible(match[0]):
                    raise CheckpointError(
                        f"Version {version_id} cannot be served: it was made for another base model "
                        "or its file is missing or altered.")
            self._activate_in(data, version_id, by, "activate")
        return self.active()

    @staticmethod
    def _stack(activations: list[dict[str, Any]]) -> list[str | None]:
        """Replay activations: activate pushes, roll back pops; the top is what is active."""
        stack: list[str | None] = [None]
        for event in activations:
            if event.get("action") == "rollback":
                for _ in range(int(event.get("levels", 1))):
                    if len(stack) > 1:
                        stack.pop()
            else:
                stack.append(event.get("version"))
        return stack

    def rollback(self, *, by: str | None = None) -> ActiveModel:
        """Return to what was active before the current choice; repeating walks further back.

        Versions that can no longer be served (another base, file missing) are
        passed over; at the bottom is the base checkpoint.
        """
        with self._locked() as data:
            stack = self._stack(data["activations"])
            if len(stack) <= 1:
                raise CheckpointError("Nothing to roll back: the base model is served and no earlier choice exists.")
            stack.pop()
            levels = 1
            usable = {v["id"]: ModelVersion.from_dict(v) for v in data["versions"]}
            while len(stack) > 1 and not (stack[-1] in usable and self.compatible(usable[stack[-1]])):
                stack.pop()
                levels += 1
            self._activate_in(data, stack[-1], by, "rollback")
            data["activations"][-1]["levels"] = levels
        return self.active()

    @staticmethod
    def _activate_in(data: dict[str, Any], version_id: str | None, by: str | None, action: str) -> None:
        data["active"] = version_id
        data["activations"].append({"version": version_id, "at": now_iso(), "by": by, "action": action})

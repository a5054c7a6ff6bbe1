"""Evidence and features stored once per (item, model weights), beside the image folder.

Why: showing an item's evidence (patch map, top patches, guardrail report) or
learning from it (pooled LaDeDa features, CLIP embedding) must never need a
new model pass. What one model computed for one image is written once, as a
compressed ``.npz`` (arrays) plus a JSON sidecar (plain facts), under
``<root>/<model_key>/<kind>/ab/<sha256>.npz``. Like the image blobs the folder
is content-addressed and written atomically, so several dashboard replicas
can share it (point ``artifact_dir`` at the same shared folder).

``model_key`` identifies the weights and preprocessing (``weights_key`` of a
checkpoint, or an encoder's id); calibration changes do not invalidate it.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from core.errors import DetectorError

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class ArtifactError(DetectorError):
    """An artifact request that cannot be honoured (bad key or unreadable file)."""

    code = "artifact_error"


def model_dir_name(model_key: str) -> str:
    """A file-system-safe, stable folder name for any model key (readable prefix + short hash)."""
    prefix = re.sub(r"[^A-Za-z0-9._-]+", "-", str(model_key))[:24].strip("-.") or "model"
    return f"{prefix}-{hashlib.sha256(str(model_key).encode()).hexdigest()[:12]}"


#: Bytes of decoded artifacts kept in memory per store (patch maps, features, hashes: a few KB each).
READ_CACHE_BYTES = 64 * 1024 * 1024


class ArtifactStore:
    """Arrays + metadata keyed by (sha256 of the image bytes, model key, kind).

    Reads are cached in memory (least recently used, :data:`READ_CACHE_BYTES`), keyed by the file's
    path, size and modification time, so a replaced file is read again. A page that shows an item
    reads its evidence and its neighbours' hashes and embeddings on every rerun; decompressing them
    each time was a tenth of a Review rerun. Callers get copies, so the cache cannot be altered.
    """

    def __init__(self, root: str | os.PathLike, read_cache_bytes: int = READ_CACHE_BYTES) -> None:
        self.root = Path(root)
        self._cache: OrderedDict[tuple, tuple[dict[str, np.ndarray], dict[str, Any], int]] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = int(read_cache_bytes)
        self._lock = threading.Lock()  # sessions share one store

    def _path(self, sha256: str, model_key: str, kind: str) -> Path:
        sha = str(sha256).lower()
        if not _SHA_RE.match(sha):
            raise ArtifactError(f"Not a SHA-256 hex digest: {sha256!r}.")
        if not _KIND_RE.match(kind):
            raise ArtifactError(f"Not a valid artifact kind: {kind!r}.")
        return self.root / model_dir_name(model_key) / kind / sha[:2] / f"{sha}.npz"

    def put(self, sha256: str, model_key: str, kind: str, arrays: Mapping[str, np.ndarray],
            meta: Mapping[str, Any] | None = None) -> Path:
        """Write (or replace) one artifact; the arrays are stored compressed, dtypes kept."""
        from core.review.store.blobs import write_atomic  # late: the store package imports this module

        path = self._path(sha256, model_key, kind)
        buf = io.BytesIO()
        payload = {k: np.asarray(v) for k, v in arrays.items()}
        payload["__meta__"] = np.frombuffer(
            json.dumps({"model_key": str(model_key), **dict(meta or {})}, sort_keys=True,
                       default=_json_default).encode("utf-8"), dtype=np.uint8)
        np.savez_compressed(buf, **payload)
        write_atomic(path, buf.getvalue())
        return path

    def get(self, sha256: str, model_key: str, kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """``(arrays, meta)``, or None when nothing was stored for this key."""
        path = self._path(sha256, model_key, kind)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
        if hit is None:
            try:
                with np.load(path, allow_pickle=False) as npz:
                    arrays = {k: npz[k] for k in npz.files if k != "__meta__"}
                    meta = json.loads(bytes(npz["__meta__"]).decode("utf-8")) if "__meta__" in npz.files else {}
            except FileNotFoundError:
                return None
            except (OSError, ValueError, KeyError) as exc:
                raise ArtifactError(f"The stored {kind} for {sha256[:12]}… is unreadable ({exc}).") from None
            hit = (arrays, meta, sum(a.nbytes for a in arrays.values()) + 512)
            self._remember(key, hit)
        arrays, meta, _ = hit
        return {k: v.copy() for k, v in arrays.items()}, json.loads(json.dumps(meta))

    def _remember(self, key: tuple, entry: tuple[dict[str, np.ndarray], dict[str, Any], int]) -> None:
        if entry[2] > self._cache_limit:
            return
        with self._lock:
            if key in self._cache:
                return
            self._cache[key] = entry
            self._cache_bytes += entry[2]
            while self._cache_bytes > self._cache_limit and self._cache:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= old[2]

    def has(self, sha256: str, model_key: str, kind: str) -> bool:
        return self._path(sha256, model_key, kind).is_file()

    def shas(self, model_key: str, kind: str) -> Iterator[str]:
        """Every item that has this kind of artifact for this model (order: by hash)."""
        folder = self.root / model_dir_name(model_key) / kind
        if not folder.is_dir():
            return
        for path in sorted(folder.glob("??/*.npz")):
            yield path.stem


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)

"""Features kept per (image, model weights), so heads can be refitted without a new forward pass.

Two kinds, both stored through :class:`core.review.artifacts.ArtifactStore`:

- ``ladeda_pooled``: the LaDeDa pooled features (mean over patches of the
  2048-d features before ``fc``; float16), keyed by the checkpoint's
  :func:`~core.model.registry.weights_key`;
- ``clip``: the CLIP embedding (512-d, unit norm), the final CLS token (768-d)
  and the CLS token after each of the 12 blocks (12×768), float16, keyed by the
  encoder's key. Artifacts stored before the per-block tokens existed have no
  ``layers``; readers that need them treat the item as lacking CLIP features. (``layers[-1]`` is
  the final CLS token, so a :class:`FeatureSet` file with the layers stores it only there.)

:func:`extract_folder` computes them for a labelled folder (``0_real``/``1_fake``
anywhere below it) once per model, caching per image, and returns a
:class:`FeatureSet` whose ``data_hash`` identifies exactly which files went in.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from core.errors import DetectorError
from core.imageio import IMAGE_SUFFIXES, DecodedImage
from core.review.artifacts import ArtifactStore

if TYPE_CHECKING:
    from core.encoders.clip import ClipFeatures

LADEDA_KIND = "ladeda_pooled"
CLIP_KIND = "clip"


#: CLIP head feature that reads the CLS token after each of the 12 blocks, concatenated (12×768).
CLIP_LAYERS_FEATURE = "clip_cls_layers"


def needs_layers(feature: str) -> bool:
    """Whether a CLIP head reading ``feature`` needs the per-block CLS tokens."""
    return feature == CLIP_LAYERS_FEATURE


class FeatureError(DetectorError):
    """Features that are missing or do not match the model asked about."""

    code = "feature_error"


def ladeda_key(checkpoint: Any) -> str:
    """Key of a checkpoint's pooled features: its backbone (a head refit keeps them valid)."""
    from core.model.registry import backbone_key

    return backbone_key(checkpoint)


def put_ladeda(artifacts: ArtifactStore, sha: str, key: str, pooled: np.ndarray) -> None:
    artifacts.put(sha, key, LADEDA_KIND, {"pooled": np.asarray(pooled, dtype=np.float16)})


def put_clip(artifacts: ArtifactStore, sha: str, key: str, features: "ClipFeatures") -> None:
    arrays = {"embedding": np.asarray(features.embedding, dtype=np.float16),
              "cls": np.asarray(features.cls, dtype=np.float16)}
    if features.layers is not None:
        arrays["layers"] = np.asarray(features.layers, dtype=np.float16)
    artifacts.put(sha, key, CLIP_KIND, arrays)


def get_ladeda(artifacts: ArtifactStore, sha: str, key: str) -> np.ndarray | None:
    got = artifacts.get(sha, key, LADEDA_KIND)
    return None if got is None else got[0]["pooled"].astype(np.float32)


def get_clip(artifacts: ArtifactStore, sha: str, key: str) -> "ClipFeatures | None":
    from core.encoders.clip import ClipFeatures

    got = artifacts.get(sha, key, CLIP_KIND)
    if got is None:
        return None
    arrays = got[0]
    layers = arrays.get("layers")
    return ClipFeatures(embedding=arrays["embedding"].astype(np.float32), cls=arrays["cls"].astype(np.float32),
                        layers=None if layers is None else layers.astype(np.float32))


def has_clip_layers(artifacts: ArtifactStore, sha: str, key: str) -> bool:
    """Whether the stored CLIP features of ``sha`` include the per-block CLS tokens."""
    got = get_clip(artifacts, sha, key)
    return got is not None and got.layers is not None


@dataclass
class FeatureSet:
    """Rows of features with labels; CLIP arrays are None when the encoder was unavailable."""

    sha256: list[str]
    labels: np.ndarray  #: 0 real, 1 fake
    ladeda: np.ndarray  #: N×2048 float32
    clip_embedding: np.ndarray | None = None  #: N×512
    clip_cls: np.ndarray | None = None  #: N×768
    clip_layers: np.ndarray | None = None  #: N×12×768 (CLS token after each block); None if any row lacks it
    groups: list[str] = field(default_factory=list)  #: e.g. source folder or file prefix
    data_hash: str = ""
    ladeda_key: str = ""
    clip_key: str | None = None
    #: Where each row came from (a corpus manifest's ``source``; "" unknown). Heads weigh sources equally.
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sha256)

    def has_clip_for(self, feature: str) -> bool:
        """Whether every row has the CLIP features a head reading ``feature`` needs."""
        return self.clip_embedding is not None and (self.clip_layers is not None or not needs_layers(feature))

    def subset(self, index: np.ndarray | list[int]) -> "FeatureSet":
        idx = np.asarray(index, dtype=int)
        return FeatureSet(
            sha256=[self.sha256[i] for i in idx], labels=self.labels[idx], ladeda=self.ladeda[idx],
            clip_embedding=None if self.clip_embedding is None else self.clip_embedding[idx],
            clip_cls=None if self.clip_cls is None else self.clip_cls[idx],
            clip_layers=None if self.clip_layers is None else self.clip_layers[idx],
            groups=[self.groups[i] for i in idx] if self.groups else [],
            data_hash=self.data_hash, ladeda_key=self.ladeda_key, clip_key=self.clip_key,
            sources=[self.sources[i] for i in idx] if self.sources else [])

    @staticmethod
    def concat(parts: list["FeatureSet"]) -> "FeatureSet":
        parts = [p for p in parts if len(p)]
        if not parts:
            raise FeatureError("No features to combine.")
        has_clip = all(p.clip_embedding is not None for p in parts)
        has_layers = has_clip and all(p.clip_layers is not None for p in parts)
        return FeatureSet(
            sha256=[s for p in parts for s in p.sha256], labels=np.concatenate([p.labels for p in parts]),
            ladeda=np.concatenate([p.ladeda for p in parts]),
            clip_embedding=np.concatenate([p.clip_embedding for p in parts]) if has_clip else None,
            clip_cls=np.concatenate([p.clip_cls for p in parts]) if has_clip else None,
            clip_layers=np.concatenate([p.clip_layers for p in parts]) if has_layers else None,
            groups=[g for p in parts for g in (p.groups or [""] * len(p))],
            data_hash=hashlib.sha256("".join(p.data_hash for p in parts).encode()).hexdigest(),
            ladeda_key=parts[0].ladeda_key, clip_key=parts[0].clip_key if has_clip else None,
            sources=([src for p in parts for src in (p.sources or [""] * len(p))]
                     if any(p.sources for p in parts) else []))

    # -- compact file (shipped in data/models/) ---------------------------
    def save(self, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> None:
        import json

        arrays: dict[str, np.ndarray] = {
            "sha256": np.asarray(self.sha256), "labels": self.labels.astype(np.int8),
            "ladeda": self.ladeda.astype(np.float16), "groups": np.asarray(self.groups or [""] * len(self)),
        }
        if self.sources:
            arrays["sources"] = np.asarray(self.sources)
        if self.clip_embedding is not None:
            arrays["clip_embedding"] = self.clip_embedding.astype(np.float16)
            if self.clip_layers is not None:  # the final CLS token is the last block's: stored once
                arrays["clip_layers"] = self.clip_layers.astype(np.float16)
            else:
                arrays["clip_cls"] = self.clip_cls.astype(np.float16)
        info = {"data_hash": self.data_hash, "ladeda_key": self.ladeda_key, "clip_key": self.clip_key,
                **(meta or {})}
        arrays["__meta__"] = np.frombuffer(json.dumps(info, sort_keys=True).encode(), dtype=np.uint8)
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureSet":
        import json

        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["__meta__"]).decode())
                has_clip = "clip_embedding" in z.files
                layers = z["clip_layers"].astype(np.float32) if has_clip and "clip_layers" in z.files else None
                cls_token = None
                if has_clip:  # files without clip_cls hold it as the last block's CLS token
                    cls_token = z["clip_cls"].astype(np.float32) if "clip_cls" in z.files else layers[:, -1].copy()
                return cls(sha256=[str(s) for s in z["sha256"]], labels=z["labels"].astype(int),
                           ladeda=z["ladeda"].astype(np.float32),
                           clip_embedding=z["clip_embedding"].astype(np.float32) if has_clip else None,
                           clip_cls=cls_token, clip_layers=layers,
                           groups=[str(g) for g in z["groups"]], data_hash=meta.get("data_hash", ""),
                           ladeda_key=meta.get("ladeda_key", ""), clip_key=meta.get("clip_key"),
                           sources=[str(g) for g in z["sources"]] if "sources" in z.files else [])
        except FileNotFoundError:
            raise FeatureError(f"Base features file not found: {path}") from None
        except (OSError, ValueError, KeyError) as exc:
            raise FeatureError(f"Base features file {path} is unreadable ({exc}).") from None


def labelled_files(root: str | os.PathLike) -> list[tuple[Path, int, str]]:
    """(file, label, group) for every image under a ``0_real``/``1_fake`` folder below ``root``.

    The group is the path between ``root`` and the class folder (a test source),
    or, directly under ``root``, the file-name prefix before the first ``-``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FeatureError(f"Not a folder: {root}")
    out: list[tuple[Path, int, str]] = []
    for cls_name, label in (("0_real", 0), ("1_fake", 1)):
        for folder in sorted(root.rglob(cls_name)):
            if not folder.is_dir():
                continue
            rel = folder.parent.relative_to(root)
            for f in sorted(folder.iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                    group = str(rel) if str(rel) != "." else f.name.split("-")[0]
                    out.append((f, label, group))
    if not out:
        raise FeatureError(f"No images under {root}/**/0_real or 1_fake.")
    return out


MANIFEST = "manifest.csv"


def manifest_sources(root: str | os.PathLike, files: list[Path]) -> list[str]:
    """Each file's ``source`` from a ``manifest.csv`` (columns ``path``, ``source``; paths relative to
    the manifest's folder) in ``root`` or one of the two folders above it (``corpus/train``,
    ``unseen/<source>/train``), as the corpus ships one; [] without one.

    Why: file names say little about where an image came from (the corpus's reals of one source
    share prefixes with another's), and heads weigh each source equally (see
    :func:`core.learning.heads.balanced_weights`) so that a big source does not become the model.
    """
    import csv

    root = Path(os.path.abspath(root))  # not resolve(): a symlinked image is listed where the link is
    for folder in (root, root.parent, root.parent.parent):  # corpus/train; unseen/<source>/train
        manifest = folder / MANIFEST
        if not manifest.is_file():
            continue
        try:
            with manifest.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error):
            return []
        if not rows or "path" not in rows[0] or "source" not in rows[0]:
            return []
        by_path = {r["path"]: r["source"] or "" for r in rows}
        out = []
        for f in files:
            try:
                out.append(by_path.get(str(Path(os.path.abspath(f)).relative_to(folder)), ""))
            except ValueError:
                out.append("")
        return out if any(out) else []
    return []


def data_hash(files: Iterable[tuple[str, int]]) -> str:
    """Hash of (image SHA-256, label) pairs, order-independent: identifies a training set."""
    h = hashlib.sha256()
    for sha, label in sorted(files):
        h.update(f"{sha}:{label}\n".encode())
    return h.hexdigest()


def extract_folder(root: str | os.PathLike, detector: Any, encoder: Any | None, cache: ArtifactStore,
                   *, progress: bool = False, clip_first: bool = True) -> FeatureSet:
    """Features for every labelled image under ``root``; cached per image in ``cache``.

    With ``clip_first`` the cheap CLIP pass runs over every image before the
    slow LaDeDa pass, so CLIP experiments can start while LaDeDa still runs.
    """
    files = labelled_files(root)
    lkey = ladeda_key(detector.checkpoint)
    ckey = encoder.key if encoder is not None else None
    shas: list[str] = []
    decoded_cache: dict[Path, DecodedImage] = {}

    def decode(f: Path) -> DecodedImage:
        if f not in decoded_cache:
            decoded_cache.clear()
            decoded_cache[f] = detector.decode(f)
        return decoded_cache[f]

    import hashlib as _h

    for f, _, _ in files:
        shas.append(_h.sha256(f.read_bytes()).hexdigest())
    passes = (["clip", "ladeda"] if clip_first else ["both"]) if encoder is not None else ["ladeda"]
    t0 = time.time()
    for which in passes:
        for i, ((f, _, _), sha) in enumerate(zip(files, shas)):
            if which in ("clip", "both") and not has_clip_layers(cache, sha, ckey):
                put_clip(cache, sha, ckey, encoder.encode(decode(f)))
            if which in ("ladeda", "both") and not cache.has(sha, lkey, LADEDA_KIND):
                model_input = detector.prepare(decode(f))
                _, pooled = detector.forward(model_input.tensor)
                put_ladeda(cache, sha, lkey, pooled[0])
            if progress and (i + 1) % 20 == 0:
                print(f"[{which}] {i + 1}/{len(files)} {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    labels = np.asarray([lab for _, lab, _ in files], dtype=int)
    lad = np.stack([get_ladeda(cache, s, lkey) for s in shas])
    emb = cls_tok = layers = None
    if ckey is not None:
        got = [get_clip(cache, s, ckey) for s in shas]
        emb, cls_tok = np.stack([c.embedding for c in got]), np.stack([c.cls for c in got])
        layers = np.stack([c.layers for c in got])
    return FeatureSet(sha256=shas, labels=labels, ladeda=lad, clip_embedding=emb, clip_cls=cls_tok,
                      clip_layers=layers,
                      groups=[g for _, _, g in files], data_hash=data_hash(zip(shas, labels.tolist())),
                      ladeda_key=lkey, clip_key=ckey, sources=manifest_sources(root, [f for f, _, _ in files]))

"""Similar reviewed items: nearest labelled images by CLIP embedding, and duplicates by perceptual hash.

Why: a reviewer should see at once that this image (or a re-encoded, resized
copy of it) was judged before, and how similar judged images were labelled.
Perceptual hashes (``imagehash``: pHash and dHash, 64 bits each) survive
re-encoding and resizing; the exact duplicate is the same SHA-256.
Neighbours by CLIP embedding (cosine distance) need the encoder; without it
only the hash matches are offered, and the result says so.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from core.learning.features import get_clip

if TYPE_CHECKING:
    from core.review.store import ReviewStore

HASH_KIND = "phash"
HASH_KEY = "imagehash-4:phash+dhash-64"
#: Hamming distance (of 64 bits, either hash) at or below which two images are near duplicates.
NEAR_DUPLICATE_BITS = 6
#: Below this many labelled items with embeddings, neighbours do not mean much.
MIN_STORE = 20


def image_hashes(image: Image.Image) -> tuple[int, int]:
    import imagehash

    rgb = image.convert("RGB")
    return int(str(imagehash.phash(rgb)), 16), int(str(imagehash.dhash(rgb)), 16)


def put_hashes(artifacts: Any, sha: str, image: Image.Image) -> None:
    p, d = image_hashes(image)
    artifacts.put(sha, HASH_KEY, HASH_KIND, {"hashes": np.asarray([p, d], dtype=np.uint64)})


def get_hashes(artifacts: Any, sha: str) -> tuple[int, int] | None:
    got = artifacts.get(sha, HASH_KEY, HASH_KIND)
    if got is None:
        return None
    h = got[0]["hashes"]
    return int(h[0]), int(h[1])


def hamming(a: int, b: int) -> int:
    return int(bin(int(a) ^ int(b)).count("1"))


@dataclass
class Neighbour:
    sha256: str
    name: str | None
    label: str
    reviewer: str | None
    labelled_at: str | None
    distance: float | None  #: cosine distance of CLIP embeddings (None: matched by hash only)
    hash_bits: int | None  #: smallest Hamming distance of the two perceptual hashes
    duplicate: str | None  #: "exact", "near" or None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NeighbourResult:
    neighbours: list[Neighbour]
    n_labelled: int
    message: str | None  #: e.g. the store is too small, or the encoder is missing

    def to_json(self) -> dict[str, Any]:
        return {"neighbours": [n.to_json() for n in self.neighbours], "n_labelled": self.n_labelled,
                "message": self.message}


def similar_items(store: "ReviewStore", *, sha256: str, image: Image.Image, clip_embedding: np.ndarray | None,
                  clip_key: str | None, k: int = 5, min_store: int = MIN_STORE,
                  include_self: bool = True) -> NeighbourResult:
    """The ``k`` nearest labelled items. ``sha256`` itself is among them only when it is labelled (an exact
    duplicate) and ``include_self``: a blind second reviewer must not see the item's own label this way."""
    rows = [r for r in store.labelled_items(limit=None) if include_self or r["sha256"] != sha256]
    ph, dh = image_hashes(image)
    found: list[Neighbour] = []
    embs: list[np.ndarray] = []
    with_emb: list[dict[str, Any]] = []
    for r in rows:
        hashes = get_hashes(store.artifacts, r["sha256"])
        bits = min(hamming(ph, hashes[0]), hamming(dh, hashes[1])) if hashes else None
        dup = "exact" if r["sha256"] == sha256 else ("near" if bits is not None and bits <= NEAR_DUPLICATE_BITS
                                                     else None)
        r["_bits"], r["_dup"] = bits, dup
        feats = get_clip(store.artifacts, r["sha256"], clip_key) if clip_key else None
        if feats is not None:
            embs.append(feats.embedding)
            with_emb.append(r)
        if dup:
            found.append(_neighbour(r, None))
    message = None
    if clip_embedding is not None and embs:
        e = np.stack(embs)
        q = np.asarray(clip_embedding, np.float32)
        d = 1.0 - (e / np.linalg.norm(e, axis=1, keepdims=True)) @ (q / max(np.linalg.norm(q), 1e-12))
        dup_shas = {n.sha256: n for n in found}
        for i in np.argsort(d, kind="stable")[:k + len(dup_shas)]:
            r = with_emb[int(i)]
            if r["sha256"] in dup_shas:
                dup_shas[r["sha256"]].distance = round(float(max(d[i], 0.0)), 4)
                continue
            found.append(_neighbour(r, round(float(max(d[i], 0.0)), 4)))
    elif clip_embedding is None:
        message = "The CLIP encoder is not installed: only exact and near duplicates (perceptual hash) are shown."
    if len(with_emb) < min_store and message is None:
        message = (f"Only {len(with_emb)} labelled items have an embedding: with fewer than {min_store}, "
                   "the nearest ones may not be similar at all.")
    # duplicates first, then by distance
    found.sort(key=lambda n: (n.duplicate is None, n.distance if n.distance is not None else -1.0))
    dups = [n for n in found if n.duplicate]
    rest = [n for n in found if not n.duplicate][:k]
    return NeighbourResult(neighbours=dups + rest, n_labelled=len(rows), message=message)


def _neighbour(r: dict[str, Any], distance: float | None) -> Neighbour:
    return Neighbour(sha256=r["sha256"], name=r.get("name"), label=r["label"], reviewer=r.get("reviewer"),
                     labelled_at=r.get("labelled_at"), distance=distance, hash_bits=r.get("_bits"),
                     duplicate=r.get("_dup"))

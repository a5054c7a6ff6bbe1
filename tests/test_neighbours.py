"""Similar reviewed items: distance order by CLIP embedding, near duplicates by perceptual hash."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from core.encoders.clip import ClipFeatures
from core.learning.features import put_clip
from core.learning.neighbours import put_hashes, similar_items
from core.review.store import ReviewStore

KEY = "test-encoder"


def _png(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)  # blocky: a distinct perceptual hash per seed
    return Image.fromarray(base).resize((128, 128), Image.Resampling.BILINEAR)


def _store_with(tmp_path, n: int, dim: int = 16):
    store = ReviewStore(tmp_path / "r.sqlite")
    rng = np.random.default_rng(0)
    query = rng.normal(size=dim)
    shas = []
    for i in range(n):
        img = _image(100 + i)
        sha = store.add_item(_png(img), name=f"item{i}.png")
        # embeddings at increasing angle from the query: item i is the i-th nearest
        other = rng.normal(size=dim)
        other -= other.dot(query) / query.dot(query) * query
        emb = np.cos(0.05 * (i + 1)) * query / np.linalg.norm(query) + np.sin(0.05 * (i + 1)) * other / np.linalg.norm(other)
        put_clip(store.artifacts, sha, KEY, ClipFeatures(embedding=emb, cls=np.zeros(768)))
        put_hashes(store.artifacts, sha, img)
        store.label(sha, "fake" if i % 2 else "real", reviewer=f"rev{i % 3}")
        shas.append(sha)
    return store, query, shas


def test_neighbours_come_in_distance_order(tmp_path):
    store, query, shas = _store_with(tmp_path, 25)
    res = similar_items(store, sha256="0" * 64, image=_image(999), clip_embedding=query, clip_key=KEY, k=6)
    got = [n.sha256 for n in res.neighbours]
    assert got == shas[:6]
    d = [n.distance for n in res.neighbours]
    assert d == sorted(d) and d[0] > 0
    assert res.neighbours[0].label == "real" and res.neighbours[0].reviewer == "rev0"
    assert res.message is None and res.n_labelled == 25
    store.close()


def test_re_encoded_copy_is_a_near_duplicate(tmp_path):
    store, query, shas = _store_with(tmp_path, 25)
    original = _image(100 + 7)
    copy = Image.open(io.BytesIO(_png(original.resize((96, 96)), "JPEG", quality=60))).convert("RGB")
    res = similar_items(store, sha256="1" * 64, image=copy, clip_embedding=None, clip_key=KEY, k=5)
    dups = [n for n in res.neighbours if n.duplicate]
    assert [n.sha256 for n in dups] == [shas[7]] and dups[0].duplicate == "near"
    assert dups[0].hash_bits is not None and dups[0].hash_bits <= 6
    assert "not installed" in res.message
    # the very same bytes, already labelled: an exact duplicate, shown first
    exact = similar_items(store, sha256=shas[3], image=_image(103), clip_embedding=query, clip_key=KEY, k=3)
    assert exact.neighbours[0].sha256 == shas[3] and exact.neighbours[0].duplicate == "exact"
    # in a blind second review the item's own label must not show through
    blind = similar_items(store, sha256=shas[3], image=_image(103), clip_embedding=query, clip_key=KEY, k=3,
                          include_self=False)
    assert shas[3] not in [n.sha256 for n in blind.neighbours] and len(blind.neighbours) == 3
    assert not any(n.duplicate == "exact" for n in blind.neighbours)
    store.close()


def test_small_store_says_so(tmp_path):
    store, query, _ = _store_with(tmp_path, 4)
    res = similar_items(store, sha256="2" * 64, image=_image(5), clip_embedding=query, clip_key=KEY, k=3)
    assert len(res.neighbours) == 3
    assert "Only 4 labelled items" in res.message
    store.close()

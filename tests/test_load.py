"""Several analysts at once: analyses running in parallel threads (as Streamlit runs sessions)
on the real detector, the real face cascades and one shared store."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from core.paths import DEFAULT_MODEL
from core.review.actions import submit as submit_mod
from core.review.store import ReviewStore
from core.scoring.detector import Detector
from core.scoring.guardrails import faces

from .conftest import CORPUS, encode, make_photo

THREADS = 4


def _face_image():
    """A real portrait from the corpus when present, else a photo-like image (the cascades run either way)."""
    found = sorted((CORPUS / "test").glob("faces-*/0_real/*.jpg")) if CORPUS.is_dir() else []
    if found:
        from PIL import Image

        return Image.open(found[0]).convert("RGB")
    return make_photo(640, 480, seed=3)


def test_face_detection_in_parallel_threads_matches_one_thread():
    image = _face_image()
    expected = [(f.box, f.pass_name) for f in faces.detect_faces(image)]
    start = threading.Barrier(THREADS)

    def work(_):
        start.wait()
        return [[(f.box, f.pass_name) for f in faces.detect_faces(image)] for _ in range(12)]

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(work, range(THREADS)))
    assert all(r == expected for rs in results for r in rs)


def test_each_thread_has_its_own_cascade():
    got = []
    lock = threading.Lock()

    def grab():
        c = faces._cascade("frontal")
        assert faces._cascade("frontal") is c  # loaded once per thread
        with lock:
            got.append(id(c))
        hold.wait()  # keep the thread (and its cascade) alive until all have one

    hold = threading.Barrier(THREADS + 1)
    threads = [threading.Thread(target=grab) for _ in range(THREADS)]
    for t in threads:
        t.start()
    hold.wait()
    for t in threads:
        t.join()
    assert len(set(got)) == THREADS


@pytest.mark.slow
def test_concurrent_uploads_on_the_real_detector_all_succeed_with_sequential_results(tmp_path):
    det = Detector.load(DEFAULT_MODEL)  # the TorchScript serving path, shared like st.cache_resource shares it
    store = ReviewStore(tmp_path / "review.sqlite")
    uploads = [encode(_face_image() if i % 2 else make_photo(320, 240, seed=i), "PNG") for i in range(THREADS * 2)]
    start = threading.Barrier(THREADS)
    waits: list[int] = []

    def session(k):
        start.wait()
        return [submit_mod.submit(det, uploads[k * 2 + j], f"s{k}-{j}.png", store, f"analyst{k}",
                                  on_wait=waits.append) for j in range(2)]

    with ThreadPoolExecutor(THREADS) as pool:
        subs = [s for batch in pool.map(session, range(THREADS)) for s in batch]
    assert len(subs) == THREADS * 2 and all(s.scoring_id is not None for s in subs)
    assert waits and max(waits) >= 1  # the gate told waiting sessions their place
    (tmp_path / "alone").mkdir()
    alone = ReviewStore(tmp_path / "alone" / "review.sqlite")  # its own artifact folder: computed, not reused
    for s, data in zip(subs, uploads):
        ref = submit_mod.submit(det, data, "ref.png", alone, rescore=True)
        assert ref.evidence.tier == s.evidence.tier
        assert abs(ref.evidence.logit - s.evidence.logit) < 1e-4
        assert len(ref.evidence.faces) == len(s.evidence.faces)
        np.testing.assert_allclose(ref.evidence.patch_logits, s.evidence.patch_logits, atol=1e-4)
    # the portrait is uploaded by several sessions: each computed upload is one scoring, reuses add none
    distinct = {s.sha256 for s in subs}
    assert sum(len(store.item(h)["scorings"]) for h in distinct) == sum(1 for s in subs if not s.reused)

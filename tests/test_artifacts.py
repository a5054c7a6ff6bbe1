"""core.review.artifacts: evidence/feature files keyed by (item, model, kind), dtypes kept, bad keys refused."""
import numpy as np
import pytest

from core.review.artifacts import ArtifactError, ArtifactStore, model_dir_name
from core.review.store import ReviewStore

SHA = "ab" * 32


def test_round_trip_keeps_dtype_and_meta_and_separates_models(tmp_path):
    store = ArtifactStore(tmp_path)
    patch = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4).astype(np.float16)
    store.put(SHA, "weights-a", "evidence", {"patch": patch}, {"top": [1, 2]})
    arrays, meta = store.get(SHA, "weights-a", "evidence")
    assert arrays["patch"].dtype == np.float16 and np.array_equal(arrays["patch"], patch)
    assert meta == {"top": [1, 2], "model_key": "weights-a"}
    assert store.get(SHA, "weights-b", "evidence") is None
    assert not store.has(SHA, "weights-a", "features") and store.has(SHA, "weights-a", "evidence")
    assert list(store.shas("weights-a", "evidence")) == [SHA]
    assert model_dir_name("a/b:c") != model_dir_name("a-b-c")


def test_bad_keys_and_corrupt_files_give_typed_errors(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(ArtifactError):
        store.put("not-a-sha", "m", "evidence", {})
    with pytest.raises(ArtifactError):
        store.put(SHA, "m", "../escape", {})
    path = store.put(SHA, "m", "evidence", {"x": np.zeros(2)})
    path.write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="unreadable"):
        store.get(SHA, "m", "evidence")


def test_review_store_keeps_artifacts_beside_its_images(tmp_path):
    with ReviewStore(tmp_path / "db" / "review.sqlite") as store:
        assert store.artifact_dir == tmp_path / "db" / "artifacts"
        store.artifacts.put(SHA, "m", "features", {"f": np.ones(4, np.float16)})
    assert (tmp_path / "db" / "artifacts").is_dir()


def test_reads_are_cached_as_copies_and_a_replaced_file_is_read_again(tmp_path):
    store = ArtifactStore(tmp_path, read_cache_bytes=4096)
    store.put(SHA, "m", "evidence", {"x": np.arange(4, dtype=np.float32)}, {"n": 1})
    first, meta = store.get(SHA, "m", "evidence")
    first["x"][:] = -1  # a caller scribbling on its copy
    meta["n"] = 99
    again, meta2 = store.get(SHA, "m", "evidence")
    assert np.array_equal(again["x"], np.arange(4, dtype=np.float32)) and meta2["n"] == 1
    store.put(SHA, "m", "evidence", {"x": np.arange(6, dtype=np.float32)}, {"n": 2})  # re-scored: new file
    replaced, meta3 = store.get(SHA, "m", "evidence")
    assert replaced["x"].shape == (6,) and meta3["n"] == 2
    other = "cd" * 32
    store.put(other, "m", "evidence", {"x": np.zeros(2000, np.float32)})  # 8 KB: over the budget, not kept
    assert store.get(other, "m", "evidence")[0]["x"].shape == (2000,)
    assert store._cache_bytes <= 4096

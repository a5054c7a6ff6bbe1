"""adapt on a real SQLite store scored by a real model: beats the active model out of fold,
refuses too few labels, and the refitted head keeps the patch map exact."""
from __future__ import annotations

import numpy as np
import pytest

from core.learning.adapt import AdaptError, adapt
from core.model.checkpoint import load_checkpoint
from core.model.registry import ModelRegistry
from core.paths import DEFAULT_TINY_MODEL
from core.review.store import ReviewStore
from core.scoring.analysis import analyse, record_analysis
from core.scoring.detector import Detector

from .conftest import graded_noise_png

N_PER_CLASS = 24


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A store where every item was scored through the product's own path (features stored)."""
    root = tmp_path_factory.mktemp("adapt")
    det = Detector.load(DEFAULT_TINY_MODEL, fast=False)
    store = ReviewStore(root / "r.sqlite")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(2 * N_PER_CLASS):
        a = analyse(det, graded_noise_png(rng, i), name=f"i{i}.png", guardrails=False, encoder=None)
        record_analysis(store, a, name=f"i{i}.png", uploader="t")
        rows.append((a.score.sha256, a.score.logit))
    store.close()
    return root, det, rows


def _label(store: ReviewStore, rows, per_class: int, rng) -> None:
    # constructed labels: what the active model calls *least* fake is fake, so it is wrong by design
    order = sorted(rows, key=lambda r: r[1])
    fakes, reals = order[:per_class], order[-per_class:]
    chosen = [(s, "fake") for s, _ in fakes] + [(s, "real") for s, _ in reals]
    for k in rng.permutation(len(chosen)):
        store.label(chosen[k][0], chosen[k][1], reviewer="alice")


def test_adapt_beats_the_active_model_and_keeps_the_patch_map_exact(scored, tmp_path):
    root, det, rows = scored
    store = ReviewStore(root / "r.sqlite")
    _label(store, rows, N_PER_CLASS, np.random.default_rng(1))
    store.label(rows[0][0], "unsure", reviewer="bob")  # excluded, never used
    ckpt = load_checkpoint(DEFAULT_TINY_MODEL)
    result = adapt(store, ckpt, base=None, min_per_class=20)
    store.close()
    cv = result.report["cv"]
    assert cv["after"]["auc"] > cv["before"]["auc"] + 0.3
    assert cv["after"]["auc"] > 0.8 and {"auc", "ap", "ece", "review_share"} <= set(cv["after"])
    prov = result.report["provenance"]
    assert prov["n_labels"] == result.report["n_labels"] == 2 * N_PER_CLASS - 1
    assert prov["skipped"]["unsure"] == 1 and prov["reviewers"] == ["alice"] and prov["labelled_until"]
    # the new head applies to every patch: the patch-map mean is the new image logit
    out = tmp_path / "adapted.pt"
    result.save(out)
    new = Detector.load(out, fast=False)
    r = new.score(graded_noise_png(np.random.default_rng(7), 3))
    assert abs(float(r.patch_logits.astype(np.float64).mean()) - r.logit) < 1e-5
    w = new.model.fc.weight.detach().numpy()[0]
    b = float(new.model.fc.bias.detach().numpy()[0])
    assert abs(float(r.pooled_features @ w + b) - r.logit) < 1e-3
    w_raw, b_raw = result.heads.ladeda.raw()
    assert abs(float(r.pooled_features @ w_raw + b_raw) - r.logit) < 1e-3
    old = det.score(graded_noise_png(np.random.default_rng(7), 3))
    assert abs(old.logit - r.logit) > 1e-3  # it did change
    # a version in the registry: activate and roll back like calibration versions
    reg = ModelRegistry(tmp_path / "models", base=DEFAULT_TINY_MODEL)
    v = result.register(reg, by="alice", activate=True)
    assert reg.active().version.id == v.id and v.adapt["n_labels"] == prov["n_labels"]
    assert load_checkpoint(reg.active().path).provenance["ladeda_head_sha256"]
    assert reg.rollback(by="alice").version is None


def test_adapt_refuses_too_few_labels_and_worse_fits(scored, tmp_path):
    root, _, rows = scored
    ckpt = load_checkpoint(DEFAULT_TINY_MODEL)
    store = ReviewStore(tmp_path / "few.sqlite")
    with pytest.raises(AdaptError, match="Too few reviewer labels.*0 real and 0 fake.*at least 20"):
        adapt(store, ckpt, base=None)
    store.close()
    store = ReviewStore(root / "r.sqlite")
    with pytest.raises(AdaptError, match="at least 100 of each"):
        adapt(store, ckpt, base=None, min_per_class=100)
    store.close()


def test_adapt_refuses_a_fit_worse_out_of_fold_unless_forced(tmp_path):
    det = Detector.load(DEFAULT_TINY_MODEL, fast=False)
    store = ReviewStore(tmp_path / "r.sqlite")
    rng = np.random.default_rng(3)
    rows = []
    for i in range(44):
        a = analyse(det, graded_noise_png(rng, i), name=f"i{i}.png", guardrails=False, encoder=None)
        record_analysis(store, a, name=f"i{i}.png", uploader="t")
        rows.append((a.score.sha256, a.score.logit))
    # labels that agree with the active model exactly: nothing to gain, refitting can only lose
    order = sorted(rows, key=lambda r: r[1])
    for s, _ in order[:22]:
        store.label(s, "real", reviewer="alice")
    for s, _ in order[22:]:
        store.label(s, "fake", reviewer="alice")
    ckpt = load_checkpoint(DEFAULT_TINY_MODEL)
    try:
        result = adapt(store, ckpt, base=None)
    except AdaptError as exc:
        assert "worse" in str(exc)
        forced = adapt(store, ckpt, base=None, force=True)
        assert forced.report["forced"] is True
    else:  # the fit may tie the perfect active model; it must never be reported as better than AUC 1
        assert result.report["cv"]["after"]["auc"] >= result.report["cv"]["before"]["auc"]
    store.close()


def test_stored_clip_features_without_block_tokens_cannot_feed_a_head_that_reads_them(tmp_path):
    """The bundled model's CLIP head reads the CLS token of every block; an item scored before those
    were stored counts as lacking CLIP features there, and still counts for a model that does not need them."""
    from core.encoders.clip import ClipFeatures
    from core.learning.adapt import labelled_features
    from core.learning.features import ladeda_key, put_clip, put_ladeda
    from core.paths import DEFAULT_MODEL
    from core.scoring.analysis import learned_parts

    bundled, tiny = load_checkpoint(DEFAULT_MODEL), load_checkpoint(DEFAULT_TINY_MODEL)
    assert learned_parts(bundled).clip_needs_layers and not learned_parts(tiny).clip_needs_layers
    store = ReviewStore(tmp_path / "r.sqlite")
    rng = np.random.default_rng(5)
    key = "clip-test-key"
    for i in range(6):
        sha = store.add_item(graded_noise_png(rng, i), name=f"i{i}.png")
        for ck in (bundled, tiny):
            put_ladeda(store.artifacts, sha, ladeda_key(ck), rng.normal(size=ck.state_dict["fc.weight"].numel()))
        layers = rng.normal(size=(12, 768)) if i < 4 else None  # items 4 and 5: stored by an older version
        cls = layers[-1] if layers is not None else rng.normal(size=768)
        put_clip(store.artifacts, sha, key, ClipFeatures(embedding=rng.normal(size=512), cls=cls, layers=layers))
        store.label(sha, "fake" if i % 2 else "real", reviewer="alice")
    new = labelled_features(store, bundled, key)
    assert len(new.features) == 4 and new.skipped["no_clip"] == 2
    assert new.features.clip_layers.shape == (4, 12, 768) and new.features.has_clip_for("clip_cls_layers")
    np.testing.assert_allclose(new.features.clip_layers[:, -1], new.features.clip_cls, atol=1e-2)
    old = labelled_features(store, tiny, key)
    assert len(old.features) == 6 and old.skipped["no_clip"] == 0
    assert old.features.clip_layers is None and not old.features.has_clip_for("clip_cls_layers")
    assert old.features.has_clip_for("clip_cls")
    store.close()

"""Heads, fusion, learned parts in the checkpoint, and the served value (LaDeDa-only when CLIP is absent)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.calibration.metrics import auc
from core.encoders.clip import ClipFeatures
from core.learning.features import FeatureSet
from core.learning.fusion import DEFAULT_PRIOR, fit_fusion
from core.learning.heads import LinearHead, fit_logistic
from core.learning.parts import LearnedParts, served_value
from core.model.checkpoint import load_checkpoint
from core.paths import DEFAULT_TINY_MODEL


def _data(rng, n=300, dim=10):
    x = rng.normal(size=(n, dim))
    y = (x[:, 0] - 0.5 * x[:, 1] + 0.5 * rng.normal(size=n) > 0).astype(int)
    return x, y


def test_logistic_head_learns_and_raw_weights_match():
    rng = np.random.default_rng(0)
    x, y = _data(rng)
    head = fit_logistic(x, y, l2=1e-3)
    assert auc(head.logits(x), y) > 0.9
    w, b = head.raw()
    np.testing.assert_allclose(x @ w + b, head.logits(x), rtol=1e-9, atol=1e-9)
    back = LinearHead.from_record(head.to_record())
    np.testing.assert_allclose(back.logits(x), head.logits(x), atol=1e-3)


def test_prior_pulls_a_small_fit_toward_the_current_head():
    rng = np.random.default_rng(1)
    x, y = _data(rng, n=400)
    current = fit_logistic(x, y, l2=1e-3)
    few = rng.choice(400, 12, replace=False)
    yy = 1 - y[few]  # a few contradicting labels
    free = fit_logistic(x[few], yy, l2=1e-3, prior=None, mean=current.mean, scale=current.scale)
    nudged = fit_logistic(x[few], yy, l2=1.0, prior=current)
    d_free = np.linalg.norm(free.weight - current.weight)
    d_nudged = np.linalg.norm(nudged.weight - current.weight)
    assert d_nudged < 0.5 * d_free
    assert auc(nudged.logits(x), y) > 0.8  # still the current model, only nudged


def test_fusion_stays_near_prior_with_few_rows_and_moves_with_many():
    rng = np.random.default_rng(2)
    n = 2000
    y = rng.integers(0, 2, n)
    zl = 3.0 * (2 * y - 1) + rng.normal(size=n)  # LaDeDa strong on this data
    zc = rng.normal(size=n)  # CLIP useless here
    few = fit_fusion(zl[:10], zc[:10], y[:10])
    many = fit_fusion(zl, zc, y)
    assert abs(few.w_ladeda - DEFAULT_PRIOR["w_ladeda"]) < abs(many.w_ladeda - DEFAULT_PRIOR["w_ladeda"])
    assert many.w_ladeda > 1.0 and many.w_ladeda > many.w_clip


def test_learning_record_survives_the_checkpoint_file(tmp_path):
    rng = np.random.default_rng(3)
    ck = load_checkpoint(DEFAULT_TINY_MODEL)
    emb, cls_ = rng.normal(size=(40, 512)), rng.normal(size=(40, 768))
    y = (cls_[:, 0] > 0).astype(int)
    head = fit_logistic(cls_, y, l2=0.1, feature="clip_cls")
    fusion = fit_fusion(rng.normal(size=40), head.logits(cls_), y)
    parts = LearnedParts(clip_head=head, fusion=fusion, tiers={"real_below": 0.3, "fake_at_or_above": 0.7})
    ck.learning = parts.to_record()
    ck.save(tmp_path / "m.pt")
    again = LearnedParts.from_checkpoint(load_checkpoint(tmp_path / "m.pt"))
    assert again.fuses
    np.testing.assert_allclose(again.clip_head.logits(cls_), head.logits(cls_), atol=1e-3)
    v = served_value(ck, again, ladeda_logit=0.4, ladeda_probability=0.6, ladeda_calibrated=True,
                     pooled=None, clip=ClipFeatures(embedding=emb[0], cls=cls_[0]), clip_note=None)
    assert v.used == "fused" and v.components["clip"] is not None
    expected = fusion.w_ladeda * 0.4 + fusion.w_clip * head.logits(cls_[:1])[0] + fusion.bias
    assert abs(v.logit - expected) < 1e-3 and v.components["fused"]["logit"] == round(v.logit, 6)
    # no encoder: LaDeDa alone, and it says why
    alone = served_value(ck, again, ladeda_logit=0.4, ladeda_probability=0.6, ladeda_calibrated=True,
                         pooled=None, clip=None, clip_note="CLIP encoder not installed: scored by LaDeDa alone.")
    assert alone.used == "ladeda" and alone.components["clip"] is None
    assert alone.logit == 0.4 and "LaDeDa alone" in alone.note


def test_feature_set_file_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    fs = FeatureSet(sha256=[f"{i:064x}" for i in range(5)], labels=np.array([0, 1, 0, 1, 1]),
                    ladeda=rng.normal(size=(5, 2048)).astype(np.float32),
                    clip_embedding=rng.normal(size=(5, 512)).astype(np.float32),
                    clip_cls=rng.normal(size=(5, 768)).astype(np.float32), groups=list("abcde"),
                    data_hash="d" * 64, ladeda_key="k", clip_key="c")
    fs.save(tmp_path / "f.npz")
    back = FeatureSet.load(tmp_path / "f.npz")
    assert back.sha256 == fs.sha256 and back.ladeda_key == "k" and back.clip_key == "c"
    np.testing.assert_allclose(back.ladeda, fs.ladeda, atol=1e-2 * np.abs(fs.ladeda).max())
    assert back.labels.tolist() == fs.labels.tolist() and torch is not None
    assert back.clip_layers is None and not back.has_clip_for("clip_cls_layers") and back.has_clip_for("clip_cls")
    # with the per-block CLS tokens (what the bundled base features carry)
    fs.clip_layers = rng.normal(size=(5, 12, 768)).astype(np.float32)
    fs.save(tmp_path / "g.npz")
    back = FeatureSet.load(tmp_path / "g.npz")
    assert back.clip_layers.shape == (5, 12, 768) and back.has_clip_for("clip_cls_layers")
    np.testing.assert_allclose(back.clip_layers, fs.clip_layers, atol=1e-2 * np.abs(fs.clip_layers).max())
    assert FeatureSet.concat([back, back.subset([0, 1])]).clip_layers.shape == (7, 12, 768)


def test_a_head_on_block_tokens_reads_the_twelve_tokens_of_one_image_or_many():
    from core.learning.features import FeatureError
    from core.learning.parts import clip_input

    rng = np.random.default_rng(6)
    layers = rng.normal(size=(3, 12, 768))
    many = clip_input("clip_cls_layers", rng.normal(size=(3, 512)), layers[:, -1], layers)
    one = clip_input("clip_cls_layers", rng.normal(size=512), layers[0, -1], layers[0])
    assert many.shape == (3, 12 * 768) and one.shape == (12 * 768,)
    np.testing.assert_array_equal(one, many[0])
    np.testing.assert_array_equal(many[:, -768:], layers[:, -1])
    with pytest.raises(FeatureError, match="per-block CLS tokens"):
        clip_input("clip_cls_layers", rng.normal(size=512), layers[0, -1], None)


def test_every_source_weighs_the_same_and_unknown_sources_change_nothing():
    from core.learning.heads import balanced_weights

    w = balanced_weights(["big"] * 8 + ["small"] * 2, 10)
    assert w.mean() == pytest.approx(1.0)
    assert w[:8].sum() == pytest.approx(w[8:].sum())  # 8 rows of one source weigh what 2 of another do
    assert balanced_weights([], 4).tolist() == [1.0] * 4
    assert balanced_weights(["only"] * 3, 3).tolist() == [1.0] * 3
    assert balanced_weights(["a", "b"], 3).tolist() == [1.0] * 3  # a list that does not fit the rows is ignored


def test_a_source_balanced_head_follows_the_cue_every_source_shares():
    """One big source carries a shortcut that a small source contradicts; weighing sources
    equally makes the head follow the cue both share, which is what transfers to a new one."""
    from core.learning.heads import balanced_weights

    rng = np.random.default_rng(8)
    rows, sources = [], []
    for name, n, shortcut_sign in (("big", 400, 1.0), ("small", 80, -1.0)):
        y = rng.integers(0, 2, n)
        shared = (2 * y - 1) * 0.6 + rng.normal(size=n)
        shortcut = shortcut_sign * (2 * y - 1) * 1.5 + rng.normal(size=n)
        rows.append((np.c_[shared, shortcut], y))
        sources += [name] * n
    x = np.concatenate([r[0] for r in rows])
    y = np.concatenate([r[1] for r in rows])
    plain = fit_logistic(x, y, l2=1e-3)
    balanced = fit_logistic(x, y, l2=1e-3, sample_weight=balanced_weights(sources, len(y)))
    unseen_y = rng.integers(0, 2, 500)  # a new source: the shared cue only
    unseen = np.c_[(2 * unseen_y - 1) * 0.6 + rng.normal(size=500), 2 * rng.normal(size=500)]
    assert auc(balanced.logits(unseen), unseen_y) > auc(plain.logits(unseen), unseen_y) + 0.05
    # the big source's shortcut is followed by the plain head, and cancels out in the balanced one
    assert abs(balanced.raw()[0][1]) < 0.25 * plain.raw()[0][1]


def test_sources_come_from_the_corpus_manifest_and_survive_the_file(tmp_path):
    from PIL import Image

    from core.learning.features import labelled_files, manifest_sources

    corpus = tmp_path / "corpus"
    for rel in ("train/0_real/photo-1.png", "train/1_fake/gen-1.png", "train/1_fake/gen-2.png"):
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(corpus / rel)
    (corpus / "manifest.csv").write_text("path,split,label,source\n"
                                         "train/0_real/photo-1.png,train,real,faces\n"
                                         "train/1_fake/gen-1.png,train,fake,faces\n"
                                         "train/1_fake/gen-2.png,train,fake,scenes\n")
    files = [f for f, _, _ in labelled_files(corpus / "train")]
    assert manifest_sources(corpus / "train", files) == ["faces", "faces", "scenes"]
    assert manifest_sources(tmp_path, files) == []  # no manifest there or above it
    (corpus / "manifest.csv").write_text("path,split\ntrain/0_real/photo-1.png,train\n")
    assert manifest_sources(corpus / "train", files) == []  # a manifest without sources says nothing

    rng = np.random.default_rng(9)
    fs = FeatureSet(sha256=[f"{i:064x}" for i in range(3)], labels=np.array([0, 1, 1]),
                    ladeda=rng.normal(size=(3, 2048)).astype(np.float32), sources=["faces", "faces", "scenes"])
    fs.save(tmp_path / "s.npz")
    back = FeatureSet.load(tmp_path / "s.npz")
    assert back.sources == ["faces", "faces", "scenes"]
    assert back.subset([2, 0]).sources == ["scenes", "faces"]
    no_sources = FeatureSet(sha256=["x" * 64], labels=np.array([0]), ladeda=fs.ladeda[:1])
    assert FeatureSet.concat([back, no_sources]).sources == ["faces", "faces", "scenes", ""]
    assert FeatureSet.concat([no_sources, no_sources]).sources == []


def test_the_bundled_recipe_weighs_the_base_sources_and_fits_the_rest_out_of_source():
    """``fit_base_parts`` fits its CLIP head on all base rows (train and val pooled) with each source
    weighing ``n ** -SOURCE_ALPHA`` (the choice made leave-one-source-out, see core.learning.base), and
    calibrates on logits each row got from a head that never saw its source."""
    from core.learning.base import CLIP_FEATURE, CLIP_L2, SOURCE_ALPHA, fit_base_parts, out_of_source_logits
    from core.learning.heads import balanced_weights
    from core.learning.parts import clip_input

    ckpt = load_checkpoint(DEFAULT_TINY_MODEL)
    dim = ckpt.state_dict["fc.weight"].shape[1]
    rng = np.random.default_rng(10)

    def split(n_big: int, n_small: int) -> FeatureSet:
        y = np.r_[rng.integers(0, 2, n_big), rng.integers(0, 2, n_small)]
        layers = rng.normal(size=(len(y), 12, 768)).astype(np.float32)
        layers[:, 11, 0] += (2 * y - 1) * 0.8  # a cue every source shares
        layers[:n_big, 11, 1] += (2 * y[:n_big] - 1) * 1.5  # a shortcut of the big source only
        sources = ["big"] * n_big + ["small"] * n_small
        return FeatureSet(sha256=[f"{rng.integers(1 << 62):064x}" for _ in y], labels=y,
                          ladeda=rng.normal(size=(len(y), dim)).astype(np.float32),
                          clip_embedding=rng.normal(size=(len(y), 512)).astype(np.float32),
                          clip_cls=layers[:, 11].copy(), clip_layers=layers, groups=sources, sources=sources)

    train, val = split(120, 30), split(40, 20)
    parts = fit_base_parts(ckpt, train, val)
    base = FeatureSet.concat([train, val])
    assert parts.provenance["clip_head"]["rows_per_source"] == {"big": 160, "small": 50}
    assert parts.provenance["clip_head"]["source_alpha"] == SOURCE_ALPHA
    x = clip_input(CLIP_FEATURE, base.clip_embedding, base.clip_cls, base.clip_layers)
    weighted = fit_logistic(x, base.labels, l2=CLIP_L2,
                            sample_weight=balanced_weights(base.sources, len(base), alpha=SOURCE_ALPHA))
    plain = fit_logistic(x, base.labels, l2=CLIP_L2)
    np.testing.assert_allclose(parts.clip_head.logits(x), weighted.logits(x), atol=1e-6)
    assert np.abs(plain.logits(x) - weighted.logits(x)).max() > 1e-2  # the weighting changed the head
    # out of source: the small source's rows are scored by a head fitted on the big source alone
    oos = out_of_source_logits(base, base.sources)
    small = np.asarray(base.sources) == "small"
    only_big = fit_logistic(x[~small], base.labels[~small], l2=CLIP_L2)
    np.testing.assert_allclose(oos[small], only_big.logits(x[small]), atol=1e-6)
    assert parts.provenance["calibration_and_tiers"]["n"] == len(base)


def test_adapt_weighs_the_base_sources_equally_and_each_label_the_same():
    from core.learning.adapt import Heads, fit_recipe

    rng = np.random.default_rng(11)
    dim = 16

    def rows(n: int, sources: list[str] | None) -> FeatureSet:
        y = rng.integers(0, 2, n)
        lad = rng.normal(size=(n, dim)).astype(np.float32)
        lad[:, 0] += (2 * y - 1) * 0.7
        if sources:
            big = np.asarray(sources) == "big"
            lad[big, 1] += (2 * y[big] - 1) * 1.5  # the big source's shortcut
        return FeatureSet(sha256=[f"{rng.integers(1 << 62):064x}" for _ in range(n)], labels=y, ladeda=lad,
                          sources=sources or [])

    base = rows(300, ["big"] * 250 + ["small"] * 50)
    labels = rows(40, None)
    prior = fit_logistic(base.ladeda, base.labels, l2=1.0)
    current = Heads(ladeda=prior, clip=None, fusion=None)
    balanced = fit_recipe(current, labels, base).ladeda
    unbalanced = fit_recipe(current, labels, FeatureSet(sha256=base.sha256, labels=base.labels,
                                                        ladeda=base.ladeda)).ladeda
    one_source = fit_recipe(current, labels, FeatureSet(sha256=base.sha256, labels=base.labels,
                                                        ladeda=base.ladeda, sources=["only"] * 300)).ladeda
    assert balanced.raw()[0][1] < unbalanced.raw()[0][1]  # less of the big source's shortcut
    np.testing.assert_allclose(one_source.raw()[0], unbalanced.raw()[0], atol=1e-9)  # one source: plain weights


def test_base_features_file_stores_the_final_cls_token_once(tmp_path):
    """With the per-block tokens present the file keeps the final CLS token only as the last block's
    (it is that token), and loading gives it back; without them ``clip_cls`` is stored as before."""
    rng = np.random.default_rng(12)
    layers = rng.normal(size=(3, 12, 768)).astype(np.float32)
    fs = FeatureSet(sha256=[f"{i:064x}" for i in range(3)], labels=np.array([0, 1, 1]),
                    ladeda=rng.normal(size=(3, 2048)).astype(np.float32),
                    clip_embedding=rng.normal(size=(3, 512)).astype(np.float32), clip_cls=layers[:, -1].copy(),
                    clip_layers=layers, sources=["a", "a", "b"])
    fs.save(tmp_path / "l.npz")
    with np.load(tmp_path / "l.npz") as z:
        assert "clip_cls" not in z.files and "clip_layers" in z.files
    back = FeatureSet.load(tmp_path / "l.npz")
    np.testing.assert_array_equal(back.clip_cls, layers[:, -1].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(back.clip_layers[:, -1], back.clip_cls)
    no_layers = FeatureSet(sha256=fs.sha256, labels=fs.labels, ladeda=fs.ladeda, clip_embedding=fs.clip_embedding,
                           clip_cls=fs.clip_cls)
    no_layers.save(tmp_path / "c.npz")
    again = FeatureSet.load(tmp_path / "c.npz")
    assert again.clip_layers is None
    np.testing.assert_array_equal(again.clip_cls, fs.clip_cls.astype(np.float16).astype(np.float32))


def test_source_weighting_alpha_interpolates_between_rows_and_sources():
    from core.learning.heads import balanced_weights

    src = ["big"] * 9 + ["small"]
    equal = balanced_weights(src, 10)  # alpha 1: each source weighs the same in total
    assert equal[:9].sum() == pytest.approx(equal[9])
    assert balanced_weights(src, 10, alpha=0.0).tolist() == pytest.approx([1.0] * 10)  # every row the same
    half = balanced_weights(src, 10, alpha=0.5)  # totals ∝ sqrt(n): 3 against 1
    assert half[:9].sum() / half[9] == pytest.approx(3.0)
    assert half.mean() == pytest.approx(1.0)


def test_unseen_sources_benchmark_reuses_pair_fits_exactly():
    """``benchmarks/unseen_sources.py`` fits each "without S and T" head once and hands the parts the
    out-of-source logits; they must be exactly what ``fit_base_parts`` computes on its own."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import unseen_sources as bench

    from core.learning.base import fit_base_parts

    ckpt = load_checkpoint(DEFAULT_TINY_MODEL)
    dim = ckpt.state_dict["fc.weight"].shape[1]
    rng = np.random.default_rng(13)
    n = 60
    y = rng.integers(0, 2, n)
    layers = rng.normal(size=(n, 12, 768)).astype(np.float32)
    layers[:, 11, 0] += (2 * y - 1)
    sources = ["a"] * 20 + ["b"] * 25 + ["c"] * 15
    base = FeatureSet(sha256=[f"{i:064x}" for i in range(n)], labels=y,
                      ladeda=rng.normal(size=(n, dim)).astype(np.float32),
                      clip_embedding=rng.normal(size=(n, 512)).astype(np.float32), clip_cls=layers[:, 11].copy(),
                      clip_layers=layers, sources=sources, groups=sources)
    bsrc = np.asarray(sources)
    heads = bench._heads_without(base, bsrc, ["a", "b", "c"], progress=False)
    rest = np.flatnonzero(bsrc != "b")
    fast = fit_base_parts(ckpt, base.subset(rest), clip_head=heads[("b",)],
                          clip_oos=bench._out_of_source(base, bsrc, rest, heads, "b"))
    slow = fit_base_parts(ckpt, base.subset(rest))
    x = layers.reshape(n, -1)
    np.testing.assert_allclose(fast.clip_head.logits(x), slow.clip_head.logits(x), atol=1e-9)
    assert fast.calibration["params"] == slow.calibration["params"]
    assert fast.tiers["real_below"] == slow.tiers["real_below"]
    assert fast.tiers["fake_at_or_above"] == slow.tiers["fake_at_or_above"]

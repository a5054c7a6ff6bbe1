"""Each part's share of the served logit: ``term`` and ``share`` on every component, from the fusion itself."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.__main__ import main
from core.encoders.clip import ClipFeatures, encoder_status, load_encoder
from core.learning.fusion import Fusion
from core.learning.heads import LinearHead
from core.learning.parts import LearnedParts, part_shares, served_value, share_sentence
from core.model.checkpoint import load_checkpoint
from core.paths import DEFAULT_MODEL, DEFAULT_TINY_MODEL

from .conftest import encode, make_photo


def _parts(w_ladeda: float, w_clip: float, bias: float) -> LearnedParts:
    rng = np.random.default_rng(0)
    head = LinearHead(weight=rng.normal(size=768), bias=0.3, mean=np.zeros(768), scale=np.ones(768),
                      feature="clip_cls")
    return LearnedParts(clip_head=head, fusion=Fusion(w_ladeda=w_ladeda, w_clip=w_clip, bias=bias))


@pytest.mark.parametrize("w_ladeda,w_clip,bias,zl", [(0.027, 0.645, -0.022, 0.8), (1.5, -0.4, 0.7, -2.0)])
def test_terms_reproduce_the_fused_logit_and_shares_sum_to_one(w_ladeda, w_clip, bias, zl):
    parts = _parts(w_ladeda, w_clip, bias)
    ck = load_checkpoint(DEFAULT_TINY_MODEL)
    cls_ = np.random.default_rng(1).normal(size=768) * 0.05
    v = served_value(ck, parts, ladeda_logit=zl, ladeda_probability=0.5, ladeda_calibrated=False, pooled=None,
                     clip=ClipFeatures(embedding=np.zeros(512), cls=cls_), clip_note=None)
    c = v.components
    zc = c["clip"]["logit"]
    assert c["ladeda"]["term"] == pytest.approx(w_ladeda * zl, abs=1e-6)
    assert c["clip"]["term"] == pytest.approx(w_clip * zc, abs=1e-5)
    # the terms plus the intercept are the served logit; the intercept is nobody's share
    assert c["ladeda"]["term"] + c["clip"]["term"] + bias == pytest.approx(v.logit, abs=1e-5)
    assert c["fused"]["term"] == pytest.approx(v.logit - bias, abs=1e-5) and c["fused"]["share"] == 1.0
    assert c["ladeda"]["share"] + c["clip"]["share"] == pytest.approx(1.0, abs=1e-5)
    total = abs(c["ladeda"]["term"]) + abs(c["clip"]["term"])
    assert c["clip"]["share"] == pytest.approx(abs(c["clip"]["term"]) / total, abs=1e-5)


def test_ladeda_alone_has_the_whole_share():
    ck = load_checkpoint(DEFAULT_TINY_MODEL)
    v = served_value(ck, LearnedParts(), ladeda_logit=-1.25, ladeda_probability=0.22, ladeda_calibrated=False,
                     pooled=None, clip=None, clip_note="CLIP encoder not installed")
    assert v.components["ladeda"]["term"] == -1.25 and v.components["ladeda"]["share"] == 1.0
    assert v.components["clip"] is None


def test_shares_split_equally_when_no_part_says_anything_and_sentence_names_the_parts():
    assert part_shares({"ladeda": 0.0, "clip": 0.0}) == {"ladeda": 0.5, "clip": 0.5}
    text = share_sentence({"ladeda": {"probability": 0.43, "share": 0.06},
                           "clip": {"probability": 0.81, "share": 0.94}})
    assert text == "CLIP second opinion: 0.81 fake (94 % of the evidence) · LaDeDa local traces: 0.43 real (6 %)"
    assert share_sentence({"ladeda": {"probability": 0.4}, "clip": None}) is None  # stored before shares existed


def test_score_json_components_carry_term_and_share(tmp_path, capsys):
    if load_encoder() is None:
        pytest.skip(encoder_status())
    f = tmp_path / "photo.png"
    f.write_bytes(encode(make_photo(256, 192)))
    assert main(["score", "--model", str(DEFAULT_MODEL), "--json", "--no-guardrails", str(f)]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    c = out["components"]
    assert c["used"] == "fused"
    for part in ("ladeda", "clip", "fused"):
        assert {"term", "share"} <= set(c[part])
    assert c["ladeda"]["share"] + c["clip"]["share"] == pytest.approx(1.0, abs=1e-5)
    # weights are shown to 4 decimals, so the sum is checked to that precision
    assert c["ladeda"]["term"] + c["clip"]["term"] + c["weights"]["bias"] == pytest.approx(out["logit"], abs=2e-3)

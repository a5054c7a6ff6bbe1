"""The differentiable CLIP tower against the served ONNX encoder it is read from, on corpus images.

The served file quantises activations dynamically, which makes its output
sensitive to the last bit of its input: an input change of 1e-6 (far below one
pixel level) moves its final CLS token and the CLIP head's logit by about as
much as the tower differs from it. So the tower is held to (a) the file's
first block, before rounding differences compound, and (b) the served
encoder's own spread under such an imperceptible change. The figures are in
the model card; ``benchmarks`` never assert, this test does.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core.encoders.clip import ClipFeatures
from core.model.checkpoint import load_checkpoint
from core.paths import DEFAULT_MODEL
from core.scoring.analysis import learned_parts

from .conftest import CORPUS, needs_corpus

N_IMAGES = 8


def _cos(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def _features(enc, x: np.ndarray) -> ClipFeatures:
    emb, hidden, *blocks = enc._session.run(enc._outputs, {enc._input: x})
    cls = np.asarray(hidden[0, 0], np.float32)
    return ClipFeatures(embedding=emb[0] / np.linalg.norm(emb[0]), cls=cls,
                        layers=np.stack([b[0, 0] for b in blocks] + [cls]))


def test_tower_is_read_from_the_file_with_its_shape(encoder):
    from core.encoders.clip_torch import tower_for

    tower = tower_for(encoder)
    assert tower is tower_for(encoder)  # built once, shared
    assert len(tower.blocks) == 12 and tower.grid == (14, 14) and tower.blocks[0].heads == 12
    assert not any(p.requires_grad for p in tower.parameters())


@pytest.fixture(scope="module", params=["served", "unsigned"])
def served_encoder(request, encoder):
    """The encoder as this CPU serves it, and the same file with its weights shifted to unsigned (the graph
    CPUs without VNNI/AMX get): both must be the file's exact integer arithmetic."""
    from core.encoders.clip import ClipEncoder

    if request.param == "served":
        return encoder
    if encoder.unsigned_weights:
        pytest.skip("this CPU already serves the unsigned-weight graph (covered by 'served')")
    return ClipEncoder(encoder.path, unsigned_weights=True)


def test_cpus_without_exact_signed_units_get_unsigned_weights():
    from core.encoders.clip import signed_weights_exact

    assert signed_weights_exact(frozenset({"avx2", "avx512f", "avx512_vnni"}))
    assert signed_weights_exact(frozenset({"avx2", "amx_int8"}))
    assert not signed_weights_exact(frozenset({"avx2", "fma"}))
    assert not signed_weights_exact(frozenset({"avx2", "avx512f", "avx512bw"}))  # Skylake-X: vpmaddubsw saturates


def test_signed_and_unsigned_weight_graphs_agree_bit_for_bit_where_signed_is_exact(encoder):
    from core.encoders.clip import ClipEncoder, signed_weights_exact

    if not signed_weights_exact():
        pytest.skip("this CPU has no VNNI/AMX: its signed-weight kernels saturate, so only the unsigned graph "
                    "(the one it serves) is exact here; the tower test holds that one to the arithmetic")
    signed = ClipEncoder(encoder.path, unsigned_weights=False)
    unsigned = ClipEncoder(encoder.path, unsigned_weights=True)
    x = np.random.default_rng(3).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for a, b in zip(_features(signed, x).__dict__.values(), _features(unsigned, x).__dict__.values()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@needs_corpus
def test_tower_matches_the_served_encoder_on_corpus_images(served_encoder):
    from core.encoders.clip_torch import tower_for

    encoder = served_encoder
    tower = tower_for(encoder)
    head = learned_parts(load_checkpoint(DEFAULT_MODEL)).clip_head
    files = sorted((CORPUS / "test").rglob("*.jpg"))[:: 26][:N_IMAGES]
    assert len(files) == N_IMAGES
    rng = np.random.default_rng(0)
    first, final, dz, floor_final, floor_dz = [], [], [], [], []
    for f in files:
        x = encoder.spec.to_tensor(Image.open(f).convert("RGB"))
        served = _features(encoder, x)
        nudged = _features(encoder, (x + 1e-6 * rng.standard_normal(x.shape)).astype(np.float32))
        with torch.no_grad():
            out = tower(torch.from_numpy(x))
        mine = ClipFeatures(embedding=out.embedding[0].numpy(), cls=out.cls[0].numpy(), layers=out.layers[0].numpy())
        z = head.logits(np.concatenate([served.layers.reshape(-1)[None], mine.layers.reshape(-1)[None],
                                        nudged.layers.reshape(-1)[None]]))
        first.append(_cos(served.layers[0], mine.layers[0]))
        final.append(_cos(served.cls, mine.cls))
        dz.append(abs(z[0] - z[1]))
        floor_final.append(_cos(served.cls, nudged.cls))
        floor_dz.append(abs(z[0] - z[2]))
    print(f"first-block CLS cosine min {min(first):.6f}; final CLS cosine median {np.median(final):.4f} "
          f"(served vs itself, input +1e-6: {np.median(floor_final):.4f}); head |Δz| median {np.median(dz):.3f} "
          f"(served vs itself: {np.median(floor_dz):.3f})")
    # the file's own operations and weights: exact up to float rounding before differences compound
    assert min(first) >= 0.9999
    # no further from the served encoder than the served encoder is from itself under an imperceptible change
    assert np.median(final) >= np.median(floor_final) - 0.01
    assert np.median(dz) <= 2.0 * np.median(floor_dz) + 0.05

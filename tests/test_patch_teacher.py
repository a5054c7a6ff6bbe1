"""The hand-made patch teacher: LaDeDa9's geometry, locality, fitting, and its use in training."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.model.models import arch_record, build_model
from core.training.patch_teacher import FEATURE_NAMES, PatchTeacher, fit_patch_teacher, image_descriptor, patch_features
from core.training.train import TrainConfig, train
from core.training.training_data import load_cached
from core.model.preprocess import PreprocessSpec

from .test_train import make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("teacher-data"), n=6, size=64)


@pytest.mark.parametrize("hw", [(64, 64), (71, 90), (9, 17)])
def test_map_matches_ladeda9_patch_map(hw):
    x = torch.rand(2, 3, *hw)
    f = patch_features(x)
    model = build_model(arch_record("ladeda9"), "NPR").eval()
    with torch.no_grad():
        m = model(x)
    assert f.shape[0] == 2 and f.shape[1] == len(FEATURE_NAMES) and f.shape[-2:] == m.shape[-2:]


def test_each_window_only_sees_its_own_9x9_pixels():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 41, 41)
    base = patch_features(x)
    i, j = 2, 1  # window rows 16…24, cols 8…16
    outside = x.clone()
    outside[..., 25:, :] = torch.rand_like(outside[..., 25:, :])
    outside[..., :16, :] = torch.rand_like(outside[..., :16, :])
    outside[..., :, 17:] = torch.rand_like(outside[..., :, 17:])
    assert torch.allclose(patch_features(outside)[..., i, j], base[..., i, j], atol=1e-5)
    inside = x.clone()
    inside[..., 20, 12] = 1.0 - inside[..., 20, 12]
    assert not torch.allclose(patch_features(inside)[..., i, j], base[..., i, j], atol=1e-5)


def test_soft_histograms_are_distributions_inside_their_range():
    torch.manual_seed(0)
    f = patch_features(0.5 + 0.05 * torch.rand(1, 3, 33, 33))  # mild texture: energies inside the bins' range
    first = f[:, :16].sum(1)  # the Laplacian-energy histogram of every window
    assert torch.allclose(first, torch.ones_like(first), atol=1e-4)
    noise = patch_features(torch.rand(1, 3, 33, 33))[:, :16].sum(1)  # log-energy beyond 5 falls off the top bin
    assert float(noise.min()) < 1.0


def test_fitted_teacher_separates_a_trace_and_is_mean_pooled(tmp_path, dataset):
    spec = PreprocessSpec(input_representation="NPR", resize_mode="none")
    train_images, _ = load_cached(dataset / "train", spec, progress=False)
    val_images, _ = load_cached(dataset / "val", spec, progress=False)
    teacher = fit_patch_teacher([im.pixels for im in train_images], [im.label for im in train_images], l2=1.0)
    x = torch.stack([torch.from_numpy(im.pixels).permute(2, 0, 1).float() / 255 for im in val_images])
    logits = teacher.image_logit(x).numpy()
    labels = np.array([im.label for im in val_images])
    assert logits[labels == 1].min() > logits[labels == 0].max()  # the 2-px upsampling trace
    # The image logit is the mean of the patch logits, i.e. the linear head on the mean descriptor.
    direct = image_descriptor(val_images[0].pixels) @ teacher.weights.numpy().astype(np.float64) + teacher.bias
    assert logits[0] == pytest.approx(direct, abs=1e-3)

    path = teacher.save(tmp_path / "teacher.pt")
    again = PatchTeacher.load(path)
    assert torch.equal(again.weights, teacher.weights) and again.bias == teacher.bias
    torch.save({"kind": "something else"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a patch-teacher"):
        PatchTeacher.load(tmp_path / "bad.pt")


@pytest.mark.slow
def test_training_regresses_the_teacher_patch_map(tmp_path, dataset):
    spec = PreprocessSpec(input_representation="NPR", resize_mode="none")
    train_images, _ = load_cached(dataset / "train", spec, progress=False)
    teacher = fit_patch_teacher([im.pixels for im in train_images], [im.label for im in train_images], l2=1.0)
    tpath = teacher.save(tmp_path / "teacher.pt")
    common = dict(data=str(dataset), arch="ladeda9", resize_mode="none", crop=32, crop_align=8, batch_size=8,
                  warmup_steps=1, bn_recalibration_batches=2, zero_init=True, progress=False, lr=1e-3)

    # With a zero-initialised model the first loss is BCE(0) = ln 2 plus the teacher MSE.
    plain = train(TrainConfig(out=str(tmp_path / "plain.pt"), steps=1, steps_per_epoch=1, **common))
    taught = train(TrainConfig(out=str(tmp_path / "taught.pt"), steps=1, steps_per_epoch=1,
                               patch_teacher=str(tpath), **common))
    assert plain.provenance["history"][0]["train_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert taught.provenance["history"][0]["train_loss"] > math.log(2) + 0.01
    assert len(taught.provenance["patch_teacher_sha256"]) == 64

    longer = train(TrainConfig(out=str(tmp_path / "longer.pt"), steps=40, steps_per_epoch=40,
                               patch_teacher=str(tpath), **common))
    x = torch.stack([torch.from_numpy(im.pixels).permute(2, 0, 1).float() / 255 for im in train_images])
    target = teacher.patch_logits(x)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        learned = longer.build_model().eval()((x - mean) / std)
    before = float((target ** 2).mean())  # the zero-initialised model predicts 0 everywhere
    after = float(((learned - target) ** 2).mean())
    assert after < 0.5 * before


def test_training_refuses_a_teacher_for_another_geometry(tmp_path, dataset):
    from core.errors import DetectorError

    tpath = PatchTeacher(weights=torch.zeros(len(FEATURE_NAMES)), bias=0.0).save(tmp_path / "t.pt")
    with pytest.raises(DetectorError, match="stride-8"):
        train(TrainConfig(data=str(dataset), out=str(tmp_path / "x.pt"), arch="tiny", input_repr="right_diag",
                          resize_mode="none", crop=32, steps=1, patch_teacher=str(tpath), progress=False))


@pytest.mark.slow
def test_fit_teacher_cli_writes_a_loadable_teacher_and_reports_val(tmp_path, dataset):
    import json
    import subprocess
    import sys

    out = tmp_path / "cli-teacher.pt"
    proc = subprocess.run([sys.executable, "-m", "core", "fit-teacher", "--data", str(dataset), "--out", str(out),
                           "--l2", "1.0", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["n_train"] == 12 and summary["val_auc"] == 1.0
    teacher = PatchTeacher.load(out)
    assert teacher.info["sd_floor"] == 0.01 and teacher.info["spec"]["resize_mode"] == "none"

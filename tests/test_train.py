"""Training, resume, distillation and the bias report on small generated data."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.model.checkpoint import load_checkpoint
from core.scoring.detector import Detector
from core.training.train import TrainConfig, _state_path, train

from .conftest import make_photo


def _fake_like(seed: int, size: int = 64) -> Image.Image:
    """A photo with a periodic 2-px upsampling pattern, the kind of trace NPR sees."""
    arr = np.asarray(make_photo(size // 2, size // 2, seed=seed)).astype(np.float32)
    up = arr.repeat(2, axis=0).repeat(2, axis=1)
    up[::2, ::2] += 25
    return Image.fromarray(np.clip(up, 0, 255).astype(np.uint8))


def make_dataset(root: Path, n: int = 6, size: int = 64, fake_format: str = "PNG", real_format: str = "PNG") -> Path:
    for split in ("train", "val"):
        for label, maker, fmt in (("0_real", lambda s: make_photo(size, size, seed=s), real_format),
                                  ("1_fake", lambda s: _fake_like(s, size), fake_format)):
            d = root / split / label
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                ext = "jpg" if fmt == "JPEG" else "png"
                maker(100 * (split == "val") + i).save(d / f"{i}.{ext}", fmt)
    return root


@pytest.fixture(autouse=True)
def _drop_model_files(tmp_path):
    """Training writes full checkpoints and resume states (hundreds of MB for LaDeDa9): delete them after
    each test so the pytest temp folders pytest keeps stay small."""
    yield
    for path in tmp_path.rglob("*"):
        if path.is_file() and (path.suffix in (".pt", ".pth") or path.name.endswith(".state")):
            path.unlink()


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("wildrf"))


@pytest.mark.slow
def test_short_training_saves_resumes_and_reloads(tmp_path, tiny_dataset):
    out = tmp_path / "m.pt"
    cfg = TrainConfig(data=str(tiny_dataset), out=str(out), arch="ladeda9", size=64, crop=32, batch_size=4,
                      steps=2, steps_per_epoch=1, warmup_steps=1, bn_recalibration_batches=1, progress=False)
    first = train(cfg)
    assert out.exists() and _state_path(out).exists()
    assert [h["epoch"] for h in first.provenance["history"]] == [1, 2]
    assert first.spec.size == (64, 64) and first.spec.input_representation == "NPR"

    cfg.steps = 4  # resume and continue to step 4
    resumed = train(cfg)
    hist = resumed.provenance["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4] and hist[-1]["step"] == 4
    assert all("val_ap" in h for h in hist)
    prov = resumed.provenance
    assert len(prov["training_data_manifest_sha256"]) == 64 and prov["training_config"]["crop"] == 32

    det = Detector.load(out)
    r = det.score(tiny_dataset / "val" / "1_fake" / "0.png")
    assert r.patch_map_shape == [7, 7] and 0.0 <= r.probability <= 1.0


@pytest.mark.slow
def test_train_cli_with_bias_report_and_progress(tmp_path, tiny_dataset):
    out = tmp_path / "cli.pt"
    proc = subprocess.run([sys.executable, "-m", "core", "train", "--data", str(tiny_dataset), "--out", str(out),
                           "--arch", "ladeda9", "--size", "64", "--crop", "32", "--batch-size", "4", "--steps", "1",
                           "--steps-per-epoch", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Bias report" in proc.stdout
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["epochs_run"] == 1 and load_checkpoint(out).sha256 == summary["model_sha256"]
    assert "epoch 1/1" in proc.stderr  # progress bar


@pytest.mark.slow
def test_train_cli_native_resolution_with_cheap_validation(tmp_path, tiny_dataset):
    out = tmp_path / "native.pt"
    proc = subprocess.run([sys.executable, "-m", "core", "train", "--data", str(tiny_dataset), "--out", str(out),
                           "--arch", "ladeda9", "--resize-mode", "none", "--max-side", "48", "--crop", "32",
                           "--val-crop", "40", "--batch-size", "4", "--steps", "1", "--steps-per-epoch", "1",
                           "--no-bias-report", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = load_checkpoint(out)
    assert ckpt.spec.resize_mode == "none" and ckpt.spec.max_side == 48
    assert "native resolution" in ckpt.spec.notes and "resize" not in ckpt.spec.notes  # the card tells the truth
    assert ckpt.provenance["training_config"]["val_crop"] == 40
    r = Detector(ckpt).score(tiny_dataset / "val" / "1_fake" / "0.png")  # 64 px → 48 px → 5×5 patches
    assert r.patch_map_shape == [5, 5]


def test_center_crop_takes_the_middle_on_the_8px_grid_and_keeps_short_sides():
    from core.training.train import center_crop

    x = torch.arange(40 * 60, dtype=torch.float32).view(1, 1, 40, 60)
    c = center_crop(x, 16)  # the exact centre starts at (12, 22); the 8-px grid puts it at (8, 16)
    assert c.shape == (1, 1, 16, 16) and torch.equal(c, x[..., 8:24, 16:32])
    assert center_crop(x[..., :6, :], 8).shape == (1, 1, 6, 8)


def test_aligned_random_crops_start_on_the_grid():
    from core.training.training_data import random_crop

    rng = np.random.default_rng(0)
    px = np.arange(100 * 90 * 3, dtype=np.int64).reshape(100, 90, 3)
    for _ in range(20):
        c = random_crop(px, 32, rng, align=8)
        y, x = divmod(int(c[0, 0, 0]) // 3, 90)
        assert c.shape == (32, 32, 3) and y % 8 == 0 and x % 8 == 0


@pytest.mark.slow
def test_distillation_lowers_its_loss(tmp_path, tiny_dataset):
    from core.training.distill import DistillConfig, distill

    teacher = tmp_path / "teacher.pt"
    train(TrainConfig(data=str(tiny_dataset), out=str(teacher), arch="ladeda9", size=64, crop=32, batch_size=4,
                      steps=2, steps_per_epoch=2, warmup_steps=1, bn_recalibration_batches=1, progress=False))
    student, history = distill(DistillConfig(teacher=str(teacher), data=str(tiny_dataset), out=str(tmp_path / "t.pt"),
                                             epochs=30, batch_size=4, lr=1e-2, progress=False))
    assert history[-1]["train_mse"] < 0.7 * history[0]["train_mse"]
    assert student.label == "Tiny-LaDeDa" and student.spec.input_representation == "right_diag"
    assert student.spec.size == load_checkpoint(teacher).spec.size
    assert student.spec.notes.startswith("distillation: resize to 64x64") and "whole images" in student.spec.notes
    r = Detector(student).score(tiny_dataset / "val" / "0_real" / "0.png")
    assert r.logit == pytest.approx(float(r.patch_logits.astype(np.float64).mean()))


@pytest.mark.slow
def test_distillation_on_random_crops_through_the_cli(tmp_path, tiny_dataset):
    teacher = tmp_path / "teacher.pt"
    train(TrainConfig(data=str(tiny_dataset), out=str(teacher), arch="ladeda9", resize_mode="none", crop=32,
                      batch_size=4, steps=1, steps_per_epoch=1, warmup_steps=1, bn_recalibration_batches=1,
                      progress=False))
    out = tmp_path / "tiny.pt"
    proc = subprocess.run([sys.executable, "-m", "core", "distill", "--teacher", str(teacher), "--data",
                           str(tiny_dataset), "--out", str(out), "--epochs", "15", "--batch-size", "4", "--lr", "1e-2",
                           "--crop", "32", "--crops-per-image", "2", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["last_mse"] < 0.7 * summary["first_mse"]
    student = load_checkpoint(out)
    assert student.provenance["distill_config"]["crop"] == 32
    assert student.spec.resize_mode == "none"  # served exactly like its teacher, on whole images
    assert "2 random 32px crops per image on the teacher's 8-px grid" in student.spec.notes  # its own recipe
    r = Detector(student).score(tiny_dataset / "val" / "1_fake" / "1.png")
    assert r.patch_map_shape == [30, 30]  # the whole 64-px image, not a crop


def test_bias_report_flags_a_format_shortcut(tmp_path):
    from core.training.bias import bias_report, format_report

    root = make_dataset(tmp_path / "biased", n=5, real_format="JPEG", fake_format="PNG")
    report = bias_report(root / "train")
    names = {p.name for p in report.warnings}
    assert "file format" in names
    text = format_report(report)
    assert "WARNING" in text and "file format" in text
    fair = bias_report(make_dataset(tmp_path / "fair", n=5) / "train")
    assert "file format" not in {p.name for p in fair.warnings}


def test_bias_report_cli_json(tmp_path):
    root = make_dataset(tmp_path / "b", n=4, real_format="JPEG", fake_format="PNG")
    proc = subprocess.run([sys.executable, "-m", "core", "bias-report", "--data", str(root / "train"), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert "file format" in data["warnings"] and data["counts"] == {"real": 4, "fake": 4}


def test_zero_init_starts_blocks_as_identities_and_the_head_at_zero():
    from core.model.models import Bottleneck, build_model, arch_record
    from core.training.train import zero_init_

    torch.manual_seed(0)
    model = build_model(arch_record("ladeda9"), "NPR").eval()
    zero_init_(model)
    block = next(m for m in model.modules() if isinstance(m, Bottleneck) and m.downsample is None)
    x = torch.rand(1, block.conv1.in_channels, 12, 12)  # post-ReLU activations are non-negative
    y = block(x.clone())
    assert torch.equal(y, x[..., : y.shape[-2], : y.shape[-1]])
    assert torch.count_nonzero(model(torch.randn(1, 3, 40, 40))) == 0

"""Train LaDeDa on WildRF-layout folders (``train/``, ``val/``) on a CPU budget.

The paper's recipe (Adam 2e-4, BCE on the pooled logit, resize then random
crop, flips, lr ÷10 when validation accuracy stalls, early stop) with what a
2-core CPU run needs: small random crops (the receptive field is 9 px, so a
64-px crop still gives an 7×7 map of independent patch decisions), a short
linear warm-up, BatchNorm momentum 0.1 during training (the official stem's
0.001 leaves eval statistics far behind in a short run) followed by a
re-estimate of every BatchNorm's statistics on training crops before each
validation, a checkpoint every epoch and exact resume. Optional parts the
bundled model uses: native resolution (``resize_mode none`` with ``max_side``)
with crops aligned to the 8-px grid, zero-initialised residual blocks, a cheap
centre-crop validation, and a dense per-patch target from a patch teacher
(BCE on the pooled logit + ``teacher_weight``·MSE on the patch map).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from sklearn.metrics import average_precision_score, roc_auc_score
from tqdm import tqdm

from core.model.checkpoint import Checkpoint, now_iso
from core.errors import DetectorError
from core.model.models import arch_record, build_model
from core.model.preprocess import PreprocessSpec
from core.model.serving import fold_for_inference
from core.training.training_data import CachedImage, full_tensor, load_cached, make_batch


@dataclass
class TrainConfig:
    data: str
    out: str
    arch: str = "ladeda9"
    input_repr: str = "NPR"
    resize_mode: str = "stretch"
    size: int = 256
    max_side: int | None = None  #: with resize_mode "none": cap the longer side
    crop: int = 64
    crop_align: int = 1  #: crop corners on multiples of this (8 keeps LaDeDa9's and JPEG's 8-px phase)
    val_crop: int | None = None  #: validate on the central N×N region (cheap proxy at native resolution)
    batch_size: int = 32
    epochs: int = 30
    steps: int | None = None  #: total optimiser steps; overrides epochs when set
    steps_per_epoch: int | None = None  #: default: one crop per training image
    lr: float = 2e-4
    warmup_steps: int = 50
    weight_decay: float = 0.0
    bn_momentum: float = 0.1
    zero_init: bool = False  #: zero the last BN scale of each residual block and the head (blocks start as identities)
    bn_recalibration_batches: int = 8
    lr_patience: int = 3  #: epochs without val-accuracy gain before lr ÷10
    early_stop_patience: int = 6  #: epochs without val-AP gain before stopping
    min_lr: float = 1e-6
    flip: bool = True
    jpeg_aug: float = 0.0  #: probability of a random JPEG re-encode (off by default, as in the paper)
    blur_aug: float = 0.0  #: probability of a random Gaussian blur
    patch_teacher: str | None = None  #: a fit-teacher file: its patch logits are regressed alongside the BCE
    teacher_weight: float = 1.0  #: weight of the patch-map MSE next to the BCE
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    max_train_images: int | None = None  #: for smoke tests
    progress: bool = True
    notes: list[str] = field(default_factory=list)

    def spec(self) -> PreprocessSpec:
        spec = PreprocessSpec(input_representation=self.input_repr, resize_mode=self.resize_mode,
                              size=(self.size, self.size), max_side=self.max_side)
        aligned = f" on the {self.crop_align}-px grid" if self.crop_align > 1 else ""
        return replace(spec, notes=f"training: {spec.geometry()}, then random {self.crop}px crops{aligned}")


def zero_init_(model: nn.Module) -> None:
    """Start every residual block as an identity and the head at logit 0 (Goyal et al. 2017).

    A from-scratch ResNet-50 with a weak signal otherwise spends its first
    hundreds of steps undoing the random residual branches; with these zeros the
    loss starts at ln 2 and the first steps only move what carries signal.
    """
    from core.model.models import Bottleneck

    for m in model.modules():
        if isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)
    head = getattr(model, "fc", None)
    if isinstance(head, nn.Linear):
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _set_bn_momentum(model: nn.Module, momentum: float | None) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: list[CachedImage], spec: PreprocessSpec, crop: int,
                          batches: int, batch_size: int, device: torch.device, seed: int, align: int = 1) -> None:
    """Re-estimate BN running statistics as a cumulative average over fresh training crops."""
    if batches <= 0:
        return
    rng = np.random.default_rng(seed)
    old = {m: m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    for m in old:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for _ in range(batches):
        idx = rng.integers(0, len(images), size=batch_size)
        x, _ = make_batch(images, idx, spec, crop, rng, flip=True, align=align)
        model(x.to(device))
    for m, mom in old.items():
        m.momentum = mom
    model.eval()


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central size×size region of an N×C×H×W tensor (the whole side where it is smaller)."""
    h, w = x.shape[-2:]
    # Corners on multiples of 8, so the crop keeps serving's 8-px (JPEG grid, patch stride) phase.
    top, left = max(0, (h - size) // 16 * 8), max(0, (w - size) // 16 * 8)
    return x[..., top:top + min(size, h), left:left + min(size, w)]


@torch.no_grad()
def validate(model: nn.Module, images: list[CachedImage], spec: PreprocessSpec, device: torch.device,
             crop: int | None = None) -> dict[str, float]:
    """Score validation images and return AP/AUC/accuracy/loss.

    Whole images, as serving feeds them, unless ``crop`` is set: then the central
    crop×crop region only — at native resolution a whole 768-px image costs
    ~10× a 256-px one on a CPU, and the patch mean over the centre is an unbiased
    (noisier) estimate of the whole-image mean.
    """
    model.eval()
    # The folded channels-last copy is exact and ~30% faster on CPU.
    net = fold_for_inference(model).to(memory_format=torch.channels_last)
    logits, labels = [], []
    for im in images:
        x = full_tensor(im, spec)
        if crop:
            x = center_crop(x, crop)
        out = net(x.to(device).contiguous(memory_format=torch.channels_last))
        logits.append(float(out.mean()))
        labels.append(im.label)
    z, y = np.asarray(logits), np.asarray(labels)
    p = 1 / (1 + np.exp(-z))
    eps = 1e-7
    metrics = {
        "val_loss": float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))),
        "val_acc": float(np.mean((p >= 0.5) == (y == 1))),
        "val_real_acc": float(np.mean(p[y == 0] < 0.5)) if (y == 0).any() else float("nan"),
        "val_fake_acc": float(np.mean(p[y == 1] >= 0.5)) if (y == 1).any() else float("nan"),
    }
    if len(set(labels)) == 2:
        metrics["val_ap"] = float(average_precision_score(y, z))
        metrics["val_auc"] = float(roc_auc_score(y, z))
    else:
        metrics["val_ap"] = metrics["val_auc"] = float("nan")
    return metrics


def _state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state")


def train(cfg: TrainConfig) -> Checkpoint:
    """Run (or resume) training; the best-val-AP model is written to ``cfg.out``."""
    data = Path(cfg.data)
    train_dir, val_dir = data / "train", data / "val"
    if not train_dir.is_dir():
        raise DetectorError(f"{data} has no train/ folder (WildRF layout: train/0_real, train/1_fake, val/...)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    set_seed(cfg.seed)
    spec = cfg.spec()
    out = Path(cfg.out)
    state_path = _state_path(out)

    train_images, _ = load_cached(train_dir, spec, progress=cfg.progress)
    if cfg.max_train_images:
        rng0 = np.random.default_rng(cfg.seed)
        keep = rng0.permutation(len(train_images))[: cfg.max_train_images]
        train_images = [train_images[i] for i in sorted(keep)]
    val_images = load_cached(val_dir, spec, progress=cfg.progress)[0] if val_dir.is_dir() else []
    if len({im.label for im in train_images}) < 2:
        raise DetectorError("Training needs both 0_real and 1_fake images.")

    record = arch_record(cfg.arch)
    model = build_model(record, cfg.input_repr).to(device)
    if cfg.zero_init:
        zero_init_(model)
    _set_bn_momentum(model, cfg.bn_momentum)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    teacher = None
    if cfg.patch_teacher:
        from core.training.patch_teacher import PatchTeacher

        teacher = PatchTeacher.load(cfg.patch_teacher)
        if record.get("name") != "ladeda" or getattr(model.patch_geometry, "stride", None) != 8:
            raise DetectorError("--patch-teacher needs a stride-8 LaDeDa (the teacher's 9×9 windows at stride 8)")
        pix_mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        pix_std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)

    steps_per_epoch = cfg.steps_per_epoch or max(1, math.ceil(len(train_images) / cfg.batch_size))
    total_epochs = math.ceil(cfg.steps / steps_per_epoch) if cfg.steps else cfg.epochs
    history: list[dict[str, Any]] = []
    start_epoch, step, best_ap, best_acc, since_ap, since_acc, lr = 0, 0, -1.0, -1.0, 0, 0, cfg.lr
    best_state: dict[str, torch.Tensor] | None = None
    t_start = time.time()
    elapsed_before = 0.0

    if state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        start_epoch, step, best_ap, best_acc = st["epoch"], st["step"], st["best_ap"], st["best_acc"]
        since_ap, since_acc, lr, history = st["since_ap"], st["since_acc"], st["lr"], st["history"]
        best_state = st.get("best_state")
        elapsed_before = st.get("elapsed_s", 0.0)
        random.setstate(st["py_rng"])
        np.random.set_state(st["np_rng"])
        torch.set_rng_state(st["torch_rng"])
        if cfg.progress:
            tqdm.write(f"resuming from epoch {start_epoch} (step {step}, best val AP {best_ap:.4f})")

    rng = np.random.default_rng(cfg.seed + 1000 * start_epoch)
    for epoch in range(start_epoch, total_epochs):
        if cfg.steps and step >= cfg.steps:
            break
        model.train()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{total_epochs}", disable=not cfg.progress,
                   leave=False)
        running = []
        for _ in bar:
            if cfg.steps and step >= cfg.steps:
                break
            warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
            for g in opt.param_groups:
                g["lr"] = lr * warm
            idx = rng.integers(0, len(train_images), size=cfg.batch_size)
            x, y = make_batch(train_images, idx, spec, cfg.crop, rng, flip=cfg.flip,
                              jpeg_prob=cfg.jpeg_aug, blur_prob=cfg.blur_aug, align=cfg.crop_align)
            maps = model(x.to(device))
            logits = maps.mean(dim=(1, 2, 3))
            loss = loss_fn(logits, y.to(device))
            if teacher is not None:  # dense target: the teacher's logit for every patch
                target = teacher.patch_logits(x * pix_std + pix_mean).to(device)
                loss = loss + cfg.teacher_weight * nn.functional.mse_loss(maps, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            running.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(running[-20:]):.4f}", lr=f"{lr * warm:.1e}")
        recalibrate_batchnorm(model, train_images, spec, cfg.crop, cfg.bn_recalibration_batches, cfg.batch_size,
                              device, seed=cfg.seed + epoch, align=cfg.crop_align)
        metrics = validate(model, val_images, spec, device, cfg.val_crop) if val_images else {}
        entry = {"epoch": epoch + 1, "step": step, "train_loss": float(np.mean(running)) if running else None,
                 "lr": lr, "elapsed_s": round(elapsed_before + time.time() - t_start, 1), **metrics}
        history.append(entry)
        # Epoch summaries always print; --no-progress only hides the bar.
        tqdm.write(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in entry.items()}))
        ap = metrics.get("val_ap", -float("inf")) if val_images else -float(entry["train_loss"] or 0)
        if ap > best_ap + 1e-6 or best_state is None:
            best_ap, since_ap = ap, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            _write_checkpoint(cfg, spec, record, best_state, history, best_ap, elapsed_before + time.time() - t_start)
        else:
            since_ap += 1
        acc = metrics.get("val_acc", 0.0)
        if acc > best_acc + 1e-3:
            best_acc, since_acc = acc, 0
        else:
            since_acc += 1
            if since_acc >= cfg.lr_patience and lr / 10 >= cfg.min_lr:
                lr, since_acc = lr / 10, 0
                tqdm.write(f"validation accuracy stalled: learning rate -> {lr:.1e}")
        _save_state(state_path, model, opt, epoch + 1, step, best_ap, best_acc, since_ap, since_acc, lr, history,
                    best_state, elapsed_before + time.time() - t_start)
        if val_images and since_ap >= cfg.early_stop_patience:
            tqdm.write(f"early stop: no validation AP gain for {since_ap} epochs")
            break
    if best_state is None:
        best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    # Final write: the best weights with the whole history (epochs after the best included).
    _write_checkpoint(cfg, spec, record, best_state, history, best_ap, elapsed_before + time.time() - t_start)
    from core.model.checkpoint import load_checkpoint

    return load_checkpoint(out)


def _save_state(path: Path, model, opt, epoch, step, best_ap, best_acc, since_ap, since_acc, lr, history,
                best_state, elapsed) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({
        "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "step": step,
        "best_ap": best_ap, "best_acc": best_acc, "since_ap": since_ap, "since_acc": since_acc, "lr": lr,
        "history": history, "best_state": best_state, "elapsed_s": elapsed,
        "py_rng": random.getstate(), "np_rng": np.random.get_state(), "torch_rng": torch.get_rng_state(),
    }, tmp)
    os.replace(tmp, path)


def data_manifest_sha256(root: str | os.PathLike) -> str:
    """Hash of the training data listing (relative paths + sizes), for provenance."""
    import hashlib

    h = hashlib.sha256()
    root = Path(root)
    for sub in ("train", "val"):
        d = root / sub
        if not d.is_dir():
            continue
        for p in sorted(d.rglob("*")):
            if p.is_file():
                h.update(f"{p.relative_to(root)}\t{p.stat().st_size}\n".encode())
    return h.hexdigest()


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_checkpoint(cfg: TrainConfig, spec: PreprocessSpec, record: dict, state: dict, history: list,
                      best_ap: float, elapsed: float) -> None:
    cfg_dict = {k: v for k, v in asdict(cfg).items() if k not in ("progress",)}
    ckpt = Checkpoint(
        arch=record, spec=spec, state_dict=state,
        provenance={
            "source": "trained",
            "created_at": now_iso(),
            "training_data": str(Path(cfg.data).resolve()),
            "training_data_manifest_sha256": data_manifest_sha256(cfg.data),
            "training_config": cfg_dict,
            "history": history,
            "best_val_ap": best_ap,
            "best_epoch": next((h["epoch"] for h in history if h.get("val_ap") == best_ap), len(history)),
            "train_seconds": round(elapsed, 1),
            "hardware": f"{torch.get_num_threads()} CPU threads" if not torch.cuda.is_available()
            else torch.cuda.get_device_name(0),
            "torch": torch.__version__,
            **({"patch_teacher_sha256": _file_sha256(cfg.patch_teacher)} if cfg.patch_teacher else {}),
        },
    )
    ckpt.save(cfg.out)

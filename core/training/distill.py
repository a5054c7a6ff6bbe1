"""Distil a LaDeDa teacher into Tiny-LaDeDa with MSE on the teacher's patch logits.

The paper's logit distillation: the student learns to predict the teacher's
per-patch logit. Tiny's map has stride 2 and LaDeDa9's stride 8, so student
patch (4i, 4j) — which sees input rows 8i-1 … 8i+7 — is matched with teacher
patch (i, j) (rows 8i … 8i+8), and the image logits (means of the two maps)
are matched too. The student's image logit stays the mean of its own patch
logits. Teacher maps are computed once per image (and its mirror image) —
or, for native-resolution teachers where a whole image costs seconds, once per
random crop (``crop``): with a 9-px receptive field the student learns the
same patch function from crops as from whole images.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from core.model.checkpoint import Checkpoint, load_checkpoint, now_iso
from core.errors import DetectorError
from core.model.models import arch_record, build_model
from core.model.serving import ServingModel
from core.training.train import data_manifest_sha256, set_seed, validate
from core.model.preprocess import PreprocessSpec, normalise
from core.training.training_data import full_tensor, load_cached, random_crop


@dataclass
class DistillConfig:
    teacher: str
    data: str
    out: str
    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-3
    image_weight: float = 1.0  #: weight of the image-logit MSE next to the patch MSE
    seed: int = 0
    progress: bool = True
    max_train_images: int | None = None
    crop: int | None = None  #: distil on random crop×crop regions instead of whole images
    crops_per_image: int = 4  #: with ``crop``: regions drawn per image (fixed for the run)


def align_student(student_map: torch.Tensor, teacher_hw: tuple[int, int], factor: int) -> torch.Tensor:
    """Student patches at the teacher's patch positions (every ``factor``-th)."""
    th, tw = teacher_hw
    return student_map[..., : th * factor : factor, : tw * factor : factor][..., :th, :tw]


def _distill_notes(spec: PreprocessSpec, cfg: DistillConfig, t_stride: int) -> str:
    """What the student saw in training, for people reading its preprocessing (not the teacher's note)."""
    regions = (f"{cfg.crops_per_image} random {cfg.crop}px crops per image on the teacher's {t_stride}-px grid"
               if cfg.crop else "whole images")
    return f"distillation: {spec.geometry()}, then {regions}, with their mirrors"


def distill(cfg: DistillConfig) -> tuple[Checkpoint, list[dict]]:
    set_seed(cfg.seed)
    teacher_ckpt = load_checkpoint(cfg.teacher)
    if teacher_ckpt.arch.get("name") != "ladeda":
        raise DetectorError("The teacher must be a LaDeDa checkpoint.")
    spec = teacher_ckpt.spec  # the student is served with exactly the teacher's preprocessing
    teacher = ServingModel(teacher_ckpt.build_model(),
                           example_hw=(cfg.crop, cfg.crop) if cfg.crop else tuple(spec.size))
    t_stride = teacher_ckpt.build_model().patch_geometry.stride

    data = Path(cfg.data)
    train_images, _ = load_cached(data / "train", spec, progress=cfg.progress)
    if cfg.max_train_images:  # a seeded random subset, so both classes stay represented
        keep = np.random.default_rng(cfg.seed).permutation(len(train_images))[: cfg.max_train_images]
        train_images = [train_images[i] for i in sorted(keep)]
    val_images = load_cached(data / "val", spec, progress=cfg.progress)[0] if (data / "val").is_dir() else []

    # Teacher targets for every image (or crop) and its horizontal mirror.
    inputs, targets = [], []
    crop_rng = np.random.default_rng(cfg.seed + 1)
    for im in tqdm(train_images, desc="teacher maps", disable=not cfg.progress, leave=False):
        if cfg.crop:
            # Crop corners on the teacher's stride keep the phase serving sees (JPEG grid, patch grid).
            regions = [normalise(np.ascontiguousarray(random_crop(im.pixels, cfg.crop, crop_rng, t_stride)), spec)
                       for _ in range(cfg.crops_per_image)]
        else:
            regions = [full_tensor(im, spec)]
        for xx in (v for x in regions for v in (x, torch.flip(x, dims=[-1]))):
            inputs.append(xx)
            targets.append(torch.from_numpy(np.asarray(teacher(xx)[0, 0])).clone())

    student = build_model(arch_record("tiny"), "right_diag" if spec.input_representation == "NPR"
                          else spec.input_representation)
    s_stride = student.patch_geometry.stride
    factor = t_stride // s_stride
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    mse = nn.MSELoss()
    history: list[dict] = []
    t0 = time.time()
    order = np.arange(len(inputs))
    rng = np.random.default_rng(cfg.seed)
    for epoch in range(cfg.epochs):
        student.train()
        rng.shuffle(order)
        losses = []
        bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"distil {epoch + 1}/{cfg.epochs}",
                   disable=not cfg.progress, leave=False)
        for start in bar:
            idx = order[start:start + cfg.batch_size]
            groups: dict[tuple[int, int], list[int]] = {}
            for i in idx:  # batch only equal-sized inputs
                groups.setdefault(tuple(inputs[i].shape[-2:]), []).append(int(i))
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for members in groups.values():
                x = torch.cat([inputs[i] for i in members])
                t = torch.stack([targets[i] for i in members])
                s = student(x)[:, 0]
                s_aligned = align_student(s, t.shape[-2:], factor)
                loss = mse(s_aligned, t) + cfg.image_weight * mse(s.mean(dim=(1, 2)), t.mean(dim=(1, 2)))
                (loss * len(members) / len(idx)).backward()
                total += float(loss.detach()) * len(members) / len(idx)
            opt.step()
            losses.append(total)
            bar.set_postfix(mse=f"{np.mean(losses[-20:]):.4f}")
        sched.step()
        entry = {"epoch": epoch + 1, "train_mse": float(np.mean(losses)), "elapsed_s": round(time.time() - t0, 1)}
        if val_images and (epoch + 1) % 5 == 0 or epoch + 1 == cfg.epochs:
            entry.update(validate(student, val_images, spec, torch.device("cpu")))
        history.append(entry)
        # Epoch summaries always print; --no-progress only hides the bars.
        tqdm.write(str({k: (round(v, 4) if isinstance(v, float) else v) for k, v in entry.items()}))
    student.eval()
    ckpt = Checkpoint(
        arch=arch_record("tiny"),
        spec=replace(spec, input_representation=student.representation.name,
                     notes=_distill_notes(spec, cfg, t_stride)),
        state_dict={k: v.detach().clone() for k, v in student.state_dict().items()},
        provenance={
            "source": "distilled",
            "teacher_sha256": teacher_ckpt.sha256,
            "teacher": teacher_ckpt.label,
            "created_at": now_iso(),
            "training_data": str(data.resolve()),
            "training_data_manifest_sha256": data_manifest_sha256(data),
            "distill_config": {k: v for k, v in cfg.__dict__.items() if k != "progress"},
            "history": history,
            "train_seconds": round(time.time() - t0, 1),
        },
    )
    ckpt.save(cfg.out)
    return ckpt, history

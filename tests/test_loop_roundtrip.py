"""The closed loop across modules: score --db → queue → label → export → calibrate / train."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from core.calibration.calibrators import fit_calibration
from core.model.checkpoint import load_checkpoint
from core.training.datasets import list_images, read_logit_csv
from core.review.store import ReviewStore
from core.training.train import TrainConfig, train

from .conftest import encode, make_photo, save_random_tiny
from .test_train import _fake_like

#: End-to-end runs on real models and both databases: part of the full suite, not the quick subset.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    # tiers that put every item in review
    return save_random_tiny(tmp_path_factory.mktemp("m") / "tiny.pt", seed=11,
                            tiers={"real_below": 0.0, "fake_at_or_above": 1.0})


def _labelled_store(db, tmp_path, tiny_model, n=12):
    """Score n generated images into a real store (SQLite or PostgreSQL) through the CLI, then label them all."""
    files = []
    for i in range(n):
        img = make_photo(96, 96, seed=i) if i % 2 == 0 else _fake_like(i, 96)
        p = tmp_path / f"img{i}.png"
        p.write_bytes(encode(img, "PNG"))
        files.append(p)
    env = {**os.environ, "LADEDA_IMAGE_DIR": str(tmp_path / "images")}
    proc = subprocess.run([sys.executable, "-m", "core", "score", "--model", str(tiny_model), "--db", str(db),
                           "--create", "--no-progress", *map(str, files)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(l) for l in proc.stdout.splitlines()]
    assert all(l["tier"] == "review" for l in lines) and all("guardrails" in l for l in lines)
    store = ReviewStore(db, image_dir=tmp_path / "images")
    assert store.queue_stats().get("queued", 0) == n
    for i in range(n):
        item = store.claim_next("ana")
        assert item is not None
        label = "real" if item["sha256"] in {l["sha256"] for j, l in enumerate(lines) if j % 2 == 0} else "fake"
        store.label(item["sha256"], label, "ana", note="round trip")
    assert store.claim_next("ana") is None
    return store, lines


def test_score_db_then_export_recalibration_csv_fits_a_calibration(new_db, tmp_path, tiny_model):
    store, lines = _labelled_store(new_db(), tmp_path, tiny_model)
    paths = store.export_batch(tmp_path / "exports", exported_by="ana")
    csv_path = paths["csv"] if "csv" in paths else paths["paths"]["csv"]
    logits, labels = read_logit_csv(csv_path)
    assert len(logits) == len(lines) and set(labels) == {0, 1}
    with open(csv_path) as fh:
        header = next(csv.reader(fh))
    assert header[:9] == ["sha256", "logit", "probability", "label", "reviewer", "labelled_at", "model_sha256",
                          "calibration_version", "preprocess_fingerprint"]
    record = fit_calibration(logits, labels, "platt")
    assert record["n"] == len(lines) and record["method"] == "platt"
    # the calibrate CLI accepts the export as it is
    out = tmp_path / "recal.pt"
    proc = subprocess.run([sys.executable, "-m", "core", "calibrate", "--model", str(tiny_model), "--data", str(csv_path),
                           "--method", "temperature", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert load_checkpoint(out).calibration["method"] == "temperature"


def test_hard_negative_zip_trains_one_step(new_db, tmp_path, tiny_model):
    store, _ = _labelled_store(new_db(), tmp_path, tiny_model)
    paths = store.export_batch(tmp_path / "exports", include_all_reviewed=True, exported_by="ana")
    zip_path = paths["zip"] if "zip" in paths else paths["paths"]["zip"]
    data = tmp_path / "retrain"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(data / "train")
    items = list_images(data / "train")
    assert {it.label for it in items} == {0, 1}
    ckpt = train(TrainConfig(data=str(data), out=str(tmp_path / "retrained.pt"), arch="tiny", input_repr="right_diag",
                             size=96, crop=32, batch_size=4, steps=1, steps_per_epoch=1, warmup_steps=1,
                             bn_recalibration_batches=1, progress=False))
    assert ckpt.provenance["history"][0]["step"] == 1
    assert np.isfinite(ckpt.provenance["history"][0]["train_loss"])

"""core.model.registry: calibrated versions in the data directory, activate, roll back, restart."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.model.checkpoint import file_sha256, load_checkpoint
from core.scoring.detector import Detector
from core.errors import CheckpointError
from core.model.registry import ModelRegistry, rebind, weights_key

from .conftest import encode, make_photo, save_random_tiny


def _tiny(path, seed=0):
    return save_random_tiny(path, seed=seed)


def _record(t: float, version: str) -> dict:
    return {"method": "temperature", "params": {"temperature": t}, "version": version, "n": 10,
            "n_real": 5, "n_fake": 5, "metrics_before": {"ece": 0.2}, "metrics_after": {"ece": 0.05}}


TIERS = {"real_below": 0.2, "fake_at_or_above": 0.8, "source": "manual"}


@pytest.fixture()
def setup(tmp_path):
    base = _tiny(tmp_path / "bundled" / "tiny.pt")
    reg = ModelRegistry(tmp_path / "data" / "models", base=base)
    return reg, base


def test_empty_registry_serves_the_base(setup):
    reg, base = setup
    active = reg.active()
    assert active.path == base and active.version is None and active.warning is None and active.name == "base"
    assert reg.versions() == [] and reg.activations() == []
    with pytest.raises(CheckpointError, match="Nothing to roll back"):
        reg.rollback()


def test_save_activate_and_survive_restart(setup):
    reg, base = setup
    base_sha = file_sha256(base)
    v1 = reg.save_version(calibration=_record(2.0, "cal-a"), tiers=TIERS, created_by="ana", note="first")
    assert v1.id == "v0001" and v1.calibration_version == "cal-a" and v1.tiers["real_below"] == 0.2
    assert v1.metrics["metrics_after"] == {"ece": 0.05}
    assert reg.active().version is None  # saving does not activate
    assert file_sha256(base) == base_sha  # the bundled file is never rewritten
    path = reg.path_of(v1)
    assert path.parent == reg.root and path.is_file()
    ck = load_checkpoint(path)
    assert ck.calibration["version"] == "cal-a" and ck.tiers["fake_at_or_above"] == 0.8
    assert ck.provenance["base_sha256"] == base_sha and ck.provenance["created_by"] == "ana"
    reg.activate("v0001", by="ana")
    # a new process (a restart) reads the same choice from disk
    again = ModelRegistry(reg.root, base=base)
    assert again.active().path == path and again.active().version.id == "v0001"
    assert again.activations()[-1]["by"] == "ana"
    data = json.loads(reg.registry_path.read_text())
    assert data["active"] == "v0001"


def test_rollback_walks_back_to_the_base(setup):
    reg, base = setup
    v1 = reg.save_version(calibration=_record(2.0, "cal-a"), activate=True)
    v2 = reg.save_version(calibration=_record(3.0, "cal-b"), activate=True)
    assert reg.active().version.id == v2.id
    assert reg.rollback(by="bo").version.id == v1.id
    assert reg.rollback().version is None  # the base
    with pytest.raises(CheckpointError):
        reg.rollback()
    reg.activate(v2.id)
    reg.activate(None)  # explicitly serve the base
    assert reg.active().version is None
    assert reg.rollback().version.id == v2.id
    with pytest.raises(CheckpointError, match="No saved model version"):
        reg.activate("v9999")


def test_versions_for_another_base_are_not_served(setup, tmp_path):
    reg, base = setup
    v1 = reg.save_version(calibration=_record(2.0, "cal-a"), activate=True)
    _tiny(base, seed=1)  # the deployment replaced the base model
    fresh = ModelRegistry(reg.root, base=base)
    active = fresh.active()
    assert active.version is None and active.path == base and "another base" in active.warning
    with pytest.raises(CheckpointError, match="cannot be served"):
        fresh.activate(v1.id)
    assert not fresh.compatible(v1)


def test_tampered_version_file_falls_back(setup):
    reg, base = setup
    v1 = reg.save_version(calibration=_record(2.0, "cal-a"), activate=True)
    reg.path_of(v1).write_bytes(b"not a model")
    active = ModelRegistry(reg.root, base=base).active()
    assert active.version is None and "missing or altered" in active.warning


def test_bad_registry_file_is_a_readable_error(setup):
    reg, _ = setup
    reg.root.mkdir(parents=True, exist_ok=True)
    reg.registry_path.write_text("{oops")
    with pytest.raises(CheckpointError, match="unreadable"):
        reg.active()


def test_keeping_the_base_calibration_and_tiers_from_the_record(setup):
    reg, _ = setup
    rec = {**_record(1.5, "cal-c"), "tiers": TIERS}
    v = reg.save_version(calibration=rec)
    assert v.tiers["real_below"] == 0.2
    v2 = reg.save_version(calibration=None, tiers={"real_below": 0.1, "fake_at_or_above": 0.9})
    assert v2.calibration_version is None and v2.id == "v0002"
    with pytest.raises(Exception):
        reg.save_version(calibration={"method": "nope"})


def test_rebind_shares_the_network_and_applies_the_new_calibration(setup):
    reg, base = setup
    det = Detector.load(base, fast=False)
    v1 = reg.save_version(calibration=_record(4.0, "cal-t4"))
    ck = load_checkpoint(reg.path_of(v1))
    assert weights_key(ck) == weights_key(det.checkpoint)
    det2 = rebind(det, ck)
    assert det2.model is det.model and det2.checkpoint is ck and det.checkpoint is not ck
    data = encode(make_photo(200, 150), "PNG")
    a, b = det.score(data), det2.score(data)
    assert a.logit == pytest.approx(b.logit)
    assert b.calibrated and b.model["calibration_version"] == "cal-t4"
    assert b.probability == pytest.approx(1 / (1 + np.exp(-a.logit / 4.0)))
    assert a.model["calibration_version"] is None  # the original detector is untouched
    other = load_checkpoint(_tiny(base.parent / "other.pt", seed=3))
    with pytest.raises(CheckpointError, match="Cannot rebind"):
        rebind(det, other)


def test_same_weights_lists_the_base_and_its_versions(tmp_path):
    from core.model.registry import ModelRegistry

    from .conftest import save_random_tiny

    base = save_random_tiny(tmp_path / "base.pt")
    reg = ModelRegistry(tmp_path / "models", base=base)
    v = reg.save_version(calibration=None, tiers={"real_below": 0.3, "fake_at_or_above": 0.7}, created_by="ana")
    assert reg.same_weights() == [reg.base_sha256(), v.sha256]

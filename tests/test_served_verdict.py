"""One answer through every door: ``score --json``, ``batch`` (local and Ray), the stored scoring of
``score --db`` and ``batch --db``, and the Inspect page's submit door give the same served logit,
probability, tier and reasons for the same image, on the bundled fused model.

The served value is the one the tier and reasons were decided on (fused LaDeDa + CLIP when the encoder
is installed). Batch once wrote LaDeDa's own value beside a tier decided on the fused one; the local and
Ray engines agreed with each other, so only a comparison with the other doors catches that.
"""
from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from core.__main__ import main
from core.paths import DEFAULT_MODEL

from .conftest import CORPUS, SCORE_ABS_TOL, SHARED, assert_close_tree

pytestmark = pytest.mark.slow

#: A real photo, a generated image (corpus test) and a phone's AVIF: three different paths through decode.
PICKS = ("corpus/test/scenes-game/0_real", "corpus/test/scenes-game/1_fake")
AVIF = SHARED / "unseen" / "formats" / "Irvine_CA.avif"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    if not CORPUS.is_dir() or not AVIF.is_file():
        pytest.skip(f"needs ../shared/corpus and ../shared/unseen/formats (looked in {SHARED})")
    from core.encoders.clip import encoder_status, load_encoder

    if load_encoder() is None:
        pytest.skip(f"the CLIP encoder is not installed ({encoder_status()}): the served value is LaDeDa's own, "
                    "which cannot show a door that writes the wrong part (scripts/fetch_encoder.sh installs it)")
    folder = tmp_path_factory.mktemp("doors") / "images"
    folder.mkdir()
    for i, sub in enumerate(PICKS):
        src = sorted((SHARED / sub).glob("*.jpg"))[0]
        shutil.copy(src, folder / f"{i}-{src.name}")
    shutil.copy(AVIF, folder / AVIF.name)
    return sorted(str(p) for p in folder.iterdir())


def _served(d: dict) -> dict:
    return {"logit": d["logit"], "probability": d["probability"], "tier": d["tier"], "reasons": list(d["reasons"])}


def _assert_same(reference: dict[str, dict], other: dict[str, dict], door: str) -> None:
    assert other.keys() == reference.keys(), door
    for path, ref in reference.items():
        got = other[path]
        assert got["tier"] == ref["tier"] and got["reasons"] == ref["reasons"], (door, path)
        for k in ("logit", "probability"):
            # score --json rounds to 6 decimals; other processes sum in another order: see conftest
            assert got[k] == pytest.approx(ref[k], abs=SCORE_ABS_TOL + 5e-7), (door, path, k)


def test_every_door_serves_the_same_verdict(images, tmp_path, capsys):
    # score --json: the reference, and it must be the fused value whenever CLIP fused
    assert main(["score", "--json", "--no-progress", *images]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    reference = {line["file"]: _served(line) for line in lines}
    for line in lines:
        comps = line["components"]
        assert comps["used"] == "fused"
        assert line["logit"] == comps["fused"]["logit"] and line["probability"] == comps["fused"]["probability"]
    # the bug this guards against: LaDeDa's own probability in the served column (they differ on these images)
    assert any(abs(line["probability"] - line["components"]["ladeda"]["probability"]) > 0.05 for line in lines)

    # batch, local engine: the same served values, and the same components as score --json
    out = tmp_path / "local.parquet"
    assert main(["batch", "--input", str(images[0].rsplit("/", 1)[0]), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    rows = pq.read_table(out).to_pylist()
    _assert_same(reference, {r["path"]: _served(r) for r in rows}, "batch local")
    by_file = {line["file"]: line for line in lines}
    for r in rows:
        assert_close_tree(by_file[r["path"]]["components"], json.loads(r["components"]), path="components",
                          tol=SCORE_ABS_TOL + 5e-7)
        assert r["calibration_version"] == by_file[r["path"]]["calibration_version"]

    # score --db and batch --db: what the store keeps is the served scoring
    from core.review.store import ReviewStore

    db1, db2 = tmp_path / "score.sqlite", tmp_path / "batch.sqlite"
    assert main(["score", "--json", "--no-progress", "--db", str(db1), "--create", *images]) == 0
    capsys.readouterr()
    assert main(["batch", "--input", str(images[0].rsplit("/", 1)[0]), "--out", str(tmp_path / "b.parquet"),
                 "--no-progress", "--db", str(db2), "--create"]) == 0
    capsys.readouterr()
    for db, door in ((db1, "score --db"), (db2, "batch --db")):
        with ReviewStore(db) as store:
            stored = {p: _served(store.latest_scoring(rows_by_path["sha256"]))
                      for p, rows_by_path in ((r["path"], r) for r in rows)}
        _assert_same(reference, stored, door)

    # the Inspect page's door: submit, then finish (guardrails, final tier), recorded with its evidence
    from core.review.actions import submit as submit_mod
    from core.scoring.detector import Detector

    det = Detector.load(DEFAULT_MODEL)
    (tmp_path / "inspect").mkdir()  # its own artifact folder: computed here, not answered from the others
    inspect_store = ReviewStore(tmp_path / "inspect" / "review.sqlite")
    try:
        seen = {}
        for p in images:
            with open(p, "rb") as fh:
                sub = submit_mod.submit(det, fh.read(), p.rsplit("/", 1)[1], inspect_store, "ana", defer=True)
            sub = submit_mod.finish(det, sub, inspect_store, uploader="ana")
            ev = sub.evidence
            seen[p] = {"logit": ev.logit, "probability": ev.probability, "tier": ev.tier,
                       "reasons": list(ev.decision["reasons"])}
            _assert_same({p: seen[p]}, {p: _served(inspect_store.latest_scoring(sub.sha256))}, "inspect stored")
        _assert_same(reference, seen, "inspect (submit door)")
    finally:
        inspect_store.close()


def test_ray_engine_serves_the_same_verdict(images, tmp_path):
    ray = pytest.importorskip("ray")
    from core.batch.engines import RayOptions
    from core.batch.job import run_batch

    folder = images[0].rsplit("/", 1)[0]
    local = tmp_path / "local.parquet"
    run_batch(folder, local, model=DEFAULT_MODEL, guardrails=True, progress=False)
    ray.init(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False)
    try:
        out = tmp_path / "ray.parquet"
        run_batch(folder, out, model=DEFAULT_MODEL, engine="ray", guardrails=True, progress=False,
                  ray=RayOptions(concurrency=1))
    finally:
        ray.shutdown()
    from .conftest import assert_same_rows

    a, b = pq.read_table(local).to_pylist(), pq.read_table(out).to_pylist()
    assert all(json.loads(r["components"])["used"] == "fused" for r in a)
    assert_same_rows(a, b)

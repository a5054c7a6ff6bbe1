"""The Streamlit dashboard under AppTest: every page, on a temporary database.

The whole-loop test (upload → verdict → queued → claimed → labelled →
exported → recalibrated) runs on the bundled model when it exists
(``data/models/ladeda9.pt``), otherwise on a LaDeDa9 checkpoint made here;
the other tests use a Tiny checkpoint for speed.
"""
from __future__ import annotations

import datetime as _dt
import io

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.model.checkpoint import Checkpoint
from core.model.models import arch_record, build_model
from core.paths import DEFAULT_MODEL
from core.model.preprocess import official_spec

from .conftest import CORPUS, REPO, encode, make_photo, needs_corpus

APP = str(REPO / "dashboard" / "app.py")
TIMEOUT = 240  # seconds per script run (the first LaDeDa9 load traces the model)


def _checkpoint(path, arch: str, representation: str, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(arch, representation)
    for m in model.modules():  # non-trivial BN statistics: patch logits of both signs
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    Checkpoint(arch=arch_record(arch), spec=official_spec(representation), state_dict=model.state_dict(),
               provenance={"source": "test"}).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("models") / "tiny.pt", "tiny", "right_diag")


@pytest.fixture(scope="session")
def loop_model(tmp_path_factory):
    """The bundled model when present (the acceptance criterion), else a LaDeDa9 made for the test."""
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL
    return _checkpoint(tmp_path_factory.mktemp("models") / "ladeda9.pt", "ladeda9", "NPR")


@pytest.fixture()
def env(tmp_path, monkeypatch, tiny_model):
    data = tmp_path / "data"
    monkeypatch.setenv("LADEDA_DATA_DIR", str(data))
    monkeypatch.setenv("LADEDA_MODEL", str(tiny_model))
    return data


def _app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [s.value for s in at.success]
    parts += [cap for img in at.image for cap in img.captions] + [img.proto.imgs[0].alt for img in at.image]
    parts += [i.value for i in at.info] + [w.value for w in at.warning] + [e.value for e in at.error]
    return "\n".join(str(p) for p in parts)


def _login(at: AppTest, name: str = "ana") -> AppTest:
    at.text_input(key="reviewer_name_input").input(name)
    at.button[[b.label for b in at.button].index("Start reviewing")].click()
    return _ok(at.run())


def _review_claimed(name: str) -> AppTest:
    """The app with ``name`` signed in on Review, having claimed the next item."""
    at = _ok(_app().run())
    _login(at, name)
    at.switch_page("views/review.py")
    _ok(at.run())
    _button(at, "review-claim").click()
    return _ok(at.run())


def _button(at: AppTest, key: str):
    return at.button(key=key)


def _png(seed: int, size=(320, 240)) -> bytes:
    return encode(make_photo(*size, seed=seed), "PNG")


def _store(data_dir):
    from core.review.store import ReviewStore

    return ReviewStore(data_dir / "review.sqlite")


# ---------------------------------------------------------------------------
# shell and identity
# ---------------------------------------------------------------------------
def test_shell_shows_model_calibration_preprocessing_and_reviewer(env):
    at = _ok(_app().run())
    header = at.caption[0].value
    assert "Tiny-LaDeDa" in header and "reviewer **not set**" in header
    # the header is one quiet line: hashes, calibration and preprocessing live in the sidebar's model panel
    assert "calibration" not in header.lower() and "preprocessing" not in header.lower() and "`" not in header
    sidebar = " ".join(c.value for c in at.sidebar.caption)
    assert "Calibration: none" in sidebar and "resize to 256x256" in sidebar
    assert (env / "review.sqlite").exists()  # the data directory and database are created on first run
    _login(at, "ana")
    assert "reviewer **ana (unauthenticated)**" in at.caption[0].value
    # the identity sticks for the session, on every page
    at.switch_page("views/monitor.py")
    _ok(at.run())
    assert "ana (unauthenticated)" in at.caption[0].value


def test_identity_comes_from_st_user_when_auth_is_configured(env):
    at = _app()
    at.user = {"is_logged_in": True, "email": "ana@example.org", "name": "Ana"}
    _ok(at.run())
    assert "reviewer **ana@example.org**" in at.caption[0].value
    assert not any(t.key == "reviewer_name_input" for t in at.text_input)
    out = _app()
    out.user = {"is_logged_in": False}
    _ok(out.run())
    assert "Log in" in [b.label for b in out.button]
    assert "reviewer **not set**" in out.caption[0].value
    out.button(key="login").click()
    _ok(out.run())  # no provider can be reached here: a message, not a traceback
    assert any("Sign-in is configured but could not start" in e.value for e in out.error)


def test_missing_model_is_a_message_not_a_traceback(env, monkeypatch, tmp_path):
    monkeypatch.setenv("LADEDA_MODEL", str(tmp_path / "nope.pt"))
    at = _ok(_app().run())
    assert any("Model file not found" in e.value for e in at.error)
    assert "no model loaded" in at.caption[0].value


# ---------------------------------------------------------------------------
# Inspect
# ---------------------------------------------------------------------------
def _upload(at: AppTest, name: str, data: bytes, mime: str = "image/png") -> AppTest:
    at.file_uploader(key="inspect-upload").set_value((name, data, mime))
    return _ok(at.run())


@pytest.mark.parametrize("name,data,message", [
    ("notes.png", b"this is not an image", "Not a recognised image format"),
    ("empty.jpg", b"", "empty"),
    ("cut.png", _png(1)[:400], "truncated"),
])
def test_inspect_bad_files_show_a_clear_message(env, name, data, message):
    at = _ok(_app().run())
    _upload(at, name, data)
    errors = [e.value for e in at.error]
    assert errors and message.lower() in errors[0].lower(), errors
    assert not at.get("exception")


@pytest.mark.parametrize("fmt,mime,kwargs", [
    ("JPEG", "image/jpeg", {"quality": 85}), ("WEBP", "image/webp", {}), ("BMP", "image/bmp", {}),
    ("TIFF", "image/tiff", {}), ("GIF", "image/gif", {}),
])
def test_inspect_accepts_the_supported_formats(env, fmt, mime, kwargs):
    img = make_photo(200, 160, seed=4)
    if fmt == "GIF":  # two frames: the first is analysed
        buf = io.BytesIO()
        img.save(buf, "GIF", save_all=True, append_images=[make_photo(200, 160, seed=5)])
        data = buf.getvalue()
    else:
        data = encode(img, fmt, **kwargs)
    at = _ok(_app().run())
    _upload(at, f"x.{fmt.lower()}", data, mime)
    assert not at.error, [e.value for e in at.error]
    assert "P(fake)" in [m.label for m in at.metric]


def test_inspect_shows_verdict_and_all_evidence(env):
    at = _ok(_app().run())
    _upload(at, "photo.png", _png(2))
    assert not at.error, [e.value for e in at.error]
    text = _texts(at)
    assert "Thresholds:" in text or "Verdict" in text
    metric = [m for m in at.metric if m.label == "P(fake)"][0]
    assert metric.value.endswith("%")
    # the heatmap (with its legend) over the image, numbered top patches and their enlarged crops
    assert "LaDeDa local traces" in text and "patch logits over the image" in text and "heatmap colour scale" in text
    assert "#1 logit" in text and "top patch 5" in text and "numbered as on the image" in text
    assert any(t.key == "inspect-opacity" for t in at.slider)
    df_texts = " ".join(m.value for m in at.markdown if m.value.startswith("| "))  # the small static tables
    assert "mean (the model's image logit)" in df_texts and "max patch" in df_texts
    assert "The model's score is the **mean** of all patch logits" in text  # the pooling table explained
    assert "forward" in df_texts  # timings
    # every picture is inline (no media request that waits on a running script), the large one a JPEG
    # at the image's own size, the small ones PNG; the forensic view does not repeat the image
    import base64
    import io

    from PIL import Image

    pictures = {i.alt: i.url for img in at.image for i in img.proto.imgs}
    assert pictures and all(u.startswith("data:image/") for u in pictures.values()), list(pictures.values())[:1]
    main = Image.open(io.BytesIO(base64.b64decode(pictures["LaDeDa local traces"].split(",", 1)[1])))
    assert main.format == "JPEG" and main.size == (320, 240)
    assert pictures["top patch 1"].startswith("data:image/png;")
    assert "the image" not in pictures and "Pick a layer to see the same pixels another way" in text
    # scored once into the score log, with its evidence stored
    store = _store(env)
    items = store.recent_items()
    assert len(items) == 1 and items[0]["name"] == "photo.png" and items[0]["logit"] is not None
    # moving the opacity slider, the coarser view and the other views re-render without re-scoring
    at.slider(key="inspect-opacity").set_value(0.9)
    _ok(at.run())
    # heatmap cells: Auto shows 4×4 blocks only for a map over 64 patches per side; either can be picked
    import re

    caption = next(c for img in at.image for c in img.captions if c.startswith("LaDeDa local traces"))
    h, w = (int(v) for v in re.search(r"\((\d+)×(\d+) patches", caption).groups())
    assert max(h, w) > 64 and "means of 4×4 blocks" in caption and "because the map is this large" in caption
    at.segmented_control(key="inspect-cells").set_value("4×4 blocks")
    _ok(at.run())
    assert "means of 4×4 blocks" in _texts(at) and "because the map is this large" not in _texts(at)
    at.segmented_control(key="inspect-cells").set_value("Single patches")
    _ok(at.run())
    assert "means of 4×4 blocks" not in _texts(at)
    at.segmented_control(key="inspect-view").set_value("CLIP GradCAM")
    _ok(at.run())
    texts = _texts(at)
    # the test model serves LaDeDa alone (no CLIP head): the view says so instead of showing another part's map
    assert "No CLIP map" in texts or "CLIP GradCAM" in texts
    at.segmented_control(key="inspect-view").set_value("Plain")
    _ok(at.run())
    assert "photo.png as uploaded" in _texts(at)
    assert len(store.item(items[0]["sha256"])["scorings"]) == 1


def test_inspect_reupload_is_shown_from_the_store(env):
    at = _ok(_app().run())
    _upload(at, "same.png", _png(21))
    at2 = _ok(_app().run())  # another analyst, another session
    _upload(at2, "same-again.png", _png(21))
    assert "Already scored by this model: shown from the store" in _texts(at2)
    store = _store(env)
    assert len(store.item(store.recent_items()[0]["sha256"])["scorings"]) == 1


@pytest.mark.slow
def test_inspect_too_thin_image_gets_a_specific_message(env, monkeypatch):
    buf = io.BytesIO()
    Image.new("RGB", (8000, 40), (90, 120, 150)).save(buf, "PNG")
    # a stretching model (Tiny, 256×256) can score it: flagged by the guardrails, not refused
    at = _ok(_app().run())
    _upload(at, "banner.png", buf.getvalue())
    assert not at.error and "Needs review" in _texts(at)
    # a native-resolution model (the bundled LaDeDa9, longest side 768) would see 768×4 px: refused, typed
    monkeypatch.setenv("LADEDA_MODEL", str(DEFAULT_MODEL))
    at = _ok(_app().run())
    _upload(at, "banner.png", buf.getvalue())
    errors = [e.value for e in at.error]
    assert errors and "too thin or too small to analyse" in errors[0] and "Something went wrong" not in errors[0]


def test_inspect_new_upload_clears_the_previous_result_and_error(env):
    at = _ok(_app().run())
    _upload(at, "bad.png", b"not an image")
    assert at.error
    _upload(at, "good.png", _png(22))
    assert not at.error and "P(fake)" in [m.label for m in at.metric]
    _upload(at, "bad-again.png", b"still not an image")
    assert len(at.error) == 1 and "P(fake)" not in [m.label for m in at.metric]
    assert "good.png" not in _texts(at)


def test_reviewer_name_survives_a_reload_through_the_address(env):
    at = _ok(_app().run())
    _login(at, "ana")
    assert at.query_params.get("reviewer") in ("ana", ["ana"])
    reloaded = _app()
    reloaded.query_params["reviewer"] = "ana"
    _ok(reloaded.run())
    assert "reviewer **ana (unauthenticated)**" in reloaded.caption[0].value


@needs_corpus
def test_inspect_guardrail_panel_draws_scored_faces(env):
    face = sorted((CORPUS / "test" / "faces-ffhq-vs-stylegan2" / "0_real").glob("*.jpg"))[0]
    at = _ok(_app().run())
    _upload(at, face.name, face.read_bytes(), "image/jpeg")
    assert not at.error, [e.value for e in at.error]
    text = _texts(at)
    assert "face(s); each crop is scored on its own" in text and "faces" in text  # the boxed image (alt text)
    faces = [m.value for m in at.markdown if m.value.startswith("| face | P(fake) |")][0]
    rows = [r.split("|")[2].strip() for r in faces.splitlines()[2:]]  # the P(fake) column
    assert len(rows) >= 1 and all(float(v) >= 0 for v in rows)
    assert "JPEG quality: **" in text and "Metadata evidence" in text


def test_inspect_low_quality_goes_to_review_with_its_reason(env):
    img = make_photo(320, 240, seed=9)
    at = _ok(_app().run())
    _upload(at, "crushed.jpg", encode(img, "JPEG", quality=12), "image/jpeg")
    text = _texts(at)
    assert "Needs review" in text and "Low quality" in text and "heavily compressed JPEG" in text


# ---------------------------------------------------------------------------
# the whole loop on the bundled model
# ---------------------------------------------------------------------------
@pytest.mark.slow
def test_whole_loop_upload_verdict_queue_claim_label_export_recalibrate(tmp_path, monkeypatch, loop_model):
    data_dir = tmp_path / "data"
    monkeypatch.setenv("LADEDA_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LADEDA_MODEL", str(loop_model))
    at = _ok(_app().run())
    _login(at, "ana")

    # upload → verdict
    fake_like = _png(11, (384, 288))
    _upload(at, "suspect.png", fake_like)
    assert not at.error, [e.value for e in at.error]
    assert "P(fake)" in [m.label for m in at.metric]
    # a map this small (stride 8: 35×47 patches) is shown patch by patch under "Auto"
    heat = next(c for img in at.image for c in img.captions if c.startswith("LaDeDa local traces"))
    assert "×" in heat and "blocks" not in heat, heat
    store = _store(data_dir)
    sha = store.recent_items()[0]["sha256"]

    # → queued
    _button(at, "inspect-send").click()
    _ok(at.run())
    assert "Queued for review" in _texts(at)
    assert store.item(sha)["queue"]["state"] == "queued"

    # a second image labelled directly from Inspect (label now)
    _upload(at, "holiday.png", _png(12, (384, 288)))
    sha2 = [r for r in store.recent_items() if r["name"] == "holiday.png"][0]["sha256"]
    at.button(key=f"inspect-label-{sha2[:12]}-real").click()
    _ok(at.run())
    assert store.item(sha2)["current_label"]["label"] == "real"

    # → claimed (Review) with the same evidence
    at.switch_page("views/review.py")
    _ok(at.run())
    assert at.metric[0].label == "Queued" and int(at.metric[0].value) >= 1
    _button(at, "review-claim").click()
    _ok(at.run())
    assert store.item(sha)["queue"]["state"] == "leased"
    assert "Leased to you until" in _texts(at)
    assert "P(fake)" in [m.label for m in at.metric]

    # → labelled (with a note), undo, label again
    key = f"review-{sha[:12]}"
    at.text_input(key=f"{key}-note").input("GAN texture on the left")
    _button(at, f"{key}-fake").click()
    _ok(at.run())
    label = store.item(sha)["current_label"]
    assert label["label"] == "fake" and label["note"] == "GAN texture on the left"
    _button(at, "review-undo-idle").click()
    _ok(at.run())
    assert store.item(sha)["current_label"] is None and store.item(sha)["queue"]["state"] == "leased"
    _button(at, f"{key}-fake").click()
    _ok(at.run())
    assert store.item(sha)["current_label"]["label"] == "fake"

    # → exported
    at.switch_page("views/export.py")
    _ok(at.run())
    assert [m.value for m in at.metric][:1] == ["2"]
    _button(at, "exp-create").click()
    _ok(at.run())
    history = store.export_history()
    assert len(history) == 1 and history[0]["counts"]["items"] == 2
    for kind in ("csv", "jsonl", "zip"):
        assert (data_dir / "exports").joinpath(history[0]["files"][kind]["path"].split("/")[-1]).is_file()
    assert any(b.label.startswith("Download CSV") for b in at.get("download_button"))

    # → recalibrated from the reviewed items, saved and activated
    at.switch_page("views/calibration.py")
    _ok(at.run())
    assert "1 real and 1 fake reviewed items" in _texts(at)
    _button(at, "cal-fit").click()
    _ok(at.run())
    assert not at.error, [e.value for e in at.error]
    assert any(m.label == "Projected FPR" for m in at.metric)
    # two labels are one click from production no more: saving works, activating is refused with a reason
    assert _button(at, "cal-save-activate").disabled
    assert "Too few labels to put this calibration into production: 1 real and 1 fake" in _texts(at)
    _button(at, "cal-save").click()
    _ok(at.run())
    assert "Saved v0001" in _texts(at)
    at.selectbox(key="cal-pick").set_value("v0001")
    _ok(at.run())
    _button(at, "cal-activate").click()
    _ok(at.run())
    assert any("at least 30 of each are needed" in e.value for e in at.error)
    from core.model.registry import ModelRegistry

    reg = ModelRegistry(data_dir / "models", base=loop_model)
    assert reg.active().version is None and reg.version("v0001").tiers["source"] == "fitted"
    assert reg.version("v0001").tiers["targets"]["fpr"] is not None  # the untouched suggestion keeps its targets
    # scoring again uses the new calibration
    at.switch_page("views/inspect.py")
    _ok(at.run())
    assert store.recent_items()  # still there

    # monitor shows the activity
    at.switch_page("views/monitor.py")
    _ok(at.run())
    assert any(m.label == "Reviewer overturn rate" for m in at.metric)


# ---------------------------------------------------------------------------
# Review details
# ---------------------------------------------------------------------------
def _seed_queue(data_dir, model_path, n=2):
    from core.scoring.detector import Detector
    from core.review.store import scoring_kwargs

    store = _store(data_dir)
    det = Detector.load(model_path, fast=False)
    shas = []
    for i in range(n):
        data = _png(30 + i)
        sha = store.add_item(data, name=f"queued-{i}.png")
        r = det.score(data)
        store.record_scoring(sha, **scoring_kwargs(r.to_json()), tier="review", reasons=["seeded"])
        shas.append(sha)
    return store, shas


def test_review_skip_release_and_empty_queue(env, tiny_model):
    store, shas = _seed_queue(env, tiny_model, n=1)
    at = _review_claimed("bo")
    key = f"review-{shas[0][:12]}"
    _button(at, f"{key}-release").click()
    _ok(at.run())
    assert store.item(shas[0])["queue"]["state"] == "queued"
    _button(at, "review-claim").click()
    _ok(at.run())
    at.toggle(key="review-auto-next").set_value(False)
    _ok(at.run())
    _button(at, f"{key}-skip").click()
    _ok(at.run())
    assert store.item(shas[0])["queue"]["state"] == "queued" and store.item(shas[0])["queue"]["round"] == 1
    _button(at, "review-claim").click()
    _ok(at.run())
    _button(at, f"{key}-unsure").click()
    _ok(at.run())
    _button(at, "review-claim").click()
    _ok(at.run())
    assert "The queue is empty." in _texts(at)
    # nothing to undo for someone else is a message, not a crash
    at2 = _ok(_app().run())
    _login(at2, "cy")
    at2.switch_page("views/review.py")
    _ok(at2.run())
    _button(at2, "review-undo-idle").click()
    _ok(at2.run())
    assert any("Nothing to undo" in e.value for e in at2.error)


def test_review_needs_a_reviewer(env):
    at = _ok(_app().run())
    at.switch_page("views/review.py")
    _ok(at.run())
    assert any("Enter your name" in i.value for i in at.info)


# ---------------------------------------------------------------------------
# Export and Calibration details
# ---------------------------------------------------------------------------
def test_export_preview_filters_and_hard_negatives(env, tiny_model):
    store, shas = _seed_queue(env, tiny_model, n=2)
    p = store.latest_scoring(shas[0])["probability"]
    store.label(shas[0], "real" if p >= 0.5 else "fake", "ana")  # contradicts the model
    store.label(shas[1], "unsure", "bo")
    at = _ok(_app().run())
    _login(at)
    at.switch_page("views/export.py")
    _ok(at.run())
    values = {m.label: m.value for m in at.metric}
    assert values["Items"] == "2" and values["Hard negatives"] == "1" and values["Unsure"] == "1"
    at.selectbox(key="exp-reviewer").set_value("bo")
    _ok(at.run())
    assert {m.label: m.value for m in at.metric}["Items"] == "1"


def _csv(n=120, seed=0) -> bytes:
    """Over-confident logits: labels drawn with p = sigmoid(s), logits 4·s."""
    rng = np.random.default_rng(seed)
    s = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-s))).astype(int)
    z = 4 * s
    rows = ["logit,label"] + [f"{a:.5f},{'fake' if b else 'real'}" for a, b in zip(z, y)]
    return ("\n".join(rows) + "\n").encode()


def test_calibration_from_csv_save_activate_and_roll_back(env, tiny_model):
    at = _ok(_app().run())
    _login(at)
    at.switch_page("views/calibration.py")
    _ok(at.run())
    at.radio(key="cal-source").set_value("Uploaded CSV (logit, label)")
    _ok(at.run())
    at.file_uploader(key="cal-csv").set_value(("scores.csv", _csv(), "text/csv"))
    _ok(at.run())
    assert "120 row(s)" in _texts(at)
    at.selectbox(key="cal-method").set_value("platt")
    _ok(at.run())
    _button(at, "cal-fit").click()
    _ok(at.run())
    assert not at.error, [e.value for e in at.error]
    metrics = at.dataframe[0].value  # serving now / new fit out of sample / new fit in-sample
    assert list(metrics["calibration"])[0].startswith("serving now")
    assert list(metrics["measured"]) == ["on these labels", "out of sample (5-fold)", "in-sample (optimistic)"]
    assert metrics["ECE"].iloc[1] < metrics["ECE"].iloc[0]  # better than the sigmoid on labels it did not see
    fpr = [m for m in at.metric if m.label == "Projected FPR"][0].value
    # moving the thresholds changes the projection
    slider = [s for s in at.slider if s.key and s.key.startswith("cal-thresholds")][0]
    slider.set_value((0.05, 0.95))
    _ok(at.run())
    assert [m for m in at.metric if m.label == "Review share"][0].value != ""
    assert fpr is not None
    _button(at, "cal-save").click()
    _ok(at.run())
    assert "Saved v0001" in _texts(at)
    from core.model.registry import ModelRegistry

    reg = ModelRegistry(env / "models", base=tiny_model)
    assert reg.active().version is None and reg.version("v0001").tiers["real_below"] == pytest.approx(0.05)
    assert reg.version("v0001").tiers["source"] == "manual"  # moved by hand
    at.selectbox(key="cal-pick").set_value("v0001")
    _ok(at.run())
    _button(at, "cal-activate").click()
    _ok(at.run())
    assert reg.active().version.id == "v0001"
    assert "v0001" in at.caption[0].value
    assert reg.version("v0001").calibration_version in " ".join(c.value for c in at.sidebar.caption)
    _button(at, "cal-rollback").click()
    _ok(at.run())
    assert reg.active().version is None
    assert "Calibration: none" in " ".join(c.value for c in at.sidebar.caption)
    # a restart keeps the choice (here: back on the base); a one-class CSV is a clear message
    at.file_uploader(key="cal-csv").set_value(("one.csv", b"logit,label\n1.0,fake\n2.0,fake\n", "text/csv"))
    _ok(at.run())
    _button(at, "cal-fit").click()
    _ok(at.run())
    assert any("both real and fake" in e.value for e in at.error)


# ---------------------------------------------------------------------------
# Monitor
# ---------------------------------------------------------------------------
def test_monitor_shows_history_drift_flow_and_overturns(env, tiny_model):
    from core.review.store import ReviewStore

    now = _dt.datetime.now(_dt.timezone.utc)
    clock = {"t": now - _dt.timedelta(days=30)}
    store = ReviewStore(env / "review.sqlite", clock=lambda: clock["t"])
    rng = np.random.default_rng(0)
    for day in range(30):
        for i in range(6):
            clock["t"] = now - _dt.timedelta(days=29 - day, hours=i)
            data = f"{day}-{i}".encode() * 10 + b"\x89PNG"
            sha = store.add_item(data, name=f"d{day}-{i}.png")
            p = float(np.clip(rng.beta(2, 5) if day < 22 else rng.beta(5, 2), 0.001, 0.999))
            tier = "fake" if p >= 0.8 else ("real" if p < 0.2 else "review")
            store.record_scoring(sha, model_sha256="m" * 64, logit=float(np.log(p / (1 - p))), probability=p,
                                 tier=tier)
            if i == 0 and tier == "review":
                store.label(sha, "fake" if p < 0.5 else "real", "ana")
    store.close()
    at = _ok(_app().run())
    at.switch_page("views/monitor.py")
    _ok(at.run())
    values = {m.label: m.value for m in at.metric}
    assert values["PSI"] != "—" and float(values["PSI"]) > 0.25
    assert "alert" in _texts(at) or any("alert" in str(b) for b in at.get("badge"))
    assert values["Labels compared"] != "0" and values["Reviewer overturn rate"].endswith("%")
    assert len(at.get("plotly_chart")) >= 3


def test_review_lease_is_shown_and_renewed_while_open(env, tiny_model):
    import sqlite3

    store, shas = _seed_queue(env, tiny_model, n=1)
    at = _review_claimed("dee")
    assert "Leased to you until" in _texts(at)
    # the lease is about to run out (less than half left): the open page renews it
    soon = (_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with sqlite3.connect(env / "review.sqlite") as conn:
        conn.execute("UPDATE queue SET lease_expires_at = ? WHERE sha256 = ?", (soon, shas[0]))
    _ok(at.run())
    row = store.item(shas[0])["queue"]
    assert row["lease_reviewer"] == "dee" and row["lease_expires_at"] > soon
    assert any(e["event"] == "renewed" for e in store.item(shas[0])["queue_events"])
    # another reviewer cannot take it, and sees it as being reviewed
    other = _ok(_app().run())
    _login(other, "eve")
    other.switch_page("views/review.py")
    _ok(other.run())
    assert {m.label: m.value for m in other.metric}["Being reviewed"] == "1"
    _button(other, "review-claim").click()
    _ok(other.run())
    assert "The queue is empty." in _texts(other)


# ---------------------------------------------------------------------------
# Review: one item at a time, from the stored evidence
# ---------------------------------------------------------------------------
def _submit_queue(data_dir, model_path, n=2):
    """Items uploaded through the upload door (evidence stored), then queued."""
    from core.review.actions.submit import submit
    from core.scoring.detector import Detector

    store = _store(data_dir)
    det = Detector.load(model_path, fast=False)
    shas = []
    for i in range(n):
        sub = submit(det, _png(60 + i), f"stored-{i}.png", store, "up")
        if sub.queue_state != "queued":
            store.enqueue(sub.sha256, by="test", reason="test")
        shas.append(sub.sha256)
    return store, shas


def _shown_sha(at: AppTest) -> str:
    """The sha of the item whose verdict card is on screen (its caption carries the prefix)."""
    caps = [c.value for c in at.caption if c.value.endswith("`") and ".png · `" in c.value]
    assert len(caps) == 1, caps
    return caps[0].rsplit("`", 2)[-2]


def _claimed_in_review(env, tiny_model, n: int = 2):
    """A queue of n submitted items, ana signed in on Review with the first item claimed."""
    store, shas = _submit_queue(env, tiny_model, n=n)
    at = _review_claimed("ana")
    first = [s for s in shas if s.startswith(_shown_sha(at))][0]
    return store, shas, at, first


def _decision_shas(at: AppTest) -> set[str]:
    return {b.key.split("-")[1] for b in at.button if b.key and b.key.startswith("review-")
            and b.key.rsplit("-", 1)[-1] in ("real", "fake", "unsure", "skip")}


def test_review_renders_stored_evidence_without_a_model_pass(env, tiny_model, monkeypatch):
    store, shas = _submit_queue(env, tiny_model, n=1)
    from core.scoring.detector import Detector

    passes = {"n": 0}
    real = Detector.forward

    def counted(self, tensor):
        passes["n"] += 1
        return real(self, tensor)

    at = _ok(_app().run())  # model loaded (and warmed up) before counting
    _login(at, "ana")
    at.switch_page("views/review.py")
    _ok(at.run())
    monkeypatch.setattr(Detector, "forward", counted)
    _button(at, "review-claim").click()
    _ok(at.run())
    assert passes["n"] == 0
    text = _texts(at)
    assert "patch logits over the image" in text and "P(fake)" in [m.label for m in at.metric]
    assert "#1 logit" in text and "shown from the store (this page)" in text


def test_a_blind_second_review_shows_no_trace_of_the_first_label(env, tiny_model, monkeypatch):
    """Neither the similar-items warning nor its list may show the item's own first label (its exact
    duplicate) to the second reviewer; a near copy labelled earlier is still flagged."""
    monkeypatch.setenv("LADEDA_SECOND_REVIEW_SHARE", "1.0")
    store, shas = _submit_queue(env, tiny_model, n=1)
    store.close()
    from core.review.store import ReviewStore

    with ReviewStore(env / "review.sqlite", second_review_share=1.0) as first:
        assert first.claim_next("lee")["sha256"] == shas[0]
        first.label(shas[0], "fake", "lee", note="lee-was-here")
        assert first.item(shas[0])["agreement_state"] == "pending_second"
    at = _review_claimed("ana")
    assert _shown_sha(at) == shas[0][:12]
    text = _texts(at)
    assert "Blind second review" in text
    assert "judged before" not in text and "lee" not in text, text
    at.session_state["review-similar"] = True  # opening the list shows no trace either
    _ok(at.run())
    assert "lee" not in _texts(at) and "exact duplicate" not in _texts(at)


def test_review_buttons_belong_to_the_item_whose_evidence_is_shown(env, tiny_model):
    store, shas = _submit_queue(env, tiny_model, n=3)
    at = _review_claimed("ana")
    seen = []
    for _ in range(3):
        shown = _shown_sha(at)
        assert _decision_shas(at) == {shown}  # the buttons carry the displayed item's sha
        holder = [s for s in shas if s.startswith(shown)][0]
        assert store.item(holder)["queue"]["lease_reviewer"] == "ana"
        assert at.subheader[0].value == store.item(holder)["name"]
        assert "The queue is empty." not in _texts(at)
        seen.append(holder)
        _button(at, f"review-{shown}-fake").click()  # auto-next claims the following item
        _ok(at.run())
        assert store.item(holder)["current_label"]["label"] == "fake"
    assert len(set(seen)) == 3
    # the queue is empty now: the message stands alone, no item and no decision buttons under it
    assert "The queue is empty." in _texts(at) and not _decision_shas(at) and not at.subheader


def test_a_stale_click_cannot_label_another_item(env, tiny_model):
    store, shas, at, first = _claimed_in_review(env, tiny_model, n=2)
    store.release(first, "ana")  # e.g. the lease was released in another tab
    store.claim_next("zed")  # and someone else holds it now
    _button(at, f"review-{first[:12]}-real").click()
    _ok(at.run())
    assert store.item(first)["current_label"] is None
    assert any("no longer leased to you" in e.value for e in at.error) or \
        "no longer leased to you" in _texts(at)


def test_undo_returns_the_auto_claimed_item_and_shows_names_and_thumbnails(env, tiny_model):
    store, shas, at, first = _claimed_in_review(env, tiny_model, n=2)
    _button(at, f"review-{first[:12]}-real").click()
    _ok(at.run())
    second = [s for s in shas if s.startswith(_shown_sha(at))][0]
    assert second != first and store.item(second)["queue"]["state"] == "leased"
    _button(at, f"review-{second[:12]}-undo").click()
    _ok(at.run())
    assert store.item(second)["queue"]["state"] == "queued"  # the auto-claimed item went back
    assert {x["sha256"] for x in store.leases("ana")} == {first}
    assert _shown_sha(at) == first[:12] and _decision_shas(at) == {first[:12]}
    text = _texts(at)
    assert f"Undid 'real' on {store.item(first)['name']}" in text and store.item(second)["name"] in text
    assert "The queue is empty." not in text
    _button(at, f"review-{first[:12]}-release").click()
    _ok(at.run())
    at.toggle(key="review-auto-next").set_value(False)
    _ok(at.run())
    _button(at, "review-claim").click()
    _ok(at.run())
    shown = _shown_sha(at)
    _button(at, f"review-{shown}-fake").click()
    _ok(at.run())
    history = [d.value for d in at.dataframe if "file" in d.value.columns and "image" in d.value.columns]
    assert history, "recent decisions list"
    assert history[0]["file"].iloc[0].startswith("stored-")
    assert str(history[0]["image"].iloc[0]).startswith("data:image/png;base64,")


def test_review_offers_a_rescore_when_the_model_changed(env, tiny_model):
    from core.paths import DEFAULT_MODEL as bundled

    store, shas = _submit_queue(env, bundled, n=1)  # scored by LaDeDa9; the app serves Tiny
    at = _review_claimed("ana")
    assert "not the active one" in _texts(at)
    _button(at, f"review-rescore-{shas[0][:12]}").click()
    _ok(at.run())
    assert "not the active one" not in _texts(at) and "Re-scored with the active model." in _texts(at)
    assert store.item(shas[0])["queue"]["state"] == "leased"  # still the reviewer's item


# ---------------------------------------------------------------------------
# the learning loop: proposals on Calibration, the learned line on Review and Monitor, the per-version chart
# ---------------------------------------------------------------------------
def test_learning_loop_proposal_line_and_chart(env, tiny_model, monkeypatch):
    from core.model.registry import ModelRegistry
    from core.review.actions.learn import learn_step
    from core.scoring.analysis import analyse, record_analysis
    from core.scoring.detector import Detector

    monkeypatch.setenv("LADEDA_LEARN_EVERY", "0")  # the learner stays out of the way; the step runs here
    det = Detector.load(tiny_model, fast=False)
    rng = np.random.default_rng(0)
    rows = []
    with _store(env) as s:
        for i in range(48):
            arr = np.clip(rng.normal(120, 5 + 3 * (i % 12), size=(96, 96, 3)), 0, 255).astype(np.uint8)
            a = analyse(det, encode(Image.fromarray(arr), "PNG"), name=f"i{i}.png", guardrails=False, encoder=None)
            record_analysis(s, a, name=f"i{i}.png", uploader="t")
            rows.append((a.score.sha256, a.score.logit))
        order = sorted(rows, key=lambda r: r[1])
        for sha, _ in order[:24]:
            s.label(sha, "fake", "ana")
        for sha, _ in order[24:]:
            s.label(sha, "real", "ana")
        out = learn_step(s, ModelRegistry(env / "models", base=tiny_model), activate="propose", min_per_class=20)
    assert out.status == "proposed"
    at = _ok(_app().run())
    _login(at, "ana")
    at.switch_page("views/calibration.py")
    _ok(at.run())
    text = _texts(at)
    proposed = [d.value for d in at.dataframe if "why held back" in d.value.columns]
    assert proposed and list(proposed[0]["version"]) == [out.version], text
    assert 0.0 <= proposed[0]["AUC after"][0] <= 1.0 and proposed[0]["labels"][0] == 48
    assert "Automatic learning is off" in text and "benchmarks/loop.py" in text
    _button(at, f"learn-activate-{out.version}").click()
    _ok(at.run())
    assert f"Now serving {out.version}." in _texts(at)
    at.switch_page("views/review.py")
    _ok(at.run())
    assert f"Model {out.version} learned from 48 labels" in _texts(at) and "out-of-fold AUC" in _texts(at)
    at.switch_page("views/monitor.py")
    _ok(at.run())
    assert f"Model {out.version} learned from 48 labels" in _texts(at)
    assert "What each model version learned" in [h.value for h in at.subheader]

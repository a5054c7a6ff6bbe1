"""The forensic parts of the dashboard under AppTest, on a temporary data directory: the
stress test on Inspect (a crafted fragile model flips and the item goes to review), the layer
switcher with its sentences, the reliability line, the report download, the stress test on
Review, and the Monitor playbook with its one-click action."""
from __future__ import annotations

import datetime as _dt

import pytest
from streamlit.testing.v1 import AppTest

from .conftest import REPO, encode, make_photo, save_random_tiny
from .test_probe import make_fragile

APP = str(REPO / "dashboard" / "app.py")
TIMEOUT = 240


@pytest.fixture(scope="module")
def photo() -> bytes:
    return encode(make_photo(320, 240, seed=3), "PNG")


@pytest.fixture(scope="module")
def fragile_model(tmp_path_factory, photo):
    return make_fragile(tmp_path_factory.mktemp("fragile"), photo)


@pytest.fixture()
def data_dir(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("LADEDA_DATA_DIR", str(data))
    return data


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _run(at: AppTest) -> AppTest:
    return _ok(at.run())


def _login(at: AppTest, name: str = "ana") -> AppTest:
    at.text_input(key="reviewer_name_input").input(name)
    at.button[[b.label for b in at.button].index("Start reviewing")].click()
    return _run(at)


def _upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader(key="inspect-upload").set_value((name, data, "image/png"))
    return _run(at)


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [s.value for s in at.success]
    parts += [i.value for i in at.info] + [w.value for w in at.warning] + [e.value for e in at.error]
    parts += [cap for img in at.image for cap in img.captions]
    return "\n".join(str(p) for p in parts)


def _store(data_dir, **kwargs):
    from core.review.store import ReviewStore

    return ReviewStore(data_dir / "review.sqlite", **kwargs)


def test_inspect_stress_test_flags_a_flip_and_sends_the_item_to_review(data_dir, monkeypatch, fragile_model, photo):
    monkeypatch.setenv("LADEDA_MODEL", str(fragile_model))
    at = _login(_run(AppTest.from_file(APP, default_timeout=TIMEOUT)))
    _upload(at, "photo.png", photo)
    assert "Too few labels to say" in _texts(at)  # the reliability line, with an empty store
    at.button(key="inspect-probe").click()
    _run(at)
    text = _texts(at)
    assert "Unstable: the tier flips" in text and "downscale_0.5: fake → real" in text
    assert "sent to review" in text
    table = next(d.value for d in at.dataframe if "variant" in d.value.columns)
    assert list(table["variant"])[0] == "original" and "flips" in list(table["flip"])
    import hashlib

    sha = hashlib.sha256(photo).hexdigest()
    with _store(data_dir) as store:
        item = store.item(sha)
        assert item["queue_state"] == "queued" and item["queue"]["reason"].startswith("stability probe")
    # the stored probe is shown again on a later visit, without re-running it
    at2 = _login(_run(AppTest.from_file(APP, default_timeout=TIMEOUT)))
    _upload(at2, "photo.png", photo)
    assert "Unstable: the tier flips" in _texts(at2)
    assert at2.button(key="inspect-probe").label == "Run the stress test again"


def test_inspect_layers_reliability_and_report(data_dir, monkeypatch, tmp_path, photo):
    monkeypatch.setenv("LADEDA_MODEL", str(save_random_tiny(tmp_path / "tiny.pt", seed=1)))
    at = _login(_run(AppTest.from_file(APP, default_timeout=TIMEOUT)))
    _upload(at, "photo.png", photo)
    def layer_control():  # the forensic layer switch (the image view has its own Heatmap/GradCAM/Plain switch)
        return next(b for b in at.get("button_group") if b.key == "inspect-layer")

    layer = layer_control()
    for choice, title, says in (("Error level (ELA)", "Error level analysis (JPEG q90", "compression history"),
                                ("Noise residual", "Noise residual", "sensor noise"),
                                ("Model input", "Model input: right_diag at 256×256", "What the model reads")):
        layer.set_value(choice)
        _run(at)
        layer = layer_control()
        text = _texts(at)
        assert title in text and says in text and "How it misleads." in text, choice
    at.button(key="inspect-report").click()
    _run(at)
    downloads = at.get("download_button")
    assert downloads and "Chain head" in _texts(at)
    # the report the page prepared verifies against the store
    from core.review.report import verify_report

    doc = at.session_state["inspect-report"][1]
    with _store(data_dir) as store:
        assert verify_report(doc, store).ok


def test_the_segment_line_shows_a_rate_once_there_are_enough_labels(data_dir, monkeypatch, tmp_path, photo):
    from core.review.reliability import MIN_LABELS
    from core.scoring.analysis import analyse
    from core.scoring.detector import Detector

    model = save_random_tiny(tmp_path / "tiny.pt", seed=1)
    monkeypatch.setenv("LADEDA_MODEL", str(model))
    analysis = analyse(Detector.load(model, fast=False), photo)
    guardrails = analysis.guardrails.to_json()
    with _store(data_dir) as store:  # 30 labelled items in this image's segment, 3 of them overturned
        for i in range(MIN_LABELS):
            sha = store.add_item(f"other-{i}".encode() * 20, name=f"o{i}.png")
            store.record_scoring(sha, model_sha256="m" * 64, logit=0.0, probability=0.5, tier=analysis.tier,
                                 guardrails=guardrails, auto_queue=False)
            verdict = "fake"  # model_verdict at p = 0.5 (and for the fake tier)
            if analysis.tier == "real":
                verdict = "real"
            other = "real" if verdict == "fake" else "fake"
            store.label(sha, other if i < 3 else verdict, "bo")
    at = _run(AppTest.from_file(APP, default_timeout=TIMEOUT))
    _upload(at, "photo.png", photo)
    text = _texts(at)
    assert f"On {MIN_LABELS} labelled items in the" in text and "reviewers overturned 10%" in text


def test_review_offers_the_stress_test_on_the_claimed_item(data_dir, monkeypatch, fragile_model, photo):
    monkeypatch.setenv("LADEDA_MODEL", str(fragile_model))
    with _store(data_dir) as store:
        sha = store.add_item(photo, name="queued.png")
        store.enqueue(sha, by="lead", reason="escalated")
    at = _login(_run(AppTest.from_file(APP, default_timeout=TIMEOUT)))
    at.switch_page("views/review.py")
    _run(at)
    at.button(key="review-claim").click()
    _run(at)
    assert "reliable" in _texts(at)  # the reliability line next to the verdict
    # the tools are folded on Review (drawn only once opened), and say that no stress test ran yet
    assert "review-probe" not in [b.key for b in at.button]
    assert "Stress test not run on this image yet" in _texts(at)
    at.session_state["review-tools"] = True  # the reviewer opens "Forensic tools"
    _run(at)
    at.button(key="review-probe").click()
    _run(at)
    assert "Unstable: the tier flips" in _texts(at)
    at.session_state["review-tools"] = False  # folded again: the stored flip is still said, as a warning
    _run(at)
    assert "review-probe" not in [b.key for b in at.button]
    assert any("Unstable: the tier flips" in w.value for w in at.warning)
    with _store(data_dir) as store:  # leased to ana: the probe is stored, the lease is not disturbed
        item = store.item(sha)
        assert item["queue_state"] == "leased" and item["queue"]["lease_reviewer"] == "ana"


def test_monitor_playbook_follows_the_data_and_raises_the_threshold(data_dir, monkeypatch, tmp_path):
    from core.model.registry import ModelRegistry

    from .test_playbook import SCORES, _window

    base = save_random_tiny(tmp_path / "tiny.pt", seed=1, tiers={"real_below": 0.2, "fake_at_or_above": 0.8})
    monkeypatch.setenv("LADEDA_MODEL", str(base))
    now = _dt.datetime.now(_dt.timezone.utc)
    clock = {"t": now}
    import tests.test_playbook as tp

    monkeypatch.setattr(tp, "NOW", now)
    with _store(data_dir, clock=lambda: clock["t"], synchronous="NORMAL") as store:
        _window(store, clock, "ref", 20, SCORES, fp_every=20)
        _window(store, clock, "new", 2, SCORES, fp_every=2)
    at = _run(AppTest.from_file(APP, default_timeout=TIMEOUT))
    at.switch_page("views/monitor.py")
    _run(at)
    text = _texts(at)
    assert "C · False-positive spike" in text and "labelled clearly-fake calls" in text
    raise_buttons = [b for b in at.button if b.label.startswith("Raise the fake threshold to")]
    assert raise_buttons and raise_buttons[0].disabled  # no reviewer yet
    _login(at)
    raise_buttons = [b for b in at.button if b.label.startswith("Raise the fake threshold to")]
    threshold = float(raise_buttons[0].label.rsplit(" ", 1)[1])
    raise_buttons[0].click()
    _run(at)
    assert "Saved and activated a version" in _texts(at)
    active = ModelRegistry(data_dir / "models", base=base).active()
    assert active.version is not None and active.version.tiers["fake_at_or_above"] == pytest.approx(threshold)

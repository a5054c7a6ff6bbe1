"""What every page shares: the loaded model, the review store, the model
registry, the reviewer's identity and friendly error handling.

Heavy objects are Streamlit resources (one per process): the detector is
loaded once per checkpoint, and a calibrated version of the same weights
reuses the already-built network (``core.model.registry.rebind``), so
activating a new calibration does not re-trace the model.
"""
from __future__ import annotations

import gc
import logging
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run dashboard/app.py` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from core.errors import DetectorError  # noqa: E402

log = logging.getLogger("ladeda.dashboard")

GENERIC_ERROR = ("Something went wrong while {action}. Nothing was changed that you did not see confirmed; "
                 "the details were logged for the administrator. Please try again.")


# ---------------------------------------------------------------------------
# errors: a message for people, never a traceback
# ---------------------------------------------------------------------------
@contextmanager
def guarded(action: str, *, where: Any = None) -> Iterator[None]:
    """Run a block; show a :class:`DetectorError` as its message, anything else as a generic note.

    Streamlit's own control flow (``st.rerun``/``st.stop``) passes through.
    """
    target = where or st
    try:
        yield
    except DetectorError as exc:
        target.error(str(exc), icon=":material/error:")
    except Exception:  # noqa: BLE001 - logged, shown as a friendly message
        log.exception("dashboard error while %s", action)
        target.error(GENERIC_ERROR.format(action=action), icon=":material/error:")


def flash(kind: str, text: str, page: str) -> None:
    """Queue a message for the next render of ``page`` (callbacks run before the page is drawn)."""
    st.session_state.setdefault("_flash", {}).setdefault(page, []).append((kind, text))


def show_flashes(page: str, where: Any = None, *, compact: bool = False) -> None:
    """Show (once) what the callbacks queued for ``page``. ``compact`` draws confirmations as one green
    line instead of a box (a page where every click confirms, like Review); errors and warnings stay boxes."""
    target = where or st
    for kind, text in st.session_state.get("_flash", {}).pop(page, []):
        if compact and kind == "success":
            target.markdown(f":green[:material/check_circle: {text}]")
        else:
            getattr(target, kind)(text)


def act(page: str, action: str, fn: Any, *args: Any, success: str | None = None,
        **kwargs: Any) -> tuple[bool, Any]:
    """Run a button's work (usually in its ``on_click`` callback); report the outcome as a flash.

    Returns ``(ok, result)``.
    """
    try:
        out = fn(*args, **kwargs)
    except DetectorError as exc:
        flash("error", str(exc), page)
        return False, None
    except Exception:  # noqa: BLE001 - logged, shown as a friendly message
        log.exception("dashboard error while %s", action)
        flash("error", GENERIC_ERROR.format(action=action), page)
        return False, None
    if success:
        flash("success", success, page)
    return True, out


# ---------------------------------------------------------------------------
# locations
# ---------------------------------------------------------------------------
def data_dir() -> Path:
    from core.paths import data_dir as _data_dir

    return _data_dir()


def exports_dir() -> Path:
    path = data_dir() / "exports"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------
# store and registry
# ---------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _store(target: str):
    from core.review.store import open_store

    return open_store(target, create=True)


def store():
    """The review store: $LADEDA_DATABASE_URL (PostgreSQL, for a team), else ``<data dir>/review.sqlite``."""
    from core.paths import default_db_target

    return _store(str(default_db_target()))


def registry():
    from core.model.registry import ModelRegistry

    return ModelRegistry(data_dir() / "models")


# ---------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=2)
def _engine(weights_key: str, path: str):
    """One built (and traced) network per set of weights, warmed up so the first upload is not slower."""
    from core.scoring.detector import Detector

    det = Detector.load(path)
    _warm_up(det)
    # The model, its traced graph and every module imported so far live as long as the server: move
    # them out of the cyclic collector's reach, so its full passes stay cheap (see .streamlit/config.toml).
    # Unfreezing first lets this collection free a model that an earlier switch evicted.
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return det


def _warm_up(det: Any) -> None:
    """Run the whole analysis (through the upload door, without a store) and GradCAM once on a small
    synthetic image (imports, caches, kernels)."""
    import io

    import numpy as np
    from PIL import Image

    from core.review.actions.submit import submit
    from core.scoring import explain

    try:
        rng = np.random.default_rng(0)
        img = Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), "RGB")
        buf = io.BytesIO()
        img.save(buf, "PNG")
        submit(det, buf.getvalue(), "warm-up")
        explain.warm_up(det.model)
        from core.scoring.guardrails import faces

        faces.detect_faces(img)  # loads this thread's cascades
    except Exception:  # noqa: BLE001 - warming up is an optimisation only
        log.warning("warm-up failed", exc_info=True)


@st.cache_resource(show_spinner=False, max_entries=8)
def _detector(path: str, sha256: str):
    from core.model.checkpoint import load_checkpoint
    from core.model.registry import rebind, weights_key

    ckpt = load_checkpoint(path)
    engine = _engine(weights_key(ckpt), path)
    return engine if engine.checkpoint.sha256 == ckpt.sha256 else rebind(engine, ckpt)


@dataclass
class ActiveDetector:
    detector: Any
    version: str  #: "base" or a registry version id
    warning: str | None


#: Seconds the last model load took in this data directory (shown on the next first start).
LOAD_TIME_FILE = "model_load_seconds.txt"
DEFAULT_LOAD_SECONDS = 40
_LOADED: set[tuple[str, str]] = set()  # (path, sha256) already built in this process


def _expected_load_seconds() -> int:
    try:
        return max(1, round(float((data_dir() / LOAD_TIME_FILE).read_text().strip())))
    except (OSError, ValueError):
        return DEFAULT_LOAD_SECONDS


def active_detector(notice: Any = None) -> ActiveDetector | None:
    """The detector serving now (the registry's active version or the base); None after showing why not.

    While the model is built for the first time, ``notice`` (a main-area placeholder) says so, with
    how long it took last time, instead of leaving the page blank.
    """
    import time

    from core.model.registry import cached_sha256

    try:
        active = registry().active()
        key = (str(active.path), cached_sha256(active.path))
        if key not in _LOADED and notice is not None:
            notice.info(f"Loading the model (first start takes about {_expected_load_seconds()} s)…",
                        icon=":material/hourglass_top:")
        t0 = time.perf_counter()
        det = _detector(*key)
        if key not in _LOADED:
            _LOADED.add(key)
            elapsed = time.perf_counter() - t0
            if elapsed > 2:
                try:
                    (data_dir() / LOAD_TIME_FILE).write_text(f"{elapsed:.0f}\n")
                except OSError:
                    pass
        if notice is not None:
            notice.empty()
        return ActiveDetector(det, active.name, active.warning)
    except DetectorError as exc:
        st.error(f"The model could not be loaded: {exc}", icon=":material/error:")
    except Exception:  # noqa: BLE001
        log.exception("model load failed")
        st.error(GENERIC_ERROR.format(action="loading the model"), icon=":material/error:")
    if notice is not None:
        notice.empty()
    return None


def model_summary(active: ActiveDetector) -> dict[str, Any]:
    """What the header and the sidebar say about the model: the calibration named is the one that
    serves the verdicts (the fused LaDeDa + CLIP calibration when the encoder is installed)."""
    from core.review.actions.calibrate import serving_calibration, serving_space

    ident = active.detector.identity
    cal_version, cal_method = ident["calibration_version"], ident["calibration_method"]
    calibration, tiers = serving_calibration(active.detector.checkpoint)
    if serving_space(active.detector.checkpoint) == "fused" and calibration:
        cal_version = calibration.get("version")
        cal_method = f"{calibration.get('method')}, of the fused LaDeDa + CLIP logit"
    return {
        "label": ident["label"],
        "sha256": ident["sha256"] or "",
        "version": active.version,
        "calibration_version": cal_version,
        "calibration_method": cal_method,
        "preprocess_summary": ident["preprocess_summary"],
        "preprocess_fingerprint": ident["preprocess_fingerprint"],
        "path": ident["path"],
        "tiers": dict(tiers or {}),  # the thresholds verdicts are decided with
    }


# ---------------------------------------------------------------------------
# identity
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    name: str
    authenticated: bool

    @property
    def display(self) -> str:
        return self.name if self.authenticated else f"{self.name} (unauthenticated)"


LOOPBACK_ADDRESSES = ("127.0.0.1", "localhost", "::1")


def exposure_warning() -> str | None:
    """A banner text when the server listens beyond this machine without sign-in, else None."""
    address = str(st.get_option("server.address") or "").strip()
    if address in LOOPBACK_ADDRESSES or address.startswith("127.") or auth_configured():
        return None
    where = address or "every network interface"
    return (f"This dashboard listens on {where} and no sign-in is configured: anyone who can reach it can "
            "label images under any name. Configure an [auth] section (see .streamlit/secrets.example.toml) "
            "or serve it on 127.0.0.1 only.")


def auth_configured() -> bool:
    """True when an ``[auth]`` section is configured: Streamlit then reports ``is_logged_in``."""
    try:
        return "is_logged_in" in st.user
    except Exception:  # noqa: BLE001
        return False


def identity() -> Identity | None:
    """Who is reviewing: ``st.user`` under ``[auth]``, else a name entered once per session."""
    if auth_configured():
        if st.user.is_logged_in:
            name = st.user.get("email") or st.user.get("name") or st.user.get("sub")
            return Identity(str(name), True) if name else None
        return None
    name = st.session_state.get("reviewer_name")
    if not name:  # a reload or a new tab: the name travels in the address (still unauthenticated)
        from_url = str(st.query_params.get(NAME_PARAM) or "").strip()[:100]
        if from_url:
            name = st.session_state["reviewer_name"] = from_url
    if name and st.query_params.get(NAME_PARAM) != name:
        st.query_params[NAME_PARAM] = name
    return Identity(name, False) if name else None


#: Query parameter that keeps an unauthenticated reviewer's name across reloads and tabs.
NAME_PARAM = "reviewer"


def _set_name() -> None:
    name = str(st.session_state.get("reviewer_name_input") or "").strip()
    if name:
        st.session_state["reviewer_name"] = name[:100]
        st.query_params[NAME_PARAM] = name[:100]
    else:
        flash("warning", "Enter a name first.", "sidebar")


def _login() -> None:
    try:
        st.login()
    except Exception as exc:  # noqa: BLE001 - e.g. Authlib missing or a bad [auth] section
        log.warning("login failed: %s", exc)
        flash("error", "Sign-in is configured but could not start (is the Authlib package installed and the "
                       "[auth] section complete?). Ask the administrator.", "sidebar")


def _forget_name() -> None:
    st.session_state.pop("reviewer_name", None)
    st.query_params.pop(NAME_PARAM, None)


def identity_panel(where: Any) -> Identity | None:
    """Sidebar block: who is reviewing, with log in / name entry when nobody is yet."""
    show_flashes("sidebar", where)
    who = identity()
    if who is not None:
        where.markdown(f"**Reviewer:** {who.display}")
        if who.authenticated:
            where.button("Log out", on_click=st.logout, key="logout")
        else:
            where.button("Change name", key="change_name", type="tertiary", on_click=_forget_name)
        return who
    if auth_configured():
        where.info("Log in to review.")
        where.button("Log in", on_click=_login, key="login", type="primary")
        return None
    with where.form("who", border=False):
        st.text_input("Your name", key="reviewer_name_input", max_chars=100,
                      help="No sign-in is configured: your name is recorded with your decisions, "
                           "marked as unauthenticated.")
        st.form_submit_button("Start reviewing", on_click=_set_name)
    return None


def require_identity() -> Identity | None:
    """The reviewer, or a note that actions need one."""
    who = identity()
    if who is None:
        st.info("Enter your name in the sidebar (or log in) to review, label and export.",
                icon=":material/person:")
    return who

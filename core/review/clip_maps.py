"""The CLIP GradCAM of a stored item: computed once on demand, stored, and shown only under its own verdict.

Why: GradCAM on the CLIP tower costs seconds, so it is not on the verdict's
critical path; it is computed the first time an analyst opens the view (or
a report needs it) and stored under the item's SHA-256 and
:func:`core.scoring.clip_cam.cam_key` (encoder key + head version + layer),
so page reruns and other sessions read it back. A map is offered only for a
verdict made by the active checkpoint with its CLIP part: the map explains
the active head, and a verdict from another checkpoint (another head) would
sit above a map that did not explain it.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from core.scoring import clip_cam

if TYPE_CHECKING:  # pragma: no cover
    from core.review.evidence import Evidence
    from core.review.store import ReviewStore
    from core.scoring.clip_cam import ClipCam
    from core.scoring.detector import Detector

#: Maps kept in memory when there is no store (e.g. the report of an unstored image).
_MEMO: "OrderedDict[tuple[str, str], ClipCam]" = OrderedDict()
_MEMO_LOCK = threading.Lock()
_MEMO_SIZE = 32


@dataclass
class ClipMap:
    """The map, or why there is none."""

    cam: "ClipCam | None"
    note: str | None = None  #: why there is no map (None with no map: not computed yet)
    computed: bool = False  #: made by this call (not read back)


def _key(detector: "Detector") -> tuple[Any, Any, str | None, str | None]:
    """(encoder, head, key, reason): the key of the active encoder and head, or why there is none."""
    from core.encoders.clip import encoder_status, load_encoder
    from core.scoring.analysis import learned_parts

    parts = learned_parts(detector.checkpoint)
    if not parts.fuses:
        return None, None, None, ("This model has no CLIP head: its verdicts are LaDeDa's alone, so there is "
                                  "no CLIP map.")
    enc = load_encoder()
    if enc is None:
        return None, None, None, encoder_status() or "The CLIP encoder is not installed."
    return enc, parts.clip_head, clip_cam.cam_key(enc, parts.clip_head), None


def clip_map(detector: "Detector | None", store: "ReviewStore | None", ev: "Evidence", image: Image.Image | None,
             *, compute: bool = True) -> ClipMap:
    """The CLIP GradCAM for the verdict ``ev``: read back when stored, else computed (``compute``) and stored."""
    return clip_map_for(detector, store, sha256=ev.sha256, model_sha256=ev.model_sha256,
                        components=ev.extra.get("components"), image=image, compute=compute)


def clip_map_for(detector: "Detector | None", store: "ReviewStore | None", *, sha256: str, model_sha256: str,
                 components: dict[str, Any] | None, image: Image.Image | None, compute: bool = True) -> ClipMap:
    """:func:`clip_map` for a verdict given by its facts: the item, the checkpoint that made it, its components."""
    if detector is None:
        return ClipMap(None, "No model is loaded, so CLIP's map cannot be computed.")
    if model_sha256 != (detector.checkpoint.sha256 or ""):
        return ClipMap(None, "This verdict was made by another model than the active one: re-score it to see the "
                             "active CLIP head's map under a verdict it made.")
    if not (components or {}).get("clip"):
        return ClipMap(None, "This verdict was made without the CLIP second opinion, so there is no CLIP map for it.")
    enc, head, key, why = _key(detector)
    if key is None:
        return ClipMap(None, why)
    cam = clip_cam.load(store, sha256, key) if store is not None else None
    if cam is None:
        with _MEMO_LOCK:
            cam = _MEMO.get((sha256, key))
    if cam is not None:
        return ClipMap(cam)
    if not compute:
        return ClipMap(None)  # not computed yet
    if image is None:
        return ClipMap(None, "The image is not stored, so CLIP's map cannot be computed.")
    cam = clip_cam.compute(enc, head, image)
    if store is not None:
        clip_cam.save(store, sha256, cam)
    else:
        with _MEMO_LOCK:
            _MEMO[(sha256, key)] = cam
            while len(_MEMO) > _MEMO_SIZE:
                _MEMO.popitem(last=False)
    return ClipMap(cam, computed=True)

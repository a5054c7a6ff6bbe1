"""The one door for an upload: decode once, hash once, preprocess once, analyse, record, keep the evidence.

Why: the Inspect page, Review and ``score --db`` must give the same bytes the
same verdict, and nothing may run the model twice for one upload. The
decoded image carries its SHA-256 (computed while decoding, never again);
the model input made for the scoring is kept for GradCAM; what the panels
show is stored once as :class:`core.review.evidence.Evidence` under the
weights key. A re-upload of bytes the active model already scored is
answered from the store without a model pass.

Two phases, so the verdict's critical path is the part that decides it:
``submit(..., defer=True)`` returns a provisional verdict. With the CLIP encoder
installed and a fitted fusion, that is decode plus one CLIP pass fused with
LaDeDa's term at its prior (:func:`core.scoring.analysis.first_look`): the
verdict is almost entirely CLIP's, and CLIP is about 20 times faster than
LaDeDa on a CPU. Without the encoder it is decode plus LaDeDa's pass.
:func:`finish` then runs what is left (LaDeDa's pass when the first look was
CLIP's, reusing its CLIP features; the guardrails: metadata, quality, face
detection and per-face scoring), applies the policy, records the scoring and
stores the evidence. Without ``defer`` both happen in one call, and the
answer is the same.

Model passes are taken in turn through one gate per process (:data:`GATE`):
Streamlit runs each browser session in its own thread, the CPU is shared
anyway, and a caller can show the analyst its place in the line.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from core.errors import DetectorError
from core.review import evidence as evidence_mod
from core.review.evidence import Evidence

if TYPE_CHECKING:  # pragma: no cover
    from core.imageio import DecodedImage
    from core.model.preprocess import ModelInput
    from core.review.store import ReviewStore
    from core.scoring.analysis import Analysis, FirstLook
    from core.scoring.detector import Detector

#: Artifact that points at the model key of an item's latest evidence (Review shows it even after
#: the active model changed, with an offer to re-score).
LATEST_KIND = "evidence_ref"
LATEST_KEY = "latest"

WaitCallback = Callable[[int], None]


class ModelGate:
    """First come, first served access to the model, with each waiter's place in the line.

    ``on_wait(ahead)`` is called (outside the lock) whenever the number of analyses ahead changes;
    a waiter that gives up (an exception from ``on_wait``, e.g. the browser session went away)
    leaves the line, so it can never block the others.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._line: deque[object] = deque()
        self._busy = False

    @property
    def waiting(self) -> int:
        with self._cv:
            return len(self._line) + (1 if self._busy else 0)

    @contextmanager
    def turn(self, on_wait: WaitCallback | None = None) -> Iterator[None]:
        token = object()
        with self._cv:
            self._line.append(token)
        last = None
        try:
            while True:
                with self._cv:
                    if self._line[0] is token and not self._busy:
                        self._line.popleft()
                        self._busy = True
                        break
                    ahead = self._line.index(token) + (1 if self._busy else 0)
                if on_wait is not None and ahead != last:
                    on_wait(ahead)
                    last = ahead
                with self._cv:
                    if not (self._line[0] is token and not self._busy):
                        self._cv.wait(0.25)
        except BaseException:
            with self._cv:
                if token in self._line:
                    self._line.remove(token)
                self._cv.notify_all()
            raise
        try:
            yield
        finally:
            with self._cv:
                self._busy = False
                self._cv.notify_all()


#: The process-wide gate every analysis goes through.
GATE = ModelGate()


@dataclass
class Submission:
    """What one upload produced: the verdict's evidence and where the item stands."""

    sha256: str
    name: str
    evidence: Evidence
    analysis: "Analysis | None" = None  #: None when the evidence came from the store
    decoded: "DecodedImage | None" = None  #: the decoded upload (for display)
    prepared: "ModelInput | None" = None  #: the model input of this scoring (for GradCAM)
    scoring_id: int | None = None
    queue_state: str | None = None
    reused: bool = False  #: answered from the store, no model pass
    pending: bool = False  #: guardrails and recording still to come (:func:`finish`)
    stale: bool = False  #: stored evidence is from another checkpoint than the active one
    wait_ms: float = 0.0  #: time spent waiting for the model gate
    first: "FirstLook | None" = None  #: CLIP's first look, while LaDeDa's pass is still to come
    provisional_tier: str | None = None  #: the tier the provisional card showed (kept after finish)

    @property
    def recorded(self) -> bool:
        return self.scoring_id is not None or self.reused


def model_key_of(detector: "Detector") -> str:
    from core.model.registry import weights_key

    return weights_key(detector.checkpoint)


def _gradcam_facts(detector: "Detector") -> tuple[float | None, str | None]:
    """(head bias, default layer name) when GradCAM at the default layer follows from the patch map."""
    from core.scoring import explain

    model = detector.model
    if not explain.default_layer_is_patch_grid(model):
        return None, None
    return float(model.fc.bias.detach().reshape(-1)[0]), explain.target_layer(model)[0]


def _provisional(detector: "Detector", decoded: "DecodedImage", prepared: "ModelInput", name: str,
                 clip: Any = None) -> "Analysis":
    from core.scoring.analysis import analyse

    return analyse(detector, decoded, name=name, guardrails=False, prepared=prepared, clip=clip)


def _first_look(detector: "Detector", decoded: "DecodedImage") -> "FirstLook | None":
    from core.scoring.analysis import first_look

    detector.check_size(decoded)  # what LaDeDa's pass would refuse is refused before any verdict is shown
    return first_look(detector, decoded)


def _with_guardrails(detector: "Detector", analysis: "Analysis") -> "Analysis":
    """The provisional analysis completed: guardrails measured, the policy applied to them."""
    from core.scoring.guardrails import run_guardrails
    from core.scoring.policy import decide, decide_served

    t0 = time.perf_counter()
    report = run_guardrails(analysis.decoded, detector,
                            model_input_size=tuple(analysis.score.image["model_input"]))
    t1 = time.perf_counter()
    # the same rules as one-phase scoring: the served (fused) tiers, the OOD guard, the parts' agreement
    decision = (decide_served(analysis.served, report) if analysis.served is not None
                else decide(analysis.score.probability, detector.checkpoint.tiers, report))
    t2 = time.perf_counter()
    timings = dict(analysis.timings_ms)
    timings.update(guardrails=(t1 - t0) * 1e3, policy=(t2 - t1) * 1e3,
                   analysis_total=float(timings.get("analysis_total", 0.0)) + (t2 - t0) * 1e3)
    return dataclasses.replace(analysis, guardrails=report, decision=decision, timings_ms=timings)


def _evidence(detector: "Detector", analysis: "Analysis", name: str) -> Evidence:
    bias, layer = _gradcam_facts(detector)
    return Evidence.from_analysis(analysis, model_key=model_key_of(detector), name=name,
                                  geometry=detector.geometry, head_bias=bias, gradcam_layer=layer)


def latest_evidence(store: "ReviewStore", sha256: str) -> Evidence | None:
    """The evidence of the item's latest scoring through :func:`submit`, whatever model made it."""
    ref = store.artifacts.get(sha256, LATEST_KEY, LATEST_KIND)
    if ref is None:
        return None
    return evidence_mod.load(store, sha256, str(ref[1].get("model_key") or ""))


def evidence_for(store: "ReviewStore", detector: "Detector | None", sha256: str) -> tuple[Evidence | None, bool]:
    """``(evidence, stale)`` for an item: the active weights' evidence when stored, else the latest one;
    ``stale`` is True when it was not produced by the active checkpoint (offer a re-score)."""
    ev = evidence_mod.load(store, sha256, model_key_of(detector)) if detector is not None else None
    if ev is None:
        ev = latest_evidence(store, sha256)
    if ev is None:
        return None, False
    stale = detector is None or ev.model_sha256 != (detector.checkpoint.sha256 or "")
    return ev, stale


def _save(store: "ReviewStore", ev: Evidence) -> None:
    evidence_mod.save(store, ev)
    store.artifacts.put(ev.sha256, LATEST_KEY, LATEST_KIND, {}, {"model_key": ev.model_key})


def submit(detector: "Detector", data: bytes, name: str, store: "ReviewStore | None" = None,
           uploader: str | None = None, authenticated: bool = False, *, defer: bool = False,
           rescore: bool = False, auto_queue: bool = True, on_wait: WaitCallback | None = None,
           top_k: int = 5) -> Submission:
    """Analyse one upload (or answer it from the store) and, with a store, record it.

    ``defer``: return after the model pass with a provisional verdict; call :func:`finish` for
    the guardrails, the final tier and the recording. ``rescore``: run the model even when the
    store already holds this checkpoint's evidence. Bad bytes raise a :class:`DetectorError`
    subclass whose message is for people.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) or not bytes(data):
        raise DetectorError(f"{name or 'The upload'} is empty (0 bytes); nothing was analysed.")
    t_dec = time.perf_counter()
    decoded = detector.decode(bytes(data))  # hashes the bytes, once
    decode_ms = (time.perf_counter() - t_dec) * 1e3
    sha = decoded.sha256
    if store is not None and not rescore:
        stored = evidence_mod.load(store, sha, model_key_of(detector))
        if stored is not None and stored.complete and stored.model_sha256 == (detector.checkpoint.sha256 or ""):
            _add_upload(store, decoded, name, uploader, authenticated)
            return Submission(sha256=sha, name=name, evidence=stored, decoded=decoded, reused=True,
                              queue_state=_queue_state(store, sha))
    t0 = time.perf_counter()
    with GATE.turn(on_wait):
        waited = (time.perf_counter() - t0) * 1e3
        first = _first_look(detector, decoded) if defer else None
        if first is None:  # LaDeDa decides, or both phases run now anyway: LaDeDa's pass first
            t_pre = time.perf_counter()
            prepared = detector.prepare(decoded)  # once; GradCAM reuses it
            preprocess_ms = (time.perf_counter() - t_pre) * 1e3
            analysis = _provisional(detector, decoded, prepared, name)
    if first is not None:
        first.timings_ms.update(decode=decode_ms, **({"wait_for_model": waited} if waited >= 1.0 else {}))
        ev = Evidence.first_look(first, model_key=model_key_of(detector), model_sha256=detector.checkpoint.sha256 or "",
                                 model_label=str(detector.identity.get("label") or ""), name=name,
                                 geometry=detector.geometry,
                                 model_input_hw=detector.spec.input_size(decoded.width, decoded.height))
        return Submission(sha256=sha, name=name, evidence=ev, decoded=decoded, pending=True, wait_ms=waited,
                          first=first, provisional_tier=ev.tier)
    timings = analysis.score.timings_ms  # the scoring was handed a decoded, prepared image
    timings.update(decode=decode_ms, preprocess=preprocess_ms,
                   total=float(timings.get("total", 0.0)) + decode_ms + preprocess_ms)
    if "wait" not in timings and waited >= 1.0:
        timings["wait_for_model"] = waited
    sub = Submission(sha256=sha, name=name, evidence=_evidence(detector, analysis, name), analysis=analysis,
                     decoded=decoded, prepared=prepared, pending=True, wait_ms=waited)
    if defer:
        sub.provisional_tier = sub.evidence.tier
        return sub
    return finish(detector, sub, store, uploader=uploader, authenticated=authenticated, auto_queue=auto_queue,
                  on_wait=on_wait)


def finish(detector: "Detector", sub: Submission, store: "ReviewStore | None" = None, *,
           uploader: str | None = None, authenticated: bool = False, auto_queue: bool = True,
           on_wait: WaitCallback | None = None) -> Submission:
    """Second phase of :func:`submit`: guardrails (faces scored by the same model), final tier,
    then the scoring recorded and the evidence stored. A no-op on a finished submission."""
    if not sub.pending:
        return sub
    prepared = sub.prepared
    with GATE.turn(on_wait):
        analysis = sub.analysis
        if analysis is None:  # CLIP gave the first look: LaDeDa's pass now, CLIP's features reused
            assert sub.first is not None and sub.decoded is not None
            t_pre = time.perf_counter()
            prepared = detector.prepare(sub.decoded)
            preprocess_ms = (time.perf_counter() - t_pre) * 1e3
            analysis = _provisional(detector, sub.decoded, prepared, sub.name, clip=sub.first.clip)
            timings = analysis.score.timings_ms
            timings.update(preprocess=preprocess_ms, total=float(timings.get("total", 0.0)) + preprocess_ms,
                           **{k: v for k, v in sub.first.timings_ms.items() if k not in timings})
            analysis.timings_ms["clip"] = sub.first.timings_ms["clip"]
        analysis = _with_guardrails(detector, analysis)
    ev = _evidence(detector, analysis, sub.name)
    out = dataclasses.replace(sub, analysis=analysis, evidence=ev, pending=False, prepared=prepared, first=None)
    if store is None:
        return out
    from core.scoring.analysis import record_analysis

    # the one recorder of a scoring (CLI, batch and dashboard alike): bytes, scoring, features
    scoring_id = record_analysis(store, analysis, name=sub.name, uploader=uploader, auto_queue=auto_queue)
    _save(store, ev)
    return dataclasses.replace(out, scoring_id=scoring_id, queue_state=_queue_state(store, sub.sha256))


def add_gradcam(detector: "Detector", sub: Submission, store: "ReviewStore | None" = None) -> Evidence:
    """Make sure the evidence can show GradCAM without a model pass.

    For LaDeDa the default layer follows from the stored patch map: nothing to compute. Otherwise
    GradCAM runs once on the model input this scoring already made, and its grid joins the stored
    evidence.
    """
    ev = sub.evidence
    if ev.head_bias is not None or ev.gradcam_grid is not None:
        return ev
    if sub.pending and not ev.has_patch_map:
        raise DetectorError("GradCAM is drawn once LaDeDa's pass has finished; it is still running.")
    from core.scoring import explain

    decoded = sub.decoded
    if decoded is None:
        raise DetectorError("GradCAM needs the image; re-score it with the active model first.")
    target = "fake" if ev.probability >= 0.5 else "real"
    res = explain.gradcam(explain.gradcam_network(detector.model),
                          _channels_last(sub.prepared.tensor if sub.prepared is not None
                                         else detector.prepare(decoded).tensor),
                          decoded.image, target=target, max_side=explain.DEFAULT_MAX_SIDE)
    ev = dataclasses.replace(ev, gradcam_grid=res.cam, gradcam_target=res.target,
                             gradcam_layer=res.layer,
                             timings_ms={**ev.timings_ms, "gradcam": res.elapsed_ms})
    sub.evidence = ev
    if store is not None and not sub.pending:
        _save(store, ev)
    return ev


def _channels_last(tensor: Any) -> Any:
    import torch

    return tensor.contiguous(memory_format=torch.channels_last)


def rescore(detector: "Detector", store: "ReviewStore", sha256: str, *, uploader: str | None = None,
            authenticated: bool = False, on_wait: WaitCallback | None = None) -> Submission:
    """Score a stored item again with the active model (e.g. after the model changed)."""
    item = store.item(sha256)
    data = store.image_bytes(sha256)
    if data is None:
        raise DetectorError(f"The image bytes of {item.get('name') or sha256[:12]} are not stored, so it cannot "
                            "be scored again.")
    return submit(detector, data, str(item.get("name") or "upload"), store, uploader, authenticated,
                  rescore=True, auto_queue=False, on_wait=on_wait)


def _add_upload(store: "ReviewStore", decoded: "DecodedImage", name: str, uploader: str | None,
                authenticated: bool) -> None:
    store.add_item(decoded.raw, name=name, uploader=uploader, sha256=decoded.sha256)


def _queue_state(store: "ReviewStore", sha256: str) -> str | None:
    return ((store.item(sha256) or {}).get("queue") or {}).get("state")

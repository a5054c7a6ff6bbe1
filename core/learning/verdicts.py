"""What a model would serve for stored items, from their stored features (no image is scored again).

Used where the served verdicts of a model must be known for many items that were scored by
another one: the queue's priorities after a new version becomes active, the "what the model
learned" line (clear share of today's uploads under the active model) and the loop benchmark.
Each row goes through :func:`core.learning.parts.served_value` (the one place features become a
served value) and :func:`core.scoring.policy.decide` (tiers, the OOD guard, the two parts'
agreement). The guardrails (faces, quality, metadata) measure the image, not the model: they are
not re-run here, so a tier here can only be *clearer* than one the guardrails would later move
to review.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from core.learning.features import get_clip, get_ladeda, ladeda_key


@dataclass
class StoredVerdict:
    sha256: str
    probability: float
    tier: str
    ood_tripped: bool


def encoder_key_for(checkpoint: Any) -> str | None:
    """The installed encoder's key when this model fuses CLIP, else None (served by LaDeDa alone)."""
    from core.scoring.analysis import learned_parts

    if not learned_parts(checkpoint).fuses:
        return None
    from core.encoders.clip import load_encoder

    encoder = load_encoder()
    return encoder.key if encoder is not None else None


def stored_verdicts(artifacts: Any, checkpoint: Any, shas: list[str], *,
                    encoder_key: str | None | object = "installed") -> dict[str, StoredVerdict]:
    """``{sha256: verdict}`` of ``checkpoint`` for every item with stored LaDeDa features (others are left out).

    ``encoder_key``: the CLIP features to read (default: the installed encoder's, when the model
    fuses); an item without them is served by LaDeDa alone, as scoring would without the encoder."""
    from core.calibration.calibrators import apply_record
    from core.calibration.metrics import sigmoid
    from core.learning.parts import served_value
    from core.scoring.analysis import learned_parts
    from core.scoring.policy import decide_served

    ckey = encoder_key_for(checkpoint) if encoder_key == "installed" else encoder_key
    parts = learned_parts(checkpoint)
    lkey = ladeda_key(checkpoint)
    w = checkpoint.state_dict["fc.weight"].float().numpy().reshape(-1).astype(np.float64)
    b = float(checkpoint.state_dict["fc.bias"].float().numpy().reshape(-1)[0])
    out: dict[str, StoredVerdict] = {}
    for sha in shas:
        pooled = get_ladeda(artifacts, sha, lkey)
        if pooled is None:
            continue
        z = float(pooled.astype(np.float64) @ w + b)
        if checkpoint.calibration:
            p, calibrated = float(apply_record(checkpoint.calibration, np.asarray([z]))[0]), True
        else:
            p, calibrated = float(sigmoid(z)), False
        clip = get_clip(artifacts, sha, ckey) if ckey else None
        if clip is not None and parts.clip_needs_layers and clip.layers is None:
            clip = None
        served = served_value(checkpoint, parts, ladeda_logit=z, ladeda_probability=p, ladeda_calibrated=calibrated,
                              pooled=pooled, clip=clip, clip_note=None)
        decision = decide_served(served)
        out[sha] = StoredVerdict(sha, float(served.probability), decision.tier,
                                 bool((served.ood or {}).get("tripped")))
    return out


def clear_share(verdicts: dict[str, StoredVerdict]) -> float | None:
    """Share of the verdicts with a clear tier (``real`` or ``fake``); None without any."""
    if not verdicts:
        return None
    return float(np.mean([v.tier != "review" for v in verdicts.values()]))

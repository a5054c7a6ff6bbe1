"""Where adapt's base features come from: a given folder or file, else the bundled ones.

The bundled model ships the features of its base rows (the train and val images of the nine
sources its learned parts were fitted on: LaDeDa pooled features, CLIP embedding and the 12
blocks' CLS tokens, float16) beside it (``data/models/<model>.base_features.npz``), so adapt has
base data on a fresh machine without ``../shared``. They apply only to the backbone they were
computed with (checked by key); the CLIP features, to the encoder key (the encoder computes the
file's exact integer arithmetic on every CPU, see :mod:`core.encoders.clip`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from core.learning.features import FeatureError, FeatureSet, extract_folder, ladeda_key
from core.paths import MODELS_DIR

BUNDLED_BASE = MODELS_DIR / "ladeda9.base_features.npz"
#: Setting: a base features file to use instead of the bundled one (a team's own, or the file
#: ``python -m core.learning.bundle --hold-out S --out M.pt`` writes beside a model that never saw S).
BASE_ENV = "LADEDA_BASE_FEATURES"


def default_base_path() -> Path:
    """``$LADEDA_BASE_FEATURES`` when set, else the bundled base features."""
    env = os.environ.get(BASE_ENV, "").strip()
    return Path(env) if env else BUNDLED_BASE


def resolve_base(checkpoint: Any, base_data: str | None, *, encoder: Any | None, cache: Any) -> FeatureSet | None:
    """Base features for this checkpoint's backbone, or None when none match (adapt then pulls to current heads)."""
    from core.scoring.analysis import learned_parts

    if base_data:
        p = Path(base_data)
        if p.is_file():
            fs = FeatureSet.load(p)
        elif p.is_dir():
            from core.scoring.detector import Detector

            fs = extract_folder(p, Detector(checkpoint), encoder, cache)
        else:
            raise FeatureError(f"--base-data {p} is neither a folder nor a features file.")
        if fs.ladeda_key != ladeda_key(checkpoint):
            raise FeatureError(f"{p} holds features of another backbone; they do not describe this model.")
        if encoder is not None and fs.clip_embedding is not None and fs.clip_layers is None \
                and learned_parts(checkpoint).clip_needs_layers:
            raise FeatureError(f"{p} has CLIP features without the per-block CLS tokens this model's CLIP head "
                               "reads (a file written by an older version); give the image folder instead, "
                               "so they are extracted again.")
        return fs
    default = default_base_path()
    if default.is_file():
        fs = FeatureSet.load(default)
        if fs.ladeda_key == ladeda_key(checkpoint):
            return fs
    elif default != BUNDLED_BASE:
        raise FeatureError(f"{BASE_ENV}={default} does not exist.")
    return None

"""Adapt: the one door the ``adapt`` command and the Model page call to refit the heads and the fusion
on reviewer labels (stored features, no new forward pass).

It finds the encoder and the base features the same way for both fronts, so
the same store and model always get the same fit, the same refusals (too few
labels, a fit worse out of fold) and the same report.
"""
from __future__ import annotations

import os
from typing import Any


def adapt_from_store(store: Any, checkpoint: Any, *, base_data: str | os.PathLike | None = None,
                     use_base: bool = True, min_per_class: int = 20, force: bool = False,
                     by: str | None = None) -> Any:
    """Refit on ``store``'s reviewer labels; returns an :class:`core.learning.adapt.AdaptResult`.

    ``base_data`` names base training data (a labelled folder or a features ``.npz``); by default the
    bundled model's shipped base features are used when they match, and none with ``use_base=False``.
    Raises :class:`core.learning.adapt.AdaptError` with a readable reason when it refuses.
    """
    from core.encoders.clip import load_encoder
    from core.learning.adapt import adapt
    from core.learning.basedata import resolve_base

    encoder = load_encoder()
    base = resolve_base(checkpoint, base_data, encoder=encoder, cache=store.artifacts) if use_base else None
    return adapt(store, checkpoint, base=base, min_per_class=min_per_class, force=force, by=by,
                 encoder_key=encoder.key if encoder is not None else None)

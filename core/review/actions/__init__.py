"""The one door per action: the CLI, the dashboard and batch jobs call these functions, so the
same input always gets the same checks and the same answer.

- :mod:`core.review.actions.submit`: an upload is decoded and hashed once, analysed, recorded, and its
  evidence stored for the explain panels.
- :mod:`core.review.actions.decide`: label / skip / release / undo on a queued item.
- :mod:`core.review.actions.calibrate`: fit a calibration from reviewed items or a logit CSV, with the checks
  that protect production.
- :mod:`core.review.actions.export`: write the recalibration and hard-negative exports.
"""

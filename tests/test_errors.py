"""User mistakes reach people as typed errors (a message), never as a traceback."""
from __future__ import annotations

import numpy as np
import pytest

from core.__main__ import main
from core.errors import DetectorError, InvalidArgumentError, ModelFileError


def test_library_value_errors_are_detector_errors():
    from core.calibration import metrics
    from core.model.representations import InputRepresentation
    from core.scoring import explain

    for call in (lambda: metrics.auc([0.1, 0.2], [0, 2]), lambda: explain.diverging_colours(np.zeros(2), limit=0),
                 lambda: InputRepresentation("no-such-representation")):
        with pytest.raises(InvalidArgumentError) as info:
            call()
        assert isinstance(info.value, DetectorError) and isinstance(info.value, ValueError)


def test_a_file_that_is_not_a_patch_teacher_is_a_message_on_the_command_line(tmp_path, capsys):
    import torch

    from core.training.patch_teacher import PatchTeacher

    bogus = tmp_path / "teacher.pt"
    torch.save({"something": "else"}, bogus)
    with pytest.raises(ModelFileError, match="not a patch-teacher file"):
        PatchTeacher.load(bogus)
    data = tmp_path / "data"
    for split in ("train", "val"):
        for label in ("0_real", "1_fake"):
            (data / split / label).mkdir(parents=True)
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "m.pt"), "--patch-teacher", str(bogus),
               "--steps", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and "Traceback" not in err

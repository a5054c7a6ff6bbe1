"""``python -m core guardrails``: one JSON line per file, errors as lines, not tracebacks."""
from __future__ import annotations

import json

from PIL.PngImagePlugin import PngInfo

from core.__main__ import main

from .conftest import encode, make_photo


def test_guardrails_cli_prints_findings_and_errors(tmp_path, capsys):
    info = PngInfo()
    info.add_text("parameters", "a dog, Steps: 20, Sampler: Euler")
    good = tmp_path / "gen.png"
    good.write_bytes(encode(make_photo(64, 64), "PNG", pnginfo=info))
    assert main(["guardrails", str(good), str(tmp_path / "missing.jpg")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0]["file"] == str(good) and lines[0]["jpeg_quality"] is None
    assert lines[0]["quality"]["model_input"] is None and lines[0]["faces"] == []  # no model: nothing upscaled
    assert any("parameters" in h for h in lines[0]["metadata"]["generator_hints"])
    assert "not found" in lines[1]["error"]
    assert main(["guardrails", str(tmp_path / "missing.jpg")]) == 1


def _native_tiny(path):
    """A random Tiny whose spec keeps native resolution (as the bundled models do)."""
    import dataclasses

    import torch

    from core.model.checkpoint import Checkpoint
    from core.model.models import arch_record, build_model
    from core.model.preprocess import official_spec

    torch.manual_seed(0)
    spec = dataclasses.replace(official_spec("right_diag"), resize_mode="none", max_side=768)
    Checkpoint(arch=arch_record("tiny"), spec=spec, state_dict=build_model("tiny", "right_diag").state_dict(),
               provenance={"source": "test"}).save(path)
    return path


def test_guardrails_cli_and_score_agree_on_the_model_input_of_a_native_resolution_model(tmp_path, capsys):
    from core.scoring.analysis import analyse
    from core.scoring.detector import Detector

    model = _native_tiny(tmp_path / "native.pt")
    img = tmp_path / "small.png"
    img.write_bytes(encode(make_photo(200, 150), "PNG"))
    assert main(["guardrails", "--model", str(model), str(img)]) == 0
    cli = json.loads(capsys.readouterr().out)
    analysis = analyse(Detector.load(model), str(img))
    direct = analysis.guardrails.to_json()
    assert cli["quality"]["model_input"] == [150, 200] == list(analysis.score.image["model_input"])
    assert not cli["quality"]["heavily_upscaled"]
    assert cli["quality"] == direct["quality"] and cli["metadata"] == direct["metadata"]

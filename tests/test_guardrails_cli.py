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
    assert lines[0]["quality"]["heavily_upscaled"] and lines[0]["faces"] == []
    assert any("parameters" in h for h in lines[0]["metadata"]["generator_hints"])
    assert "not found" in lines[1]["error"]
    assert main(["guardrails", str(tmp_path / "missing.jpg")]) == 1

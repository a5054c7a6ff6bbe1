"""benchmarks/loop.py runs end to end on a small new source (the tiny model) and prints its JSON contract."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.paths import DEFAULT_TINY_MODEL

REPO = Path(__file__).resolve().parent.parent


def _folder(root: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for cls, shift in (("0_real", 0), ("1_fake", 60)):
        d = root / "newsrc" / cls
        d.mkdir(parents=True)
        for i in range(n):
            arr = np.clip(rng.normal(100 + shift, 10 + 4 * (i % 5), size=(96, 96, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(d / f"{cls}-{i}.png")
    return root


@pytest.mark.slow
def test_loop_benchmark_json_has_its_fields(tmp_path):
    data = _folder(tmp_path / "data")
    keep = tmp_path / "kept"
    cmd = [sys.executable, "benchmarks/loop.py", "--data", str(data), "--budget", "0,6,12", "--order", "queue",
           "--batch", "6", "--repeats", "2", "--store", str(keep), "--model", str(DEFAULT_TINY_MODEL), "--json"]
    env = {**os.environ, "LADEDA_DATA_DIR": str(tmp_path / "runtime")}
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["n_images"] == 24 and got["order"] == "queue"
    assert [r["k"] for r in got["results"]] == [0, 6, 12]
    for r in got["results"]:
        assert set(r) == {"k", "auc", "ap", "clear_share", "clear_accuracy", "reals_clearly_fake", "adapt_s"}
        assert 0.0 <= r["auc"] <= 1.0 and 0.0 <= r["clear_share"] <= 1.0
    assert got["results"][0]["adapt_s"] == 0.0 and got["results"][-1]["adapt_s"] > 0.0  # learning ran (waited for)
    assert (keep / "r.sqlite").is_file()  # the scored store is kept for the next run
    again = subprocess.run([*cmd[:-1], "--order", "random", "--json"], cwd=REPO, capture_output=True, text=True,
                           timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["order"] == "random"

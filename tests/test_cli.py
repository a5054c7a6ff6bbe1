"""The command line as a new user meets it: bad files answered before the model loads, exit codes,
--db paths that do not exist, options before or after the action, interface-neutral messages."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.__main__ import main
from core.cli.score import exit_code

from .conftest import REPO, encode, make_photo, save_random_tiny


@pytest.fixture()
def files(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(encode(make_photo(64, 64)))
    text = tmp_path / "notimage.jpg"
    text.write_text("this is a text file, not a picture")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    return good, text, empty


@pytest.fixture()
def tiny(tmp_path):
    return save_random_tiny(tmp_path / "tiny.pt")


def _lines(out: str) -> list[dict]:
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def test_exit_codes():
    assert exit_code(3, 0) == 0 and exit_code(3, 1) == 1 and exit_code(3, 3) == 2


def test_bad_files_are_refused_before_the_model_loads(tmp_path, files, capsys):
    _, text, empty = files
    # the model path does not exist: had it been loaded, the answer would be a checkpoint error
    rc = main(["score", "--model", str(tmp_path / "no-such-model.pt"), str(text), str(empty),
               str(tmp_path / "missing.png")])
    captured = capsys.readouterr()
    assert rc == 2
    errors = {l["file"]: l["error"] for l in _lines(captured.out)}
    assert "Not a recognised image format" in errors[str(text)]
    assert errors[str(empty)] == "The file is empty."
    assert "not found" in errors[str(tmp_path / "missing.png")]
    assert "checkpoint" not in captured.err.lower() and "model" not in captured.err.lower()


def test_score_exit_code_when_some_files_fail(files, tiny, capsys):
    good, text, _ = files
    assert main(["score", "--model", str(tiny), "--no-guardrails", str(good), str(text)]) == 1
    lines = _lines(capsys.readouterr().out)
    assert [l["file"] for l in lines] == [str(text), str(good)]  # the refused file is answered first
    assert "error" in lines[0] and lines[1]["tier"] and "error" not in lines[1]
    assert main(["score", "--model", str(tiny), "--no-guardrails", str(good)]) == 0


def test_score_usage_error_exits_2_through_the_real_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "core", "score", "--no-such-flag", "x.png"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "usage" in proc.stderr.lower()


def test_messages_name_no_upload_interface(files, tiny, capsys):
    _, text, _ = files
    main(["score", "--model", str(tiny), str(text)])
    err = _lines(capsys.readouterr().out)[0]["error"]
    assert "upload" not in err.lower() and "JPEG" in err


@pytest.mark.parametrize("argv", [
    ["queue", "stats", "--db", "{db}"],
    ["queue", "--db", "{db}", "stats"],
    ["export", "--db", "{db}", "--history"],
    ["score", "--db", "{db}", "{img}"],
])
def test_db_in_a_missing_folder_is_refused_and_nothing_is_created(tmp_path, files, argv, capsys):
    db = tmp_path / "typo" / "dir" / "q.sqlite"
    args = [a.format(db=db, img=files[0]) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "No review database" in err and "--create" in err and "Traceback" not in err
    assert not (tmp_path / "typo").exists()


def test_create_makes_the_database_and_db_works_before_or_after_the_action(tmp_path, capsys):
    db = tmp_path / "new" / "q.sqlite"
    assert main(["queue", "stats", "--db", str(db), "--create"]) == 0
    assert db.exists()
    before = capsys.readouterr().out
    assert main(["queue", "--db", str(db), "stats"]) == 0
    after = capsys.readouterr().out
    assert json.loads(before) == json.loads(after)
    assert main(["queue", "--db", str(db), "list", "--limit", "5"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_score_db_records_into_an_existing_database(tmp_path, files, tiny, capsys):
    db = tmp_path / "review.sqlite"
    good = files[0]
    assert main(["score", "--model", str(tiny), "--no-guardrails", "--db", str(db), "--create", str(good)]) == 0
    line = _lines(capsys.readouterr().out)[0]
    assert line["scoring_id"] >= 1 and line["queued"] == "queued"  # random Tiny lands in the review band
    assert main(["queue", "stats", "--db", str(db)]) == 0
    assert json.loads(capsys.readouterr().out).get("queued") == 1

"""Output folders: a command replaces only the files it wrote itself; nothing else is ever deleted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radlens.common.atomic import MARKER, read_marker, staged_output
from radlens.errors import InputError


def _write(out: Path, files: dict[str, str], **kwargs) -> None:
    with staged_output(out, **kwargs) as tmp:
        for rel, text in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_folder_gets_the_files_and_a_marker_listing_them(tmp_path):
    out = tmp_path / "out"
    _write(out, {"metrics.json": "1", "text/vocab.txt": "v"}, command="evaluate zeroshot")
    assert _tree(out).keys() == {"metrics.json", "text/vocab.txt", MARKER}
    marker = json.loads((out / MARKER).read_text())
    assert marker["files"] == ["metrics.json", "text/vocab.txt"] and marker["command"] == "evaluate zeroshot"
    assert marker["created"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left behind


def test_an_empty_existing_folder_is_used(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _write(out, {"a.txt": "a"})
    assert read_marker(out) == ["a.txt"]


def test_a_folder_radlens_did_not_write_is_refused_without_overwrite(tmp_path):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="did not write.*--overwrite") as err:
        _write(out, {"metrics.json": "1"})
    assert str(out) in str(err.value)
    assert _tree(out) == {"notes.txt": "mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


def test_overwrite_writes_radlens_files_and_deletes_nothing(tmp_path):
    out = tmp_path / "keep"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "sub" / "data.csv").write_text("mine too")
    (out / "metrics.json").write_text("an old result")
    _write(out, {"metrics.json": "new", "sub/run.json": "run"}, overwrite=True)
    assert _tree(out) == {"notes.txt": "mine", "sub/data.csv": "mine too", "metrics.json": "new",
                          "sub/run.json": "run", MARKER: (out / MARKER).read_text()}
    assert read_marker(out) == ["metrics.json", "sub/run.json"]  # never the user's files
    _write(out, {"run.json": "run"})  # now radlens' folder: no --overwrite needed; its own stale files go
    assert _tree(out).keys() == {"notes.txt", "sub/data.csv", "run.json", MARKER}


def test_a_rerun_replaces_its_files_keeps_user_files_and_drops_its_stale_ones(tmp_path):
    out = tmp_path / "out"
    _write(out, {"metrics.json": "1", "roc.png": "r", "text/vocab.txt": "v", "text/merges.txt": "m"})
    (out / "notes.txt").write_text("mine")
    (out / "text" / "mine.txt").write_text("mine")
    (out / "figures").mkdir()
    _write(out, {"metrics.json": "2", "text/vocab.txt": "v2"})
    assert _tree(out) == {"metrics.json": "2", "text/vocab.txt": "v2", "notes.txt": "mine", "text/mine.txt": "mine",
                          MARKER: (out / MARKER).read_text()}
    assert (out / "figures").is_dir()  # even an empty folder of the user's stays
    assert read_marker(out) == ["metrics.json", "text/vocab.txt"]


def test_a_rerun_over_radlens_own_folder_replaces_it_as_a_whole(tmp_path):
    out = tmp_path / "out"
    _write(out, {"metrics.json": "1", "old/stale.txt": "s"})
    _write(out, {"metrics.json": "2"})
    assert _tree(out).keys() == {"metrics.json", MARKER}
    assert not (out / "old").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("user_file", [False, True])
def test_a_failure_mid_write_leaves_the_previous_output_intact(tmp_path, user_file):
    out = tmp_path / "out"
    _write(out, {"a.txt": "first", "b.txt": "first"})
    if user_file:
        (out / "notes.txt").write_text("mine")
    before = _tree(out)
    with pytest.raises(RuntimeError), staged_output(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_stale_entry_outside_the_folder_is_never_deleted(tmp_path):
    out = tmp_path / "out"
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    _write(out, {"a.txt": "a"})
    (out / "notes.txt").write_text("mine")  # forces the file-by-file path
    marker = json.loads((out / MARKER).read_text())
    marker["files"] += ["../precious.txt", str(outside), "notes.txt/.."]
    (out / MARKER).write_text(json.dumps(marker))
    _write(out, {"b.txt": "b"})
    assert outside.read_text() == "keep" and (out / "notes.txt").read_text() == "mine"
    assert not (out / "a.txt").exists()


def test_an_output_that_is_a_file_or_would_clash_with_a_user_folder_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        _write(target, {"a.txt": "a"})
    out = tmp_path / "out"
    (out / "metrics.json").mkdir(parents=True)  # a user's folder where radlens writes a file
    with pytest.raises(InputError, match="is a folder"):
        _write(out, {"metrics.json": "1", "run.json": "r"}, overwrite=True)
    assert not (out / "run.json").exists() and read_marker(out) is None


def test_written_files_get_the_umask_mode_not_mkstemp_0600(tmp_path):
    import os
    import stat

    from radlens.common.atomic import write_bytes_atomic, write_json_atomic

    old = os.umask(0o022)
    try:
        report = write_bytes_atomic(tmp_path / "report.html", b"<html></html>")
        write_json_atomic(tmp_path / "out" / "metrics.json", {"auc": 0.5})
        _write(tmp_path / "staged", {"table.csv": "a\n"})
        os.umask(0o077)
        private = write_bytes_atomic(tmp_path / "private.txt", b"x")
    finally:
        os.umask(old)
    for path in (report, tmp_path / "out" / "metrics.json", tmp_path / "staged" / MARKER):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE(private.stat().st_mode) == 0o600  # the user's umask decides, in both directions
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "out").glob(".*.tmp"))

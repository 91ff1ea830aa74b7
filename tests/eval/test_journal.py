import json

import pytest

from ivra.eval.journal import Journal, strip_volatile


def test_append_read_done_keys(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    assert j.records() == [] and j.done_keys() == set()
    with j.open() as w:
        w.append({"key": "a", "attempt": 1, "final": False, "status": "error"})
        w.append({"key": "a", "attempt": 2, "final": True, "status": "ok"})
        w.append({"key": "b", "attempt": 1, "final": True, "status": "ok", "meta": {"t": 1}})
    assert j.done_keys() == {"a", "b"}
    assert j.attempts() == {"a": 2, "b": 1}
    assert j.final_records()["a"]["attempt"] == 2
    assert strip_volatile(j.final_records()["b"]) == {"key": "b", "attempt": 1, "final": True, "status": "ok"}
    with pytest.raises(ValueError):
        j.append({"no": "key"})


def test_truncated_last_line_is_tolerated_and_repaired(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps({"key": "a", "final": True, "status": "ok"}) + "\n" + '{"key": "b", "fin')
    j = Journal(path)
    with pytest.warns(UserWarning, match="truncated"):
        assert j.done_keys() == {"a"}
    with pytest.warns(UserWarning, match="truncated"):
        j.append({"key": "c", "final": True, "status": "ok"})
    assert path.read_text().count("\n") == 2  # torn tail cut, new line starts cleanly
    assert Journal(path).done_keys() == {"a", "c"}


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"key": "a", "final": true}\nnot json\n{"key": "b", "final": true}\n')
    with pytest.raises(ValueError, match="corrupt"):
        Journal(path).records()


def test_corrupt_line_names_file_line_and_recovery(tmp_path):
    from ivra.eval.journal import JournalError

    path = tmp_path / "journal.jsonl"
    good = json.dumps({"key": "a", "final": True, "status": "ok"})
    path.write_text(good + "\n{not json\n" + good.replace('"a"', '"b"') + "\n")
    with pytest.raises(JournalError) as info:
        Journal(path).records()
    msg = str(info.value)
    assert f"{path}, line 2" in msg and f"sed -i '2d' {path}" in msg and "\n" not in msg
    assert info.value.line == 2
    path.write_text(good + "\n[1, 2]\n" + good + "\n")  # JSON, but not a record
    with pytest.raises(JournalError, match="line 2: corrupt journal line .not a record"):
        Journal(path).final_records()

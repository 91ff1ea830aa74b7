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

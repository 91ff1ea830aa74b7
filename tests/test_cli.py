"""The ``ivra`` command line answers mistakes in one line with exit status 2, before any work starts, and keeps
real bugs' tracebacks. (Run in-process through ``ivra.cli.main``; the tabletop verbs' runs are in
tests/experiment, LIBERO's in tests/eval/test_libero.py.)"""

from __future__ import annotations

import pytest

from ivra.cli import main


def _usage_error(argv, capsys) -> str:
    """Run argv, expect exit status 2 and a single ``ivra ...: error: ...`` line on stderr; return it."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        code = exc.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (argv, code, captured.err)
    assert len(lines) == 1 and ": error: " in lines[0] and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.mark.parametrize(
    "argv, needle",
    [
        # counts > 0, lists not empty, ranges well formed
        (["demo", "--episodes", "0"], "--episodes: expected an integer > 0, got '0'"),
        (["demo", "--episodes", "-3"], "got '-3'"),
        (["demo", "--episodes", "many"], "got 'many'"),
        (["demo", "--chunk", "0"], "--chunk: expected an integer > 0"),
        (["demo", "--workers", "0"], "--workers: expected an integer > 0"),
        (["demo", "--splits", ""], "--splits: expected a comma-separated list of splits, got ''"),
        (["demo", "--splits", "val,,novel_task"], "empty item in 'val,,novel_task'"),
        (["demo", "--splits", "val,val"], "lists a value twice"),
        (["sweep", "--episodes", "0"], "--episodes: expected an integer > 0"),
        (["sweep", "--layers", ""], "--layers: expected a comma-separated list of integers"),
        (["sweep", "--layers", "0,x"], "bad item 'x' in '0,x'"),
        (["sweep", "--lams", "0.1,1.5"], "bad item '1.5' in '0.1,1.5': expected a number in [0, 1]"),
        (["sweep", "--lams", "nan"], "expected a number in [0, 1], got 'nan'"),
        (["viz", "--seed", "-1"], "--seed: expected an integer >= 0, got '-1'"),
        (["viz", "--queries", "3,a"], "bad item 'a' in '3,a'"),
        (["train", "vision", "--steps", "0"], "--steps: expected an integer > 0"),
        (["train", "policy", "--batch", "-2"], "--batch: expected an integer > 0"),
        (["train", "policy", "--fraction", "0"], "--fraction: expected a number in (0, 1], got '0'"),
        (["train", "policy", "--lr", "-1e-3"], "--lr: expected a number > 0"),
        (["bench", "--pairs", "0"], "--pairs: expected an integer > 0"),
        (["bench", "--lam", "2"], "--lam: expected a number in [0, 1]"),
        (
            ["eval", "libero", "--suite", "libero_spatial", "--workers", "0"],
            "--workers: expected an integer > 0",
        ),
        (
            ["eval", "libero", "--suite", "libero_spatial", "--max-steps", "0"],
            "--max-steps: expected an integer > 0",
        ),
        (
            ["eval", "libero", "--suite", "libero_spatial", "--retries", "-1"],
            "--retries: expected an integer >= 0",
        ),
        (
            ["eval", "libero", "--suite", "libero_spatial", "--videos", "-1"],
            "--videos: expected an integer >= 0",
        ),
        # names: splits, IVRA settings, affinity choices, suites, policies
        (["demo", "--splits", "test"], "unknown split 'test'; expected one of: train, val,"),
        (["sweep", "--split", "nope"], "unknown split 'nope'"),
        (["sweep", "--modes", "cosine,l2"], "unknown affinity mode 'l2'"),
        (["sweep", "--features", "keys"], "unknown affinity feature 'keys'"),
        (["sweep", "--affinity-layers", "-1,top"], "bad item 'top'"),
        (["demo", "--ivra", "strict=ture"], "strict must be true/false/1/0/yes/no, got 'ture'"),
        (["demo", "--ivra", "layer=two"], "layer must be an integer, got 'two'"),
        (["demo", "--ivra", "lam=1.5"], "lam must be in [0, 1], got 1.5"),
        (["demo", "--ivra", "colour=red"], "unknown IVRA setting 'colour'"),
        (["viz", "--ivra", "layer"], "bad IVRA setting 'layer': expected key=value"),
        (["eval", "libero", "--suite", "libero_spatial", "--ivra", "strict=maybe"], "got 'maybe'"),
        (["eval", "libero", "--suite", "libero_100"], "invalid choice: 'libero_100'"),
        (["eval", "libero", "--suite", "libero_spatial", "--policy-kwargs", "cuda"], "bad setting 'cuda'"),
        (["bench", "--preset", "huge"], "invalid choice: 'huge'"),
        (["nosuch"], "invalid choice: 'nosuch'"),
    ],
)
def test_usage_mistakes_end_in_one_line_and_exit_2(argv, needle, capsys):
    assert needle in _usage_error(argv, capsys)


def test_output_paths_are_checked_before_anything_runs(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert "is a file" in _usage_error(["demo", "--out", str(a_file)], capsys)
    assert "is a file" in _usage_error(["sweep", "--out", str(a_file / "below")], capsys)
    assert "ending in .png" in _usage_error(["viz", "--out", str(tmp_path / "fig.txt")], capsys)
    assert "is a folder" in _usage_error(["viz", "--out", str(tmp_path)], capsys)
    assert "is a file" in _usage_error(["train", "vision", "--out", str(a_file)], capsys)
    assert "ending in .json" in _usage_error(["bench", "--record", str(tmp_path / "r.txt")], capsys)
    line = _usage_error(["eval", "libero", "--suite", "libero_goal", "--out", str(a_file)], capsys)
    assert "is a file" in line
    assert list(tmp_path.iterdir()) == [a_file]  # nothing was created


def test_checks_that_need_more_than_the_parser(tmp_path, capsys):
    line = _usage_error(["train", "policy", "--vision", str(tmp_path / "none.safetensors")], capsys)
    assert "none.safetensors: no such file (train it first: ivra train vision)" in line
    assert "preset tiny has 4 LM layers, expected -4..3" in _usage_error(
        ["bench", "--preset", "tiny", "--layer", "4"], capsys
    )
    lib = ["eval", "libero", "--suite", "libero_spatial"]
    assert "--tasks '12': 12 is out of range; expected task ids in 0..9" in _usage_error(
        [*lib, "--tasks", "12"], capsys
    )
    assert "--tasks '3-1': expected task ids like 0,2,5-9" in _usage_error([*lib, "--tasks", "3-1"], capsys)
    assert "--init-states '0,50'" in _usage_error([*lib, "--init-states", "0,50"], capsys)
    assert "unknown --policy 'nosuch'" in _usage_error([*lib, "--policy", "nosuch"], capsys)
    assert "cannot import 'no_such_module'" in _usage_error([*lib, "--policy", "no_such_module:X"], capsys)
    assert "module 'ivra' has no class 'Nope'" in _usage_error([*lib, "--policy", "ivra:Nope"], capsys)
    assert "--ab needs --ivra" in _usage_error([*lib, "--ab"], capsys)
    # the built-in tiny-vla attaches every arm's setting before any episode: a layer it does not have
    line = _usage_error([*lib, "--policy", "tiny-vla", "--ab", "--ivra", "layer=99,lam=0.3"], capsys)
    assert "layer=99, lam=0.3 (arm ivra): layer 99 is out of range: the model has 4, valid are -4..3" in line


def test_expected_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    import ivra.bench
    from ivra.adapters import IVRAError

    def fail_expected(args):
        raise IVRAError("IVRA could not act: no visual tokens\nsecond line")

    monkeypatch.setattr(ivra.bench, "_main", fail_expected)
    assert main(["bench"]) == 1
    err = capsys.readouterr().err
    assert err == "ivra bench: error: IVRA could not act: no visual tokens second line\n"
    # --debug shows the traceback of expected errors too, and keeps their exit status
    assert main(["--debug", "bench"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and 'raise IVRAError("IVRA could not act' in err
    assert err.endswith("ivra bench: error: IVRA could not act: no visual tokens second line\n")
    assert (
        main(["--debug", "demo", "--ivra", "layer=99,lam=0.3", "--policy", "nosuch"]) == 2
    )  # usage: still 2
    assert "Traceback" in capsys.readouterr().err

    def bug(args):
        return {}["missing"]

    monkeypatch.setattr(ivra.bench, "_main", bug)
    with pytest.raises(KeyError):  # a real bug is not dressed up as a user mistake
        main(["bench"])


def test_missing_file_is_one_line(monkeypatch, capsys):
    import ivra.bench

    def missing(args):
        open("/nonexistent/ivra/file.json")

    monkeypatch.setattr(ivra.bench, "_main", missing)
    assert main(["bench"]) == 2
    assert (
        capsys.readouterr().err
        == "ivra bench: error: No such file or directory: /nonexistent/ivra/file.json\n"
    )


def test_bench_tiny_says_it_cannot_measure_the_overhead(capsys):
    """`ivra bench --preset tiny` printed +392 % overhead on a loaded CPU with no word that this size cannot measure
    it."""
    from ivra.bench import format_result, run

    assert main(["bench", "--preset", "tiny", "--pairs", "2", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "note: the tiny preset is a smoke test" in out and "cannot measure the overhead" in out
    r = run("tiny", 2, 0, "float32", "cpu", None, 0.3)
    assert "note:" not in format_result({**r, "preset": "realistic"})

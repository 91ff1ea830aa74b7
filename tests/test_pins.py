"""The core environment (.venv) and the openpi-client one (.venv-openpi), built with uv by scripts/setup*.sh, hold
the versions their requirements files pin; the pin reader itself (tests/pins.py)."""

import subprocess
from pathlib import Path

import pytest

from pins import matches, mismatches, pin_test, read_pins

ROOT = Path(__file__).resolve().parents[1]

test_installed_versions_are_the_pinned_ones = pin_test("dev.txt")


def test_the_pin_reader_follows_includes_and_reads_constraints_apart():
    required, constrained = read_pins("dev.txt")  # dev.txt: -r core.txt
    assert required["torch"] == ("==", "2.13.0") and required["pytest"][0] == "=="
    assert required["ray"] == ("==", "2.60.0")  # ray[serve]: extras dropped
    req, con = read_pins("flower.txt")  # -c flower-constraints.txt: constraints, not requirements
    assert "torch" in req and "nvidia-cublas" in con and "nvidia-cublas" not in req
    assert con["torch"] == ("===", "2.13.0")


def test_local_build_labels_meet_double_equals_only():
    assert matches("==", "2.13.0", "2.13.0+cpu") and matches("==", "2.13.0", "2.13.0")
    assert not matches("===", "2.13.0", "2.13.0+cpu") and not matches("==", "2.13.0", "2.13.1")


def test_a_wrong_version_is_reported(tmp_path, monkeypatch):
    import pins

    (tmp_path / "x.txt").write_text("torch==1.0.0\nnot-installed-pkg==1.0\n")
    monkeypatch.setattr(pins, "REQUIREMENTS", tmp_path)
    bad = mismatches("x.txt")
    assert any("torch==1.0.0, installed 2.13.0" in b for b in bad) and any(
        "not-installed-pkg" in b for b in bad
    )


@pytest.mark.skipif(
    not (ROOT / ".venv-openpi/bin/python").exists(), reason="no .venv-openpi (IVRA_SKIP_OPENPI)"
)
def test_the_openpi_client_environment_has_its_pins():
    proc = subprocess.run(
        [str(ROOT / ".venv-openpi/bin/python"), str(ROOT / "tests/pins.py"), "openpi-client.txt"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_message_suggests_an_unpinned_install():
    """Advice the code prints (doctor, executor, serve, set-up scripts) installs through the pinned requirement files
    or set-up scripts, never `pip install PACKAGE` of whatever version is newest (`ray[default]`, `.[dev]`)."""
    import re

    unpinned = re.compile(r"pip install (?:-q )?(?!-r\b|-e\b|--|-q\b)['\"]?([A-Za-z.][\w.\-\[\],]*)")
    found = []
    for path in [*ROOT.joinpath("src", "ivra").rglob("*.py"), *ROOT.joinpath("scripts").glob("*.sh")]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for m in unpinned.finditer(line):
                if "==" not in line[m.end() : m.end() + 3]:
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)

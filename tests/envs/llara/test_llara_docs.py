"""The README's and docs/'s blocks marked `{"env": "llara"}`, run in the llara environment (tests/docs_examples.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the shared doc-test runner

from docs_examples import blocks, remove_workspaces, run  # noqa: E402

ENV = "llara"
BLOCKS = [b for b in blocks() if b.env == ENV]


@pytest.fixture(scope="module", autouse=True)
def _workspaces():
    yield
    remove_workspaces()


def test_this_environment_has_doc_blocks():
    assert BLOCKS, f"no block of README.md or docs/ is marked for the {ENV} environment"


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_doc_block(block):
    run(block)

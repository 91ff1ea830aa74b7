"""The README's and docs/'s blocks marked `{"env": "flower"}`, run in the flower environment (tests/docs_examples.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the shared doc-test runner

from docs_examples import env_tests  # noqa: E402

_workspaces, test_this_environment_has_doc_blocks, test_doc_block = env_tests("flower")

"""The README and docs/ are executed: every fenced python and bash block runs here (core environment) or in the
environment its directive names (tests/envs/<name>/test_<name>_docs.py). See tests/docs_examples.py."""

from __future__ import annotations

import re

import pytest

from docs_examples import DOCS, ROOT, blocks, fenced_languages, remove_workspaces, run

BLOCKS = blocks()
ENV = "core"


@pytest.fixture(scope="module", autouse=True)
def _workspaces():
    yield
    remove_workspaces()


def test_every_fenced_block_is_run_by_some_environment():
    langs = fenced_languages()
    assert langs["README.md"] >= {"python", "bash"}
    others = {
        doc: sorted(ls - {"python", "bash", "text"})
        for doc, ls in langs.items()
        if ls - {"python", "bash", "text"}
    }
    assert not others, (
        f"fenced blocks in a language no test runs (use python, bash, or text for output): {others}"
    )
    assert len(BLOCKS) >= 8
    # a block is skipped outright only if it is the test command itself or a named test runs it (and checks more)
    unrun = []
    for b in BLOCKS:
        reason = b.directive.get("skip")
        if reason is None or "the test command itself" in reason:
            continue
        named = re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", reason)
        if not named or not all(
            (ROOT / path).is_file() and (not name or f"def {name}(" in (ROOT / path).read_text())
            for path, name in named
        ):
            unrun.append((b.id, reason))
    assert not unrun, f"blocks skipped without naming an existing test that runs them: {unrun}"
    assert sum("skip" in b.directive for b in BLOCKS) <= 5, "a sixth block skipped: run it, or raise this bound"


def unclosed_fence(text: str) -> int | None:
    """The line of a fenced block that is never closed (Markdown renders the rest of the page as code, and the
    block runner skips it), or None."""
    open_at = None
    for i, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*(`{3,}|~{3,})(.*)$", line)
        if not m:
            continue
        if open_at is None:
            open_at = (i, m.group(1))
        elif m.group(1).startswith(open_at[1]) and not m.group(2).strip():
            open_at = None
    return open_at[0] if open_at else None


def test_every_fence_is_closed():
    assert unclosed_fence("a\n```python\nx = 1\n```\n") is None
    assert unclosed_fence("a\n```python\nx = 1\n```\n\n```bash\nls\n") == 6
    unclosed = {str(doc.relative_to(ROOT)): unclosed_fence(doc.read_text()) for doc in DOCS}
    assert not {k: v for k, v in unclosed.items() if v}, f"fenced blocks never closed (doc: line): {unclosed}"


def test_relative_links_resolve():
    """Every relative link of the README and docs/ points to a file of the checkout (and a heading that exists)."""
    broken = []
    for doc in DOCS:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
            elif anchor and dest.suffix == ".md":
                slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(), flags=re.M)}
                if anchor not in slugs:
                    broken.append(f"{doc.relative_to(ROOT)}: {target} (no heading #{anchor})")
    assert not broken, broken


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)  # a page runs on one xdist worker (conftest.py)
def test_doc_block(block):
    if block.env != ENV:
        pytest.skip(f"runs in the {block.env} environment (nox -s {block.env})")
    run(block)


def test_the_blocks_left_the_environments_pointing_to_the_checkout():
    """Blocks run in a linked workspace; set-up scripts they call must install into (and point to) the checkout,
    never to the workspace (a console script whose first line names a removed /tmp folder breaks every command).
    ``docs_examples.run`` checks the files after every bash block; this also imports ivra from elsewhere."""
    import subprocess
    import sys

    from docs_examples import environments_pointing_elsewhere

    assert environments_pointing_elsewhere() == []
    where = subprocess.run(
        [sys.executable, "-c", "import ivra; print(ivra.__file__)"], capture_output=True, text=True, cwd="/"
    )
    assert where.returncode == 0 and "ivra-doc-" not in where.stdout, where.stdout + where.stderr

"""The README's and docs/'s code blocks, run as tests (Sybil parses the Markdown; this module runs the blocks).

Every fenced ``python`` and ``bash`` block of ``README.md`` and ``docs/*.md`` is an example. Python blocks run
in one namespace per document, in order, as a reader would paste them. Bash blocks run as written with
``bash -euo pipefail`` in a workspace of the document (a temporary folder whose entries link to the checkout's,
so ``.venv/bin/ivra`` and ``bash scripts/...`` work and outputs land in the workspace, not in the checkout).

A block may be preceded by a directive, an HTML comment that Markdown renders as nothing::

    <!-- test: {"env": "lerobot", "replace": [["--episodes 1000", "--episodes 4"]], "timeout": 300} -->

- ``env``: the environment the block runs in: ``core`` (default; `bash scripts/test.sh`'s core suite) or a nox
  session (``lerobot``, ``openvla``, ``llara``, ``flower``: tests/envs/<name>/test_*_docs.py). Elsewhere it is skipped,
  saying where it runs.
- ``replace``: ``[old, new]`` pairs applied to a bash block before it runs: the same command at a small size
  (fewer episodes, one worker, no GPU). Each ``old`` must occur, so a directive cannot silently stop applying.
  ``{ws}`` in ``new`` is the workspace.
- ``setenv``: environment variables for a bash block (``{ws}`` as above).
- ``skip``: the reason a block does not run as a doc test: it cannot (only `bash scripts/test.sh`, which is this test
  command), or a named test runs the same commands and checks more (so that a slow scenario runs once).
- ``timeout``: seconds (default 600).
- ``expect``: strings the output of a bash block (stdout and stderr) must contain.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENVS = ("core", "lerobot", "openvla", "llara", "flower")
DIRECTIVE = re.compile(r"<!--\s*test:\s*(\{.*\})\s*-->$", re.S)
KEYS = {"env", "replace", "setenv", "skip", "timeout", "expect"}


@dataclass
class Block:
    doc: Path
    line: int
    example: object  # sybil.Example
    language: str
    directive: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def env(self) -> str:
        return self.directive.get("env", "core")


def _directive(text: str, start: int, where: str) -> dict:
    """The ``<!-- test: {...} -->`` comment right before the block starting at ``start`` (blank lines only
    between), or {}."""
    before = text[:start].rstrip()
    m = DIRECTIVE.match(before[before.rfind("<!--") :]) if before.endswith("-->") else None
    if not m:
        return {}
    try:
        d = json.loads(m.group(1))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: directive is not JSON: {exc}") from None
    unknown = set(d) - KEYS
    if unknown:
        raise ValueError(f"{where}: unknown directive keys {sorted(unknown)}; expected {sorted(KEYS)}")
    if d.get("env", "core") not in ENVS:
        raise ValueError(f"{where}: env {d['env']!r}; expected one of {ENVS}")
    return d


def blocks() -> list[Block]:
    """Every python and bash block of the documents, with its directive, in document order."""
    from sybil import Sybil
    from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser

    sybil = Sybil(parsers=[CodeBlockParser(language="bash", evaluator=_run_bash), PythonCodeBlockParser()])
    out = []
    for path in DOCS:
        document = sybil.parse(path)
        for example in document:
            language = example.region.lexemes.get("arguments", "").split()[0]
            where = f"{path.relative_to(ROOT)}:{example.line}"
            out.append(
                Block(path, example.line, example, language, _directive(document.text, example.start, where))
            )
    return out


def fenced_languages() -> dict[str, set[str]]:
    """Languages of every fenced block per document (a block in a language nothing runs must not slip by)."""
    found: dict[str, set[str]] = {}
    for path in DOCS:
        langs = set(re.findall(r"^```(\w*)", path.read_text(), flags=re.M)) - {""}
        found[str(path.relative_to(ROOT))] = langs
    return found


_WORKSPACES: dict[Path, Path] = {}


def workspace(doc: Path) -> Path:
    """One folder per document: links to every top-level entry of the checkout except run outputs."""
    if doc not in _WORKSPACES:
        ws = Path(tempfile.mkdtemp(prefix=f"ivra-doc-{doc.stem}-"))
        names = {e.name for e in ROOT.iterdir()} | {".venv", ".venv-openpi", ".nox", ".libero"}  # made later too
        for name in sorted(names - {"runs", ".git", ".pytest_cache", ".ruff_cache"}):
            (ws / name).symlink_to(ROOT / name)
        _WORKSPACES[doc] = ws
    return _WORKSPACES[doc]


def remove_workspaces() -> None:
    for ws in _WORKSPACES.values():
        shutil.rmtree(ws, ignore_errors=True)  # links only are removed, never their targets
    _WORKSPACES.clear()


def environments_pointing_elsewhere() -> list[str]:
    """The console script and editable-install files of this environment that name a doc workspace (a set-up
    script run from a workspace must install into, and point to, the checkout): checked after every bash block,
    so that the check does not depend on which blocks ran before it (pages run on several pytest-xdist workers)."""
    import sys
    import sysconfig

    bad = []
    script = Path(sys.prefix) / "bin" / "ivra"
    if script.exists() and "ivra-doc-" in script.read_text().splitlines()[0]:
        bad.append(str(script))
    for pth in Path(sysconfig.get_paths()["purelib"]).glob("__editable__*ivra*.pth"):
        if "ivra-doc-" in pth.read_text():
            bad.append(str(pth))
    return bad


def bash_script(block: Block, ws: Path) -> str:
    text = block.example.parsed
    for old, new in block.directive.get("replace", []):
        if old not in text:
            raise AssertionError(
                f"{block.id}: directive replaces {old!r}, which the block no longer contains"
            )
        text = text.replace(old, new.replace("{ws}", str(ws)))
    return text


def ivra_command(doc: str, marker: str) -> list[str]:
    """The arguments of the one ``ivra`` command containing ``marker`` in a bash block of ``doc`` (e.g.
    ``"docs/libero.md"``), as that block's test runs it (its directive's replacements applied): for a test that runs
    a slow doc command itself and checks more, while the block says ``skip`` naming that test (it is not run twice,
    and the test follows the page's command as written)."""
    found = []
    for block in blocks():
        if block.language != "bash" or not block.id.startswith(f"{doc}:"):
            continue
        for line in bash_script(block, Path("{ws}")).replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0].endswith("/ivra") and marker in argv:
                found.append(argv[1:])
    if len(found) != 1:
        raise AssertionError(f"{doc}: {len(found)} ivra commands with {marker!r}, expected one")
    return found[0]


def with_option(args: list[str], option: str, value: str) -> list[str]:
    """``args`` with ``option``'s value replaced (or the option appended)."""
    out = list(args)
    if option in out:
        out[out.index(option) + 1] = value
    else:
        out += [option, value]
    return out


def _run_bash(example) -> None:  # Sybil's evaluator signature; our tests call run(block) instead
    raise AssertionError("bash blocks run through docs_examples.run(block)")


def run(block: Block) -> None:
    """Run one block (python in its document's namespace, bash in its document's workspace); a block whose
    directive says ``skip`` is skipped with its reason."""
    if "skip" in block.directive:
        import pytest

        pytest.skip(block.directive["skip"])
    if block.language == "python":
        block.example.evaluate()
        return
    ws = workspace(block.doc)
    script = bash_script(block, ws)
    env = dict(os.environ)
    env.pop("IVRA_ENV", None)  # a command runs as a user types it, not as a test session
    env.update({k: v.replace("{ws}", str(ws)) for k, v in block.directive.get("setenv", {}).items()})
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=block.directive.get("timeout", 600),
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{block.id}: exit {proc.returncode}\n--- script\n{script}\n--- stdout (tail)\n{proc.stdout[-3000:]}"
            f"\n--- stderr (tail)\n{proc.stderr[-3000:]}"
        )
    left = environments_pointing_elsewhere()
    if left:
        raise AssertionError(f"{block.id}: after this block, {left} point to a workspace, not the checkout")
    missing = [e for e in block.directive.get("expect", []) if e not in proc.stdout + proc.stderr]
    if missing:
        raise AssertionError(
            f"{block.id}: output lacks {missing}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )


def env_tests(env: str):
    """The tests of one pinned environment's doc blocks (tests/envs/<env>/test_<env>_docs.py):
    ``(workspaces fixture, has-blocks test, parametrized block test)``, assigned to module-level names there."""
    import pytest

    chosen = [b for b in blocks() if b.env == env]

    @pytest.fixture(scope="module", autouse=True)
    def workspaces():
        yield
        remove_workspaces()

    def test_this_environment_has_doc_blocks():
        assert chosen, f"no block of README.md or docs/ is marked for the {env} environment"

    @pytest.mark.parametrize("block", chosen, ids=lambda b: b.id)
    def test_doc_block(block):
        run(block)

    return workspaces, test_this_environment_has_doc_blocks, test_doc_block

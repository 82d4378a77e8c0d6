"""The documentation: every public name is documented, and every code example runs.

The code examples are the ```python blocks of README.md and of the site's Markdown pages
(docs/**/*.md), the ``.. code-block:: python`` blocks of its reStructuredText pages, and the
commands of their console/bash/sh blocks that start with ``mlp `` or ``python -m mlp``. The
blocks of one page run in order in one namespace, as a reader would run them in one session,
in a temporary directory (with ``docs/digits`` copied into it, so that the pages' relative paths
work), with MLP_DOCS_QUICK=1 set and ``mlp.datasets.load_mnist`` returning the first
TRAIN_ROWS, VALIDATION_ROWS and TEST_ROWS rows of each split, so that they take seconds.

A block that needs minutes shortens itself in the test with comments just above it, which no
reader sees (Markdown hides HTML comments; in reStructuredText use ``.. docs-test: ...``):

    <!-- docs-test: replace "epochs=60" "epochs=1" -->    the text to run instead (repeatable)
    <!-- docs-test: setup X, y = make_data() -->         code run before the block, unshown
    <!-- docs-test: skip -->                            shown, never run (code that is not mlp's)

Command lines run as ``python -m mlp ...`` against the full MNIST from the cache, so give
``mlp train`` a ``--epochs 1`` there.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import mlp_apicheck  # noqa: E402

TRAIN_ROWS, VALIDATION_ROWS, TEST_ROWS = 3000, 500, 1000

# ---------------------------------------------------------------------------
# Every public name is documented
# ---------------------------------------------------------------------------

def api_pages():
    return sorted((DOCS / "api").glob("*.rst"))


def test_every_public_name_has_a_docstring_and_an_api_entry():
    require_sklearn()
    documented = mlp_apicheck.names_in_rst(api_pages())
    assert mlp_apicheck.problems(documented) == []


def test_the_api_check_finds_an_undocumented_name(monkeypatch):
    require_sklearn()
    import types

    module = types.ModuleType("mlp._docs_probe")
    exec("def documented():\n    'Has one.'\n\ndef bare():\n    pass\n", module.__dict__)
    module.__all__ = ["documented", "bare"]
    monkeypatch.setitem(sys.modules, "mlp._docs_probe", module)
    monkeypatch.setattr(mlp_apicheck, "PUBLIC_MODULES", ("mlp._docs_probe",))
    found = mlp_apicheck.problems({"mlp._docs_probe.documented"})
    assert found == ["mlp._docs_probe.bare has no docstring",
                     "mlp._docs_probe.bare is not in the API reference (docs/api/)"]


def test_a_reexport_counts_as_documented_and_a_missing_page_entry_does_not():
    require_sklearn()
    documented = mlp_apicheck.names_in_rst(api_pages())
    assert "mlp.optimizers.SGD" in documented and "mlp.SGD" not in documented
    assert not [p for p in mlp_apicheck.problems(documented) if p.startswith("mlp.SGD ")]
    without = documented - {"mlp.plots.misclassified"}
    assert mlp_apicheck.problems(without) == [
        "mlp.plots.misclassified is not in the API reference (docs/api/)"]


def require_sklearn():
    from conftest import require

    require("sklearn")


# ---------------------------------------------------------------------------
# Code blocks
# ---------------------------------------------------------------------------

class Block:
    def __init__(self, path, line, kind, code, directives):
        self.path, self.line, self.kind, self.code = path, line, kind, code
        self.directives = list(directives)

    def __repr__(self):
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def prepared(self):
        """(setup code, the code to run) after the block's directives."""
        code, setup = self.code, []
        for directive in self.directives:
            if directive[0] == "replace":
                _, old, new = directive
                assert old in code, f"{self}: docs-test replace: {old!r} is not in the block"
                code = code.replace(old, new)
            elif directive[0] == "setup":
                setup.append(directive[1])
        return "\n".join(setup), code

    @property
    def skipped(self):
        return any(directive[0] == "skip" for directive in self.directives)


_COMMENT_MD = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->", re.S)
_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)\s*$")
CONSOLE_LANGUAGES = {"console", "bash", "sh", "shell", "shell-session"}


def parse_directive(text, where):
    text = text.strip()
    if text == "skip":
        return ("skip",)
    if text.startswith("setup"):
        return ("setup", text[len("setup"):].strip("\n").lstrip(" "))
    if text.startswith("replace"):
        parts = shlex.split(text[len("replace"):])
        assert len(parts) == 2, f"{where}: docs-test replace takes two quoted strings"
        return ("replace", parts[0], parts[1])
    raise AssertionError(f"{where}: unknown docs-test directive {text!r}")


def markdown_blocks(path):
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    blocks, pending, i = [], [], 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("<!--") and "docs-test:" in line:
            j = i
            chunk = line
            while "-->" not in chunk:
                j += 1
                chunk += "\n" + lines[j]
            for match in _COMMENT_MD.finditer(chunk):
                pending.append(parse_directive(match.group(1), f"{path}:{i + 1}"))
            i = j + 1
            continue
        fence = _FENCE.match(line)
        if fence:
            marker, language = fence.groups()
            body, j = [], i + 1
            while j < len(lines) and not lines[j].startswith(marker):
                body.append(lines[j])
                j += 1
            if language in ("python", "py", "python3") or language in CONSOLE_LANGUAGES:
                kind = "python" if language.startswith("py") else "console"
                blocks.append(Block(path, i + 1, kind, "\n".join(body) + "\n", pending))
            pending = []
            i = j + 1
            continue
        if line.strip():
            pending = []
        i += 1
    return blocks


_RST_DIRECTIVE = re.compile(r"^(\s*)\.\. (?:code-block|code|sourcecode)::\s*(\S+)\s*$")


def rst_blocks(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, pending, i = [], [], 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith(".. docs-test:"):
            pending.append(parse_directive(stripped[len(".. docs-test:"):], f"{path}:{i + 1}"))
            i += 1
            continue
        match = _RST_DIRECTIVE.match(line)
        if match:
            indent, language = len(match.group(1)), match.group(2)
            j = i + 1
            while j < len(lines) and lines[j].strip().startswith(":"):
                j += 1
            body = []
            while j < len(lines) and (not lines[j].strip() or
                                      len(lines[j]) - len(lines[j].lstrip()) > indent):
                body.append(lines[j])
                j += 1
            code = "\n".join(body)
            width = min((len(l) - len(l.lstrip()) for l in body if l.strip()), default=0)
            code = "\n".join(l[width:] for l in body).strip("\n") + "\n"
            if language in ("python", "py", "python3") or language in CONSOLE_LANGUAGES:
                kind = "python" if language.startswith("py") else "console"
                blocks.append(Block(path, i + 1, kind, code, pending))
            pending = []
            i = j
            continue
        if stripped:
            pending = []
        i += 1
    return blocks


def pages():
    found = [ROOT / "README.md"]
    for path in sorted(DOCS.rglob("*")):
        relative = path.relative_to(DOCS).parts
        if relative[0] in ("_build", "auto_examples", "_templates") or relative[:2] == ("api", "generated"):
            continue
        if path.suffix in (".md", ".rst"):
            found.append(path)
    return found


def blocks_of(path):
    return markdown_blocks(path) if path.suffix == ".md" else rst_blocks(path)


def mlp_commands(block):
    """The block's command lines that run mlp, as argument lists for ``python -m mlp``."""
    lines = block.code.splitlines()
    prompted = [l[2:] for l in lines if l.startswith("$ ")]
    commands = []
    for line in prompted if prompted else lines:
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # not a shell line (unbalanced quotes in some output)
            continue
        if words[:1] == ["mlp"]:
            commands.append(words[1:])
        elif words[:3] == ["python", "-m", "mlp"]:
            commands.append(words[3:])
    return commands


def small_load_mnist(real):
    from mlp.datasets import MNIST, Split

    def load_mnist(*args, **kwargs):
        full = real(*args, **kwargs)
        return MNIST(*(Split(split.images[:rows], split.labels[:rows]) for split, rows in
                       zip(full, (TRAIN_ROWS, VALIDATION_ROWS, TEST_ROWS))))

    return load_mnist


def run_python(block, namespace):
    setup, code = block.prepared()
    if setup:
        exec(compile(setup, f"{block} (docs-test setup)", "exec"), namespace)
    exec(compile(code, str(block), "exec"), namespace)


def run_console(block, cwd):
    # The mlp the tests import: in CI the installed wheel, not the source tree
    # (ROOT), whose compiled core is not built there.
    import mlp

    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(mlp.__file__)),
               MLP_DOCS_QUICK="1", MPLBACKEND="Agg")
    _, code = block.prepared()
    for args in mlp_commands(Block(block.path, block.line, block.kind, code, [])):
        result = subprocess.run([sys.executable, "-m", "mlp", *args], cwd=cwd, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (
            f"{block}: `mlp {shlex.join(args)}` exited {result.returncode}\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


PAGES = pages()

# What a page's code needs beyond mlp's core: the extra's module, and what shows it is used.
OPTIONAL_MODULES = {
    "sklearn": r"\bsklearn\b",
    "dask": r"\bdask\b",
    "dask_ml": r"\bdask_ml\b",
    "onnxruntime": r"\bonnxruntime\b|to_onnx",
    "onnx": r"to_onnx",
    "matplotlib": r"\bplots\b|preview_grid|mlp (report|augment-preview)",
    "PIL": r"mlp predict|prepare_digit",
}


def test_the_block_finder_reads_directives_and_both_markups(tmp_path):
    page = tmp_path / "page.md"
    page.write_text('Text\n\n<!-- docs-test: replace "a = 1" "a = 2" -->\n```python\na = 1\n```\n\n'
                    "<!-- docs-test: skip -->\n```python\nboom()\n```\n\n"
                    "```console\n$ mlp train --epochs 1\nsome output\n$ pip install x\n```\n")
    python, skipped, console = markdown_blocks(page)
    assert python.prepared() == ("", "a = 2\n") and skipped.skipped
    assert mlp_commands(console) == [["train", "--epochs", "1"]]
    rst = tmp_path / "page.rst"
    rst.write_text('Text\n\n.. docs-test: setup b = 3\n.. code-block:: python\n\n   a = b\n   print(a)\n\nAfter\n')
    (block,) = rst_blocks(rst)
    assert block.prepared() == ("b = 3", "a = b\nprint(a)\n")


def test_every_page_with_code_is_checked():
    names = {path.relative_to(ROOT).as_posix() for path in PAGES if blocks_of(path)}
    assert {"README.md", "docs/getting-started.md", "docs/guide/training.md",
            "docs/notebook.md", "docs/from-sklearn.md"} <= names


@pytest.mark.parametrize("path", [p for p in PAGES if blocks_of(p)],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_code_blocks_run(path, tmp_path, monkeypatch, mnist):
    blocks = [block for block in blocks_of(path) if not block.skipped]
    code = "".join(block.code for block in blocks)
    from conftest import require

    for module, pattern in OPTIONAL_MODULES.items():
        if re.search(pattern, code):
            require(module)

    import mlp.datasets

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLP_DOCS_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(mlp.datasets, "load_mnist", small_load_mnist(mlp.datasets.load_mnist))
    shutil.copytree(DOCS / "digits", tmp_path / "docs" / "digits")
    namespace = {"__name__": "__main__", "np": np}
    for block in blocks:
        try:
            if block.kind == "python":
                run_python(block, namespace)
            else:
                run_console(block, tmp_path)
        except Exception:
            pytest.fail(f"{block} failed:\n{traceback.format_exc(limit=-3)}")


def test_the_readme_is_its_first_screens():
    """The README introduces, installs and shows the first model; the site has the rest."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"
    headings = [line for line in lines if line.startswith("## ")]
    assert headings[:3] == ["## Install", "## Train from the command line", "## Use it from Python"]

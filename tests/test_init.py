"""mlp/__init__.py: importing mlp from a source checkout that has no compiled core."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mlp


def _copy_sources(tmp_path, with_setup):
    """The package's Python sources, without the compiled extension."""
    source = Path(mlp.__file__).parent
    package = tmp_path / "mlp"
    package.mkdir()
    for path in source.glob("*.py"):
        shutil.copy(path, package / path.name)
    if with_setup:
        (tmp_path / "setup.py").write_text("# the checkout's build script\n")
    return tmp_path


def _import_mlp(cwd):
    return subprocess.run([sys.executable, "-c", "import mlp"], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_unbuilt_checkout_says_how_to_build_in_place(tmp_path):
    result = _import_mlp(_copy_sources(tmp_path, with_setup=True))
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: mlp's compiled core, mlp._kernels, is not built")
    assert str(tmp_path) in last
    assert "python setup.py build_ext --inplace" in last and "pip install -e ." in last
    assert "circular import" not in result.stderr


def test_installed_package_without_its_extension_says_reinstall(tmp_path):
    result = _import_mlp(_copy_sources(tmp_path, with_setup=False))
    assert result.returncode != 0
    assert "reinstall mlp" in result.stderr.strip().splitlines()[-1]


def test_other_import_errors_are_not_masked(tmp_path):
    """A compiled core that exists but fails to load keeps its own error."""
    root = _copy_sources(tmp_path, with_setup=True)
    (root / "mlp" / "_kernels.py").write_text("import a_module_that_does_not_exist\n")
    result = _import_mlp(root)
    assert "No module named 'a_module_that_does_not_exist'" in result.stderr
    assert "build_ext" not in result.stderr


@pytest.mark.parametrize("name", ["_importlib", "_os", "_not_built_message"])
def test_the_check_leaves_nothing_in_the_namespace(name):
    assert not hasattr(mlp, name)

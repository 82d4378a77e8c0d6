"""The benchmark scripts start: each one's --help, and bench_accuracy's
parsing of the CLI's output through its fake child. (The measurements
themselves are too long for the tests; bench/README.md says how to run them.)"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("bench_*.py"))


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_prints_its_help(script):
    result = _run(f"bench/{script}", "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_bench_accuracy_reads_the_cli_output():
    result = _run("bench/bench_accuracy.py", "--fake", "--quick", "--presets", "default")
    assert result.returncode == 0, result.stderr
    assert "9441/10000" in result.stdout

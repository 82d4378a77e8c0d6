"""The benchmark scripts start: each one's --help, and bench_accuracy's
parsing of the CLI's output through its fake child. (The measurements
themselves are too long for the tests; bench/README.md says how to run them.)"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mlp

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("bench_*.py"))
# The mlp these tests import: the checkout built in place, or (in CI) the
# installed package, whose checkout has no compiled core.
MLP_HOME = str(Path(mlp.__file__).resolve().parents[1])


def _run(tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=MLP_HOME)
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_prints_its_help(script, tmp_path):
    result = _run(tmp_path, str(ROOT / "bench" / script), "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_bench_accuracy_reads_the_cli_output(tmp_path):
    result = _run(tmp_path, str(ROOT / "bench" / "bench_accuracy.py"), "--fake", "--quick",
                  "--presets", "default")
    assert result.returncode == 0, result.stderr
    assert "9441/10000" in result.stdout


def test_bench_train_pairs_each_repeat_with_plain_sgd():
    """The optimizer table's paired ratio is the median of each repeat's
    own time ratio, which a slow repeat of both runs does not move."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_train
    finally:
        sys.path.remove(str(ROOT / "bench"))
    rates = {"mlp_sgd": [100.0, 50.0, 100.0], "mlp_adam": [80.0, 40.0, 50.0]}
    results = {name: {"raw": [{"steps_per_s": r} for r in values]}
               for name, values in rates.items()}
    assert bench_train._paired_time_ratio(results, "adam") == pytest.approx(1.25)
    assert bench_train._paired_time_ratio(results, "momentum") is None


def test_bench_sklearn_table_runs_a_case_and_judges_its_target():
    """bench_sklearn.py --datasets: one case of each group is made and fitted
    by both estimators (a short one here), and the targets read the ratio
    and, for sparse data, the scores."""
    pytest.importorskip("sklearn")
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import _sklearn_table as table
    finally:
        sys.path.remove(str(ROOT / "bench"))
    cases = table.cases(quick=True)
    assert {case[0] for case in cases} == {"bundled", "generated", "sparse", "lbfgs"}
    group, name, make, kind, params = next(c for c in cases if c[1] == "iris")
    result = table.run_case((group, name, make, kind, dict(params, max_iter=2)), 1, 1)
    assert result["rows"] == 112 and result["iterations"] == {"sklearn": 2, "mlp": 2}
    assert result["ratio"] > 0 and 0 <= result["scores"]["mlp"] <= 1
    assert table.met("lbfgs", 2.5, {}) and not table.met("lbfgs", 1.9, {})
    assert not table.met("sparse", 6.0, {"sklearn": 0.9, "mlp": 0.8})
    assert table.met("sparse", 6.0, {"sklearn": 0.9, "mlp": 0.895})
    assert table.met("generated", 1.01, {}) and not table.met("generated", 0.99, {})

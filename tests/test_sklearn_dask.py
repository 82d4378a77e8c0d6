"""mlp.sklearn on Dask: a grid search through joblib's Dask backend on a
cluster of worker processes, and training by partial_fit over the chunks of
a Dask array with dask-ml's Incremental wrapper."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from conftest import require

require("sklearn")
da = require("dask.array")
distributed = require("dask.distributed")
joblib = require("joblib")

from sklearn.model_selection import GridSearchCV  # noqa: E402

from mlp.sklearn import MLPClassifier  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def client():
    """Two worker processes of one thread each, as a small real cluster."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Port 8787 is already in use" and the like
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
    with cluster, distributed.Client(cluster) as dask_client:
        yield dask_client


def _blobs(n, seed=0):
    centres = np.random.default_rng(0).standard_normal((3, 8)) * 3
    rng = np.random.default_rng(seed + 1)
    y = rng.integers(0, 3, n)
    return (centres[y] + rng.standard_normal((n, 8))).astype(np.float32), y


def _estimator(**params):
    # n_threads=1: the cluster already runs one fit per worker core.
    return MLPClassifier(hidden_layer_sizes=(32,), solver="sgd", momentum=0.9,
                         learning_rate_init=0.05, batch_size=50, random_state=0, n_threads=1,
                         **params)


def _incremental_matches_a_loop_over_chunks(X, y, chunks, epochs, classes, X_test, y_test):
    """Incremental.partial_fit over a Dask array equals partial_fit called on
    each chunk in order, and sees every row once per epoch."""
    dask_ml_wrappers = require("dask_ml.wrappers")
    X_dask = da.from_array(X, chunks=(chunks, X.shape[1]))
    y_dask = da.from_array(y, chunks=chunks)
    assert X_dask.numblocks[0] >= 4
    # In order, to compare with the loop (by default Incremental shuffles the
    # blocks every pass).
    incremental = dask_ml_wrappers.Incremental(_estimator(), scoring="accuracy",
                                               shuffle_blocks=False)
    for _ in range(epochs):
        incremental.partial_fit(X_dask, y_dask, classes=classes)
    fitted = incremental.estimator_
    assert fitted.t_ == epochs * len(X)

    loop = _estimator()
    for _ in range(epochs):
        for start in range(0, len(X), chunks):
            loop.partial_fit(X[start:start + chunks], y[start:start + chunks], classes=classes)
    for got, expected in zip(fitted.coefs_ + fitted.intercepts_, loop.coefs_ + loop.intercepts_):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    return incremental.score(da.from_array(X_test, chunks=chunks), da.from_array(y_test, chunks=chunks))


def test_incremental_over_dask_chunks():
    X, y = _blobs(2000)
    X_test, y_test = _blobs(500, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # dask-ml: "numpy array in the graph"
        score = _incremental_matches_a_loop_over_chunks(X, y, 400, 2, np.arange(3),
                                                        X_test, y_test)
    assert score > 0.95


@pytest.mark.slow
def test_grid_search_on_a_dask_cluster(client, mnist):
    train, _, test = mnist
    X, y = train.images[:3000], train.labels[:3000]
    search = GridSearchCV(_estimator(max_iter=2),
                          {"hidden_layer_sizes": [(16,), (128,)],
                           "learning_rate_init": [1e-4, 0.05]}, cv=2)
    with distributed.get_task_stream(client) as tasks, joblib.parallel_backend("dask"):
        search.fit(X, y)
    # Every one of the 8 fits (and the final refit) ran on a cluster worker.
    workers = {task["worker"] for task in tasks.data}
    assert len(tasks.data) >= 8 and workers <= set(client.scheduler_info()["workers"])
    assert search.best_params_ == {"hidden_layer_sizes": (128,), "learning_rate_init": 0.05}
    assert search.best_score_ > 0.85
    assert search.score(test.images, test.labels) > 0.88


@pytest.mark.slow
def test_incremental_on_mnist_chunks_on_the_cluster(client, mnist):
    train, _, test = mnist
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        score = _incremental_matches_a_loop_over_chunks(
            train.images[:20000], train.labels[:20000], 5000, 2, np.arange(10),
            test.images, test.labels)
    assert score > 0.9

"""The HTML report: valid HTML holding its figures as PNG data URIs, and ``mlp report``."""
import base64
import io
from html.parser import HTMLParser

import numpy as np
import pytest

from conftest import require

from mlp import History, Model
from mlp.cli import main

require("matplotlib")
Image = require("PIL.Image")

from mlp.report import build_report, write_report  # noqa: E402

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "wbr", "source"}


class Page(HTMLParser):
    """Collects text, images and headings, and checks that every element is closed in order."""

    def __init__(self, page):
        super().__init__(convert_charrefs=True)
        self.stack, self.images, self.headings, self.text, self.rows = [], [], [], [], []
        self.feed(page)
        self.close()
        assert not self.stack, f"unclosed elements {self.stack}"

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "tr":
            self.rows.append([])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)
        if self.stack and self.stack[-1] == "h2":
            self.headings.append(data)
        if self.stack and self.stack[-1] in ("td", "th"):
            self.rows[-1].append(data)

    @property
    def all_text(self):
        return "".join(self.text)


def decode_png(src):
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    raw = base64.b64decode(src[len(prefix):], validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = np.asarray(Image.open(io.BytesIO(raw)).convert("L"), dtype=np.float64)
    assert pixels.std() > 10, "a blank figure"
    return pixels


def small_case(n_inputs=16, n_classes=4, n=80, seed=0):
    model = Model([n_inputs, 6, n_classes], activation="tanh", output="softmax",
                  init="xavier", seed=seed)
    rng = np.random.default_rng(seed + 1)
    return model, rng.random((n, n_inputs)), rng.integers(0, n_classes, n)


SOURCE = "<script>alert(1)</script>.npz"


@pytest.fixture(scope="module")
def full_report():
    """One report with every section, shared by the tests that only read it."""
    model, X, y = small_case()
    model.history = History(steps=[10, 20, 30], loss=[1.2, 0.9, 0.7],
                            val_accuracy=[0.3, 0.4, 0.45], time=[0.1, 0.2, 0.3])
    return model, X, y, build_report(model, X, y, source=SOURCE)


def test_report_holds_every_section_and_figure(full_report):
    model, X, y, html_text = full_report
    page = Page(html_text)
    # The order the README describes the report in.
    assert page.headings == ["Model", "Training", "Learning curves", "Test results",
                             "Confusion matrix",
                             f"Misclassified test samples (the first 36 of "
                             f"{np.sum(model.predict(X) != y)})",
                             "First-layer weights"]
    assert len(page.images) == 4
    for image in page.images:
        decode_png(image["src"])
        assert image["alt"]
    text = page.all_text
    assert "16 - 6 - 4" in text and "tanh" in text and "softmax" in text and "float32" in text
    assert f"{model.n_params:,}" in text and "training time" in text and "0.3 s" in text
    accuracy = np.mean(model.predict(X) == y)
    assert f"Test accuracy: {100 * accuracy:.2f}%" in text


def test_report_has_precision_and_recall_for_each_class(full_report):
    model, X, y, html_text = full_report
    predicted = model.predict(X)
    rows = Page(html_text).rows
    table = [row for row in rows if row and row[0] in ("0", "1", "2", "3")]
    assert [row[0] for row in table] == ["0", "1", "2", "3"]
    for c, (_, samples, n_predicted, precision, recall) in enumerate(table):
        assert int(samples) == np.sum(y == c) and int(n_predicted) == np.sum(predicted == c)
        hits = np.sum((y == c) & (predicted == c))
        if np.sum(predicted == c):
            assert precision == f"{100 * hits / np.sum(predicted == c):.2f}%"
        else:
            assert precision == "undefined"
        assert recall == f"{100 * hits / np.sum(y == c):.2f}%"


def test_report_counts_optimizer_steps_whatever_the_optimizer():
    import mlp

    model, X, y = small_case()
    mlp.train(model, X, y, epochs=1, batch_size=16, optimizer=mlp.Adam(1e-3), seed=0)
    rows = dict(row for row in Page(build_report(model, X, y)).rows if len(row) == 2)
    assert "SGD steps" not in rows
    assert rows["optimizer steps"] == str(model.history.steps[-1])


def test_report_escapes_text(full_report):
    html_text = full_report[3]
    assert "<script>" not in html_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.npz" in html_text
    assert SOURCE in Page(html_text).all_text


def test_report_without_history_says_so_and_omits_the_curves():
    model, X, y = small_case()
    assert getattr(model, "history", None) is None
    page = Page(build_report(model, X, y))
    assert page.all_text.count("no training history saved with this model") == 2
    assert len(page.images) == 3


def test_report_survives_a_history_it_cannot_draw():
    model, X, y = small_case()
    model.history = History()  # no epochs recorded
    page = Page(build_report(model, X, y))
    assert "cannot draw the learning curves: history has no epochs recorded" in page.all_text
    assert len(page.images) == 3


def test_report_warns_about_never_predicted_classes():
    model, X, y = small_case()
    model.weights[-1][...] = 0
    model.biases[-1][...] = [0, 3, 0, 0]
    text = Page(build_report(model, X, y)).all_text
    assert "classes 0, 2 and 3 are never predicted" in text
    assert "undefined" in text


def test_report_on_a_model_whose_inputs_are_not_an_image():
    model, X, y = small_case(n_inputs=10)
    page = Page(build_report(model, X, y))
    assert "not a square image" in page.all_text
    assert len(page.images) == 1  # the confusion matrix


def test_report_checks_its_arguments(tmp_path):
    model, X, y = small_case()
    with pytest.raises(ValueError, match="16 columns"):
        build_report(model, X[:, :5], y)
    with pytest.raises(TypeError, match="mlp.Model"):
        build_report("model.npz", X, y)
    with pytest.raises(ValueError, match="n_misclassified must be >= 1"):
        build_report(model, X, y, n_misclassified=0)
    with pytest.raises(ValueError, match="path .* does not exist"):  # before any drawing
        write_report(model, X, y, tmp_path / "missing" / "r.html")
    assert not (tmp_path / "missing").exists()


# -- mlp report -----------------------------------------------------------------

def test_mlp_report_writes_a_self_contained_page(tiny_mnist, tmp_path, capsys):
    saved, out = tmp_path / "model.npz", tmp_path / "report.html"
    Model([784, 12, 10], activation="relu", output="softmax", init="he", seed=0).save(saved)
    assert main(["report", str(saved), "--data", str(tiny_mnist), "--out", str(out)]) == 0
    assert f"Wrote the report to {out}" in capsys.readouterr().out
    page = Page(out.read_text(encoding="utf-8"))
    assert "model.npz" in page.all_text and "(30 of 30" not in page.all_text
    assert "of 30 correct" in page.all_text
    assert len(page.images) >= 3
    for image in page.images:
        decode_png(image["src"])


def test_mlp_report_default_output_is_report_html(tiny_mnist, tmp_path, monkeypatch):
    saved = tmp_path / "model.npz"
    Model([784, 10], output="softmax", init="xavier", seed=0).save(saved)
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(saved), "--data", str(tiny_mnist)]) == 0
    assert (tmp_path / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("case, words", [
    ("missing", "no model file"),
    ("not a model", "not a model saved by mlp"),
    ("wrong inputs", "takes 100 inputs but the test images have 784 pixels"),
    ("too few outputs", "has 3 outputs but the test labels go up to 9"),
    ("bad output directory", "--out"),
    ("missing data", "does not exist"),
])
def test_mlp_report_errors_are_one_line(case, words, tiny_mnist, tmp_path, capsys):
    saved, out, data = tmp_path / "model.npz", tmp_path / "r.html", str(tiny_mnist)
    if case == "not a model":
        saved.write_bytes(b"PK\x03\x04 definitely not an archive")
    elif case == "wrong inputs":
        Model([100, 10]).save(saved)
    elif case == "too few outputs":
        Model([784, 3]).save(saved)
    elif case != "missing":
        Model([784, 10]).save(saved)
    if case == "bad output directory":
        out = tmp_path / "no" / "r.html"
    if case == "missing data":
        data = str(tmp_path / "no-data")
    assert main(["report", str(saved), "--data", data, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlp: error: ") and words in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()

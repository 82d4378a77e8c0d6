"""Export an :class:`mlp.Model` to ONNX, so that any ONNX runtime can run it.

The graph is what the model computes, layer by layer: a ``Gemm`` node
(``X @ W.T + b``, with ``W`` stored in the model's own (out, in) orientation
and ``transB=1``) followed by the layer's activation nodes: ``Sigmoid``,
``Tanh``, ``Relu``, ``LeakyRelu(alpha=0.01)``, ``Softmax(axis=-1)``, silu
as ``x * Sigmoid(x)``, gelu as ``x * 0.5 * (1 + Erf(x / sqrt 2))`` (opset
17 has no Gelu), or nothing for ``"identity"`` (each activation's nodes are
its entry in mlp/activations.py). The batch dimension is dynamic (named
``"batch"``), so one file serves any number of rows.

Precision: by default the graph has the model's dtype (a float64 model
exports a float64 graph, so the exported outputs agree with
``model.forward`` to float64 rounding; but for gelu, whose ``Erf`` is
computed in float32, as onnxruntime has no float64 ``Erf``: within about
1e-7 of the output's scale). ``dtype=np.float32`` casts the
parameters and declares a float32 input instead, which is what most ONNX
consumers (mobile and GPU runtimes, browsers) expect.

The ``onnx`` package is imported only when a model is exported.

Layer (c), beside mlp/serialization.py: another file format for a model,
which needs nothing above the model. It attaches ``Model.to_onnx``, a
shortcut for :func:`to_onnx` (mlp/__init__.py imports this module, so the
method is there whenever mlp.Model is).
"""
from __future__ import annotations

import numpy as np

from ._files import atomic_write
from .activations import ACTIVATIONS
from ._validation import check_dtype, check_writable
from ._version import __version__
from .model import Model

__all__ = ["to_onnx", "OPSET", "INPUT_NAME", "OUTPUT_NAME"]

# Opset 13 is the first whose Softmax normalises along one axis (earlier
# opsets flatten the trailing dimensions first); 17 is supported by every
# onnxruntime since 1.11 and by the other common runtimes.
OPSET = 17
# IR version 8 is the one that goes with opset 17: a newer IR version would
# make older runtimes refuse a file that uses nothing newer.
IR_VERSION = 8
INPUT_NAME = "input"
OUTPUT_NAME = "output"



class _Graph:
    """The nodes and initializers of a graph under construction, for the
    activations' ONNX builders (mlp/activations.py): ``node`` adds one
    node and returns its output's name, ``constant`` a scalar of the
    graph's type, ``erf`` an Erf that onnxruntime runs in either type."""

    def __init__(self, helper, numpy_helper, TensorProto, dtype):
        self._helper, self._numpy_helper, self._proto = helper, numpy_helper, TensorProto
        self.dtype = dtype
        self.nodes, self.initializers = [], []
        self._names = 0

    def _fresh(self, stem):
        self._names += 1
        return f"{stem}{self._names}"

    def node(self, operator, inputs, output=None, **attributes):
        output = output or self._fresh(operator.lower())
        self.nodes.append(self._helper.make_node(operator, list(inputs), [output],
                                                 name=self._fresh(f"{operator.lower()}_node"),
                                                 **attributes))
        return output

    def tensor(self, array, name):
        self.initializers.append(self._numpy_helper.from_array(
            np.ascontiguousarray(array, dtype=self.dtype), name))
        return name

    def constant(self, value):
        return self.tensor(np.asarray(value, dtype=self.dtype), self._fresh("constant"))

    def erf(self, x):
        if self.dtype == np.float32:
            return self.node("Erf", [x])
        # onnxruntime implements Erf for float32 only.
        narrow = self.node("Cast", [x], to=self._proto.FLOAT)
        return self.node("Cast", [self.node("Erf", [narrow])], to=self._proto.DOUBLE)


def to_onnx(model, path, *, dtype=None, doc_string=None):
    """Write `model` to `path` as an ONNX model.

    Parameters
    ----------
    model : mlp.Model
    path : str or os.PathLike
        The file to write. Its directory must exist. The file is written to a
        temporary name and renamed into place, so a failure never leaves a
        half-written file where a good one stood.
    dtype : None, float32 or float64
        Element type of the graph's input, parameters and output. None keeps
        the model's dtype.
    doc_string : str, optional
        Stored as the graph's description.

    Returns
    -------
    onnx.ModelProto
        The model that was written. Its single input ``"input"`` has shape
        (batch, layer_sizes[0]) and its single output ``"output"`` shape
        (batch, layer_sizes[-1]), both of `dtype`; ``output`` equals
        ``model.forward(input)`` up to rounding.

    Raises
    ------
    TypeError
        If `model` is not an mlp.Model or `path` is not a path.
    ValueError
        If `path` is empty, a directory, or in a directory that is missing or
        cannot be written; or the parameters are not finite (in `dtype`).
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be an mlp.Model, got {type(model).__name__}")
    path = check_writable(path, example="model.onnx")
    dtype = model.dtype if dtype is None else check_dtype(dtype)
    proto = build_onnx(model, dtype=dtype, doc_string=doc_string)
    data = proto.SerializeToString()
    atomic_write(path, lambda file: file.write(data))
    return proto


def build_onnx(model, *, dtype=None, doc_string=None):
    """The ONNX ModelProto for `model`, without writing it (see :func:`to_onnx`)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dtype = model.dtype if dtype is None else check_dtype(dtype)
    # A diverged model (NaN, or weights past float32's range for a float32
    # export) would give NaN for every input: refused, as Model.save does.
    if not np.isfinite(model.parameters).all():
        raise ValueError("the model's parameters hold NaN or infinity (a diverged run); "
                         "there is nothing meaningful to export")
    with np.errstate(over="ignore"):
        if not np.isfinite(model.parameters.astype(dtype)).all():
            raise ValueError(f"the model's parameters do not fit in {np.dtype(dtype).name}; "
                             f"export it as {model.dtype.name}")
    elem_type = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    n_layers = len(model.weights)
    graph = _Graph(helper, numpy_helper, TensorProto, dtype)
    current = INPUT_NAME
    for l, (w, b) in enumerate(zip(model.weights, model.biases)):
        last = l == n_layers - 1
        build_activation = ACTIVATIONS[model.output if last else model.activation].onnx
        linear = OUTPUT_NAME if last and build_activation is None else f"linear{l}"
        # W is (out, in): transB=1 makes Gemm compute input @ W.T + b.
        graph.node("Gemm", [current, graph.tensor(w, f"W{l}"), graph.tensor(b, f"b{l}")],
                   linear, transB=1)
        current = linear
        if build_activation is not None:
            activated = OUTPUT_NAME if last else f"hidden{l}"
            build_activation(graph, current, activated)
            current = activated
    graph = helper.make_graph(
        graph.nodes,
        "mlp",
        [helper.make_tensor_value_info(INPUT_NAME, elem_type, ["batch", model.n_inputs])],
        [helper.make_tensor_value_info(OUTPUT_NAME, elem_type, ["batch", model.n_outputs])],
        initializer=graph.initializers,
        doc_string=doc_string or repr(model),
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="mlp", producer_version=__version__)
    proto.ir_version = IR_VERSION
    helper.set_model_props(proto, {
        "layer_sizes": ",".join(str(s) for s in model.layer_sizes),
        "activation": model.activation,
        "output": model.output,
    })
    onnx.checker.check_model(proto)
    return proto


def _to_onnx_method(self, path, *, dtype=None):
    """Write the model to `path` as an ONNX graph; see :func:`mlp.onnx.to_onnx`.

        Needs the ``onnx`` package (``pip install onnx``).

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (atomically); its directory must exist.
        dtype : None, float32 or float64
            Element type of the graph's input, parameters and output. None
            keeps the model's dtype.

        Returns
        -------
        onnx.ModelProto
            The model written: input ``"input"`` of shape (batch, n_inputs),
            output ``"output"`` of shape (batch, n_outputs), both of `dtype`.

        Raises
        ------
        ImportError
            If onnx is not installed.
        TypeError
            If path is not a path, or dtype not float32 or float64.
        ValueError
            If `path` is empty, a directory, or in a directory that is
            missing or cannot be written; or the parameters are not finite
            (in `dtype`).
        """
    return to_onnx(self, path, dtype=dtype)


_to_onnx_method.__name__ = "to_onnx"
_to_onnx_method.__qualname__ = "Model.to_onnx"
Model.to_onnx = _to_onnx_method

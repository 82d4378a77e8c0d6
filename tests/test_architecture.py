"""mlp's modules import downwards only.

The import graph is read from the source (every ``import`` and ``from ...
import`` anywhere in a module, inside functions too, relative or absolute),
not from what a running interpreter happens to have loaded, so an import
that only runs on some code path counts as well.

The layers, bottom to top (a module may import its own layer and those
below; within a layer the graph must still have no cycle):

0. kernels and checks: the compiled core, validation, files, threads, the
   version number.
1. the model (parameters, forward pass, loss, gradients) and what it is
   built and trained from without knowing training: the optimizers'
   configurations, the image distortions, the data sets.
2. state and scores of a model: run state (``History``,
   ``OptimizerState``) and metrics, which scores a model's predictions and
   which training reports.
3. file formats of a model: the .npz model file and checkpoints
   (serialization), and ONNX export, which needs only the model.
4. training: ``train()``, its hyperparameters, presets and schedules.
5. on top: the scikit-learn estimators, the report and its figures, the
   notebook compatibility layer (built on training), the CLI, and the
   package itself (``mlp/__init__.py``).
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "mlp"

LAYERS = {
    # 0: kernels and checks
    "mlp._kernels": 0, "mlp._augment": 0, "mlp._validation": 0, "mlp._files": 0,
    "mlp._threads": 0, "mlp._version": 0,
    # the kernel's activations and losses, as tables every layer above reads
    "mlp.activations": 0,
    # 1: the model, and the configurations and data it is trained from
    "mlp.model": 1, "mlp.optimizers": 1, "mlp.augment": 1,
    "mlp.data": 1, "mlp.data.formats": 1, "mlp.data.images": 1, "mlp.data.mnist": 1,
    "mlp.data.sources": 1, "mlp.data.info": 1, "mlp.data.registry": 1,
    "mlp.data.folders": 1, "mlp.data.tables": 1, "mlp.data.decoded": 1, "mlp.datasets": 1,
    # 2: run state and scores
    "mlp.state": 2, "mlp.metrics": 2,
    # 3: file formats
    "mlp.serialization": 3, "mlp.onnx": 3,
    # 4: training
    "mlp.training": 4, "mlp.hyperparams": 4, "mlp.presets": 4, "mlp.schedules": 4,
    "mlp._lbfgs": 4,
    # 5: on top
    "mlp.sklearn": 5, "mlp.report": 5, "mlp.plots": 5, "mlp.compat": 5, "mlp.cli": 5,
    "mlp.__main__": 5, "mlp": 5,
}


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules():
    """{module name: parsed source} of every .py file of the package."""
    return {module_name(path): ast.parse(path.read_text(encoding="utf-8"), str(path))
            for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name, tree, known):
    """The package's modules that `name` (parsed as `tree`) imports anywhere."""
    is_package = name == "mlp" or (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            # `from X import y` imports the module X.y when there is one, else X.
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    # An absolute import of mlp.x.y names mlp.x.y; keep the package's own modules.
    return {module for module in found if module in known and module != name}


def import_graph():
    modules = source_modules()
    known = set(modules) | {"mlp._kernels", "mlp._augment"}
    return {name: imported_modules(name, tree, known) for name, tree in modules.items()}


def find_cycle(graph):
    """A list of modules that import each other in a circle, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    # cli imports training only inside functions; data.mnist imports mlp._files as "..".
    assert "mlp.training" in graph["mlp.cli"]
    assert "mlp._files" in graph["mlp.data.mnist"]
    assert "mlp._kernels" in graph["mlp.model"]


def test_every_module_has_a_layer():
    missing = sorted(set(import_graph()) - set(LAYERS))
    assert not missing, f"put these modules in a layer in LAYERS: {missing}"


def test_imports_have_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"modules import each other in a circle: {' -> '.join(cycle)}"


def test_modules_import_only_their_own_layer_and_those_below():
    upward = [f"{module} (layer {LAYERS[module]}) imports {target} (layer {LAYERS[target]})"
              for module, targets in sorted(import_graph().items())
              for target in sorted(targets) if LAYERS[target] > LAYERS[module]]
    assert not upward, "upward imports:\n" + "\n".join(upward)


@pytest.mark.parametrize("source, expected", [
    ("def f():\n    from .training import History\n", {"mlp.training"}),
    ("from . import _kernels, __version__\n", {"mlp._kernels", "mlp"}),
    ("import mlp.cli\n", {"mlp.cli"}),
    ("from mlp.data import formats\n", {"mlp.data.formats"}),
])
def test_the_graph_reads_each_form_of_import(source, expected):
    known = set(LAYERS)
    assert imported_modules("mlp.state", ast.parse(source), known) == expected

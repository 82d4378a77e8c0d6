"""Every public name of mlp has a docstring and a place in the API reference.

The public names of a module are its ``__all__``; a module without one
exports the functions and classes it defines whose names do not start with
an underscore. Names that are modules, or objects from outside mlp
(``mlp.compat`` re-exports ``np`` and ``tqdm`` for the notebook's cells), are
documented where they come from and are left out. Constants (numbers and
strings) need a place in the reference but cannot carry a docstring of
their own.

A name passes when the reference documents it, under this module's path or
any other path to the same object (``mlp.SGD`` is ``mlp.optimizers.SGD``).

As a Sphinx extension it checks the objects the build actually documented
(an autodoc import failure leaves a name out) and reports each problem as a
warning, which ``-W`` turns into a failed build. ``tests/test_docs.py`` runs
the same check against the names listed in ``docs/api/*.rst``.
"""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

# The modules whose names the reference must cover.
PUBLIC_MODULES = (
    "mlp",
    "mlp.sklearn",
    "mlp.datasets",
    "mlp.optimizers",
    "mlp.schedules",
    "mlp.augment",
    "mlp.metrics",
    "mlp.plots",
    "mlp.report",
    "mlp.onnx",
    "mlp.compat",
    "mlp.training",
)

CONSTANT_TYPES = (int, float, str, bytes, tuple, frozenset)


def public_names(module):
    """The names ``module`` exports, as described in this module's docstring."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name for name, obj in vars(module).items()
            if not name.startswith("_")
            and (inspect.isfunction(obj) or inspect.isclass(obj))
            and getattr(obj, "__module__", None) == module.__name__
        ]
    kept = []
    for name in names:
        obj = getattr(module, name)
        if inspect.ismodule(obj):
            continue
        origin = getattr(obj, "__module__", None) or ""
        if (inspect.isclass(obj) or callable(obj)) and not origin.startswith("mlp"):
            continue
        kept.append(name)
    return kept


def _resolve(full_name):
    """The object a dotted name refers to, or None."""
    parts = full_name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def problems(documented):
    """Messages for every public name without a docstring or a documented path.

    ``documented`` is an iterable of the full dotted names the reference documents.
    """
    documented = set(documented)
    documented_ids = set()
    for full_name in documented:
        obj = _resolve(full_name)
        if obj is not None and not isinstance(obj, CONSTANT_TYPES):
            documented_ids.add(id(obj))
    found = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in public_names(module):
            obj = getattr(module, name)
            full = f"{module_name}.{name}"
            constant = isinstance(obj, CONSTANT_TYPES)
            if not constant and not (inspect.getdoc(obj) or "").strip():
                found.append(f"{full} has no docstring")
            if full not in documented and (constant or id(obj) not in documented_ids):
                found.append(f"{full} is not in the API reference (docs/api/)")
    return found


_DIRECTIVE = re.compile(r"^\.\. (currentmodule|module|autosummary|autofunction|autoclass|autodata)::\s*(\S*)")


def names_in_rst(paths):
    """The full names that the autosummary and auto* directives of ``paths`` document."""
    names = set()
    for path in paths:
        module = None
        in_summary = False
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            match = _DIRECTIVE.match(line)
            if match:
                kind, arg = match.groups()
                in_summary = kind == "autosummary"
                if kind in ("currentmodule", "module"):
                    module = arg
                elif not in_summary:
                    names.add(arg if "." in arg or module is None else f"{module}.{arg}")
                continue
            if in_summary:
                stripped = line.strip()
                if not stripped or stripped.startswith(":"):
                    continue
                if not line.startswith((" ", "\t")):
                    in_summary = False
                    continue
                entry = stripped.lstrip("~")
                names.add(entry if module is None else f"{module}.{entry}")
    return names


def _check_documented(app, env):
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    documented = set(env.get_domain("py").objects)
    for message in problems(documented):
        logger.warning(message, type="mlp", subtype="api")


def setup(app):
    app.connect("env-check-consistency", _check_documented)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

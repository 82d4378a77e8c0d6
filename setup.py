"""Build the Cython core. Everything else about the package lives in pyproject.toml.

``MLP_CHECKED_BUILD=1 pip install .`` builds a checked extension instead: Cython's
bounds, wraparound and initialisation checks on, compiled with AddressSanitizer and
UndefinedBehaviorSanitizer. It is slow and needs the sanitizer runtime preloaded
(see the README's Development section); it exists to run the test suite against.
"""
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

CHECKED = os.environ.get("MLP_CHECKED_BUILD", "") not in ("", "0")

if sys.platform == "win32":
    compile_args, link_args = [], []
elif CHECKED:
    # -O1 keeps the sanitizers' reports readable and the build quick; the
    # frame pointers give them whole stack traces.
    sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    compile_args = ["-O1", "-g", "-pthread", *sanitize]
    link_args = ["-pthread", *sanitize]
else:
    # -fno-trapping-math lets gcc vectorise the branch-free selects in
    # _fastexp.h; unlike -ffast-math it keeps NaN and inf semantics, which
    # the divergence checks rely on.
    compile_args = ["-O3", "-fno-trapping-math", "-fno-math-errno", "-pthread"]
    # The training workers (mlp/_parallel.h) are pthreads.
    link_args = ["-pthread"]

extensions = [
    Extension(
        "mlp._kernels",
        ["mlp/_kernels.pyx"],
        include_dirs=[numpy.get_include(), "mlp"],
        depends=["mlp/_fastexp.h", "mlp/_parallel.h"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": CHECKED,
            "wraparound": CHECKED,
            "cdivision": True,
            "initializedcheck": CHECKED,
        },
        # The checked build generates its C and objects apart from the normal
        # build, so neither can reuse the other's stale output.
        **({"build_dir": "build/checked"} if CHECKED else {}),
    ),
    options={"build": {"build_base": "build/checked"}} if CHECKED else {},
)

"""Build the Cython core. Everything else about the package lives in pyproject.toml.

``MLP_CHECKED_BUILD=1 pip install .`` builds checked extensions instead: Cython's
bounds, wraparound and initialisation checks on, compiled with AddressSanitizer and
UndefinedBehaviorSanitizer. They are slow and need the sanitizer runtimes preloaded
(see the README's Development section); they exist to run the test suite against.
"""
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

CHECKED = os.environ.get("MLP_CHECKED_BUILD", "") not in ("", "0")

if sys.platform == "win32":
    COMPILE_ARGS, LINK_ARGS = [], []
elif CHECKED:
    # -O1 keeps the sanitizers' reports readable and the build quick; the
    # frame pointers give them whole stack traces.
    SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    COMPILE_ARGS = ["-O1", "-g", "-pthread", *SANITIZE]
    LINK_ARGS = ["-pthread", *SANITIZE]
else:
    # -fno-trapping-math lets gcc vectorise branch-free selects (in _fastexp.h,
    # and the clamps of _augment.h); unlike -ffast-math it keeps NaN and inf
    # semantics, which the divergence checks rely on. Workers are pthreads
    # (mlp/_parallel.h).
    COMPILE_ARGS = ["-O3", "-fno-trapping-math", "-fno-math-errno", "-pthread"]
    LINK_ARGS = ["-pthread"]


def extension(name, depends):
    return Extension(
        f"mlp.{name}",
        [f"mlp/{name}.pyx"],
        include_dirs=[numpy.get_include(), "mlp"],
        depends=[f"mlp/{header}" for header in depends],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=COMPILE_ARGS,
        extra_link_args=LINK_ARGS,
    )


extensions = [
    extension("_kernels", ["_fastexp.h", "_parallel.h", "_dropout.h", "_updates.h", "_sparse.h", "_dense.h", "_bf16.h", "_bf16_avx512.h", "_bf16_amx.h",
                           "_bf16_amx_body.h", "_blas.pxi", "_bf16.pxi",
                           "_elementwise.pxi", "_updates.pxi", "_sparse.pxi", "_worker.pxi",
                           "_augment.h", "_augment.pxd"]),
    extension("_augment", ["_augment.h", "_augment.pxd", "_parallel.h"]),
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

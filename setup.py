"""Build the Cython core. Everything else about the package lives in pyproject.toml."""
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

# -fno-trapping-math lets gcc vectorise branch-free selects (in _fastexp.h,
# and the clamps of _augment.h); unlike -ffast-math it keeps NaN and inf
# semantics, which the divergence checks rely on. Workers are pthreads
# (mlp/_parallel.h).
COMPILE_ARGS = [] if sys.platform == "win32" else ["-O3", "-fno-trapping-math", "-fno-math-errno", "-pthread"]
LINK_ARGS = [] if sys.platform == "win32" else ["-pthread"]


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
    extension("_kernels", ["_fastexp.h", "_parallel.h", "_dropout.h", "_blas.pxi",
                           "_elementwise.pxi", "_updates.pxi", "_worker.pxi",
                           "_augment.h", "_augment.pxd"]),
    extension("_augment", ["_augment.h", "_augment.pxd", "_parallel.h"]),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)

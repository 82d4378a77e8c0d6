"""Build the Cython core. Everything else about the package lives in pyproject.toml."""
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "mlp._kernels",
        ["mlp/_kernels.pyx"],
        include_dirs=[numpy.get_include(), "mlp"],
        depends=["mlp/_fastexp.h", "mlp/_parallel.h", "mlp/_dropout.h", "mlp/_blas.pxi",
                 "mlp/_elementwise.pxi", "mlp/_updates.pxi", "mlp/_worker.pxi"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        # -fno-trapping-math lets gcc vectorise the branch-free selects in
        # _fastexp.h; unlike -ffast-math it keeps NaN and inf semantics, which
        # the divergence checks rely on.
        extra_compile_args=[] if sys.platform == "win32" else
        ["-O3", "-fno-trapping-math", "-fno-math-errno", "-pthread"],
        # The training workers (mlp/_parallel.h) are pthreads.
        extra_link_args=[] if sys.platform == "win32" else ["-pthread"],
    )
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

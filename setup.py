"""Build the compiled store client ``codeq._core`` from its Cython source.

CODEQ_DEBUG=1 builds it with line tracing and assertions, for profiling and
coverage.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("CODEQ_DEBUG") == "1"

directives = {"language_level": "3", "embedsignature": True}
macros = []
if DEBUG:
    directives.update(linetrace=True, binding=True, boundscheck=True, wraparound=True)
    macros.append(("CYTHON_TRACE_NOGIL", "1"))

extension = Extension(
    "codeq._core",
    ["codeq/_core.pyx"],
    define_macros=macros,
    extra_compile_args=["-O0", "-g"] if DEBUG else ["-O2", "-g0"],
)

setup(ext_modules=cythonize([extension], compiler_directives=directives))

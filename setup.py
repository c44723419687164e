"""Builds the compiled core (``xennet.core._native``, abi3) beside the pure-Python package.

The extension is optional: when it cannot be built (no compiler, no Python headers) the
install still succeeds, and the reason is written to ``core/_native_build_error.txt`` so
that ``xennet`` says once, at start, that it runs the pure-Python twin and why.
"""

from __future__ import annotations

import os
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
NATIVE = "src/xennet/core/native"
MARKER = os.path.join(HERE, "src", "xennet", "core", "_native_build_error.txt")


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any failure means: no compiled core
            self._failed(exc)
        else:
            if os.path.exists(MARKER):
                os.unlink(MARKER)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        with open(MARKER, "w") as f:
            f.write(f"{type(exc).__name__}: {exc}\n")
        print(f"xennet: the compiled core was not built ({exc}); the pure-Python twin will run")


setup(
    ext_modules=[
        Extension(
            "xennet.core._native",
            sources=sorted(os.path.relpath(p, HERE) for p in glob(os.path.join(HERE, NATIVE, "*.c"))),
            include_dirs=[NATIVE],
            define_macros=[("Py_LIMITED_API", "0x030B0000")],
            extra_compile_args=[
                "-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fno-strict-aliasing",
            ],
            py_limited_api=True,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)

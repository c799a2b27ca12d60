"""Builds the relay's compiled loop (ADR 0028); everything else is in pyproject.toml.

The extension is optional: without a C compiler (or Python's headers) the install still
succeeds and the relay uses its Python engine (the operator logs which one it uses). The
runtime never imports it, and the runtime environment does not measure it (nothing under
confide/operator/ is measured, ADR 0017). The runtime image (Containerfile) does not copy
this file, so its Confide wheel stays pure Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "confide.operator._relaycore",
            sources=["src/confide/operator/_relaycore.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        )
    ]
)

"""Only the optional compiled accelerator lives here; everything else is in pyproject.toml.

``walrus_core._accel`` (walrus_core/_accel.c) speeds up the per-entry loops. It is optional:
when no C compiler is available the build goes on without it and walrus_core runs in pure
Python (see walrus_core/accel.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "walrus_core._accel",
            sources=["walrus_core/_accel.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)

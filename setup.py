"""Compiles the per-message path to C with mypyc; everything else is in pyproject.toml.

Framing, the pipeline and the archive's line format run once or more for
every message, and compiled they take less CPU per message
(docs/performance.md measures how much). The compiled modules are the same Python
source, which still runs as it is: without a C compiler the modules are
installed uncompiled, and COLLECTOR_PURE_PYTHON=1 skips compiling.
"""

import os

from setuptools import setup

COMPILED = ["collector/parsing/framing.py", "collector/pipeline.py", "collector/archive/line.py"]


def compiled_modules() -> list:
    if os.environ.get("COLLECTOR_PURE_PYTHON") == "1":
        return []
    from mypyc.build import mypycify

    # Only the compiled modules must type-check: what they import is read
    # for its types, whatever library versions the build finds, or none.
    options = ["--ignore-missing-imports", "--follow-imports=silent"]
    modules = mypycify(options + COMPILED, group_name="collector")
    for module in modules:
        # A failed compile leaves the pure Python module in place of this one.
        module.optional = True
    return modules


setup(ext_modules=compiled_modules())

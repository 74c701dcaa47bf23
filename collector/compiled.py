"""Which modules of the per-message path run compiled.

setup.py compiles them with mypyc when the machine building the package
has a C compiler. The same source runs as plain Python otherwise, at more
CPU per message.
"""

from __future__ import annotations

from importlib.machinery import ExtensionFileLoader
from types import ModuleType

from collector import pipeline
from collector.archive import line as archive_line
from collector.parsing import framing

MESSAGE_PATH: tuple[ModuleType, ...] = (framing, pipeline, archive_line)


def plain_python() -> list[str]:
    """The modules of the per-message path that run as plain Python."""
    return [module.__name__ for module in MESSAGE_PATH
            if not isinstance(module.__loader__, ExtensionFileLoader)]

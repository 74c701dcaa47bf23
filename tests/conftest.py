import os
import shutil

import pytest

# .ci/run sets this: there, a test must fail rather than skip for want of a program.
REQUIRE_ALL = os.environ.get("COLLECTOR_TESTS_REQUIRE_ALL") == "1"


def require_binary(name: str) -> str:
    """The path of a program a test needs; skip (fail under CI) when it is missing."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        message = f"{name} is not installed"
        if REQUIRE_ALL:
            pytest.fail(message + " (COLLECTOR_TESTS_REQUIRE_ALL=1)")
        pytest.skip(message)
    return path

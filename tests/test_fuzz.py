"""Run the atheris fuzz targets for a bounded time each (COLLECTOR_FUZZ_SECONDS,
default 15; .ci/run sets 60). A crash or a broken invariant fails the test."""

import os
import subprocess
import sys

import pytest

from collector_process import REPO, source_environment
from conftest import REQUIRE_ALL

TARGET = REPO / "tests" / "fuzz" / "fuzz_parsers.py"
SECONDS = int(os.environ.get("COLLECTOR_FUZZ_SECONDS", "15"))


@pytest.mark.parametrize("target", ["framing", "syslog", "kerio", "shapes", "archive"])
def test_fuzz(target, tmp_path):
    try:
        import atheris  # noqa: F401
    except ImportError:
        if REQUIRE_ALL:
            pytest.fail("atheris is not installed (pip install '.[test]')")
        pytest.skip("atheris is not installed")
    result = subprocess.run(
        [sys.executable, str(TARGET), target, f"-max_total_time={SECONDS}",
         f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        cwd=tmp_path, env=source_environment(),
        capture_output=True, text=True, timeout=SECONDS + 120)
    output = result.stdout + result.stderr
    crashes = list(tmp_path.glob("crash-*"))
    assert result.returncode == 0 and not crashes, output[-5000:]
    assert "Done " in output

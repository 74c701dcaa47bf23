"""The package as a user installs it: a wheel built from the source tree.

The twistd dropin must be found from a regular install, not only from the
source tree, and the per-message path must come out compiled and pass its
tests compiled (setup.py).
"""

import ast
import os
import subprocess
import sysconfig
import venv

import pytest

from collector.compiled import MESSAGE_PATH
from collector_process import REPO, installation
from conftest import require_binary

# Run in-process against the installed, compiled copy: the tests of the
# modules compiled, and of what drives them. (The process tests run it anyway.)
TESTS_OF_THE_MESSAGE_PATH = ["test_framing.py", "test_pipeline.py", "test_archive_line.py",
                             "test_protocols.py", "test_archive.py", "test_metrics.py", "test_shapes.py"]


def run(*command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)


def clean_environment(**extra):
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return dict(environment, **extra)


@pytest.fixture(scope="module")
def wheel():
    return installation().wheel


def test_wheel_install_makes_the_plugin_visible_to_twistd(wheel, tmp_path):
    # A venv of its own: the dependencies come from the package index, as
    # they would for a user, and nothing installed elsewhere can stand in.
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    installed = run(str(python), "-m", "pip", "install", "--disable-pip-version-check", str(wheel))
    assert installed.returncode == 0, installed.stdout + installed.stderr

    clean_env = clean_environment()
    # Run from elsewhere than the repository, so nothing of the source tree is importable.
    origin = run(str(python), "-c", "import collector; print(collector.__file__)",
                 cwd=tmp_path, env=clean_env)
    assert str(env_dir) in origin.stdout, origin.stdout + origin.stderr

    twistd = str(env_dir / "bin" / "twistd")
    listing = run(str(python), twistd, "--help", cwd=tmp_path, env=clean_env)
    assert listing.returncode == 0, listing.stderr
    assert "syslog-collector" in listing.stdout

    options = run(str(python), twistd, "-n", "syslog-collector", "--help", cwd=tmp_path, env=clean_env)
    assert options.returncode == 0, options.stderr
    for option in ("--config", "--udp", "--tcp", "--metrics", "--archive-dir"):
        assert option in options.stdout

    check = run(str(env_dir / "bin" / "syslog-collector"), "check-config",
                str(REPO / "config" / "collector.toml"), cwd=tmp_path, env=clean_env)
    assert check.returncode == 0, check.stderr
    assert 'udp = "5514"' in check.stdout


def test_setup_compiles_the_modules_the_collector_reports_on():
    tree = ast.parse((REPO / "setup.py").read_text())
    (compiled,) = [node.value for node in tree.body
                   if isinstance(node, ast.Assign) and node.targets[0].id == "COMPILED"]
    assert ast.literal_eval(compiled) == [
        module.__name__.replace(".", "/") + ".py" for module in MESSAGE_PATH]


def test_the_message_path_is_installed_compiled_and_passes_its_tests(tmp_path):
    require_binary(sysconfig.get_config_var("CC").split()[0])
    # The installation the process tests run, its python running the tests
    # of the compiled modules too; conftest.py refuses to run unless
    # collector comes compiled from its site-packages.
    python = installation().script("python")
    tests = [str(REPO / "tests" / name) for name in TESTS_OF_THE_MESSAGE_PATH]
    result = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "pythonpath=", *tests,
                 cwd=tmp_path, env=clean_environment(COLLECTOR_TESTS_INSTALLED="1"))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout.splitlines()[-1]

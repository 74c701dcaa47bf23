"""The twistd dropin must be found from a regular wheel install, not only from the source tree."""

import os
import shutil
import subprocess
import sys
import venv

from collector_process import REPO


def run(*command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


def test_wheel_install_makes_the_plugin_visible_to_twistd(tmp_path):
    # Build from a copy, so that the build leaves nothing in the working tree.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source)
    for name in ("collector", "twisted"):
        shutil.copytree(REPO / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__", "dropin.cache"))
    wheels = tmp_path / "wheels"
    built = run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(wheels),
                str(source), cwd=tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("*.whl")

    # A venv of its own: the dependencies come from the package index, as
    # they would for a user, and nothing installed elsewhere can stand in.
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    installed = run(str(python), "-m", "pip", "install", "--disable-pip-version-check", str(wheel))
    assert installed.returncode == 0, installed.stdout + installed.stderr

    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
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

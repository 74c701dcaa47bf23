"""The README's first screen is a contract: its commands must stay the ones CI runs."""

import re

from collector_process import REPO


def readme_commands():
    return re.findall(r"^    (\S.*)$", (REPO / "README.md").read_text().split("## ")[0], re.M)


def test_readme_gives_the_two_commands():
    install, test = readme_commands()
    assert install == "pip install . && twistd -n syslog-collector"
    assert test.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command():
    _, test = readme_commands()
    assert test in (REPO / ".ci" / "run").read_text()

"""The documentation is held to the code: the README's commands are the ones
CI runs, the configuration's documents are rendered from the settings, and
every metric is on the metrics page with its labels."""

import re

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from collector import config_docs
from collector.metrics import CollectorMetrics, SupervisorMetrics, UdpPortDropsCollector
from collector.net.web import HttpMetrics
from collector_process import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = ["configuration", "operations", "archives", "metrics", "architecture", "performance", "development"]


def readme_commands():
    return re.findall(r"^    (\S.*)$", README.read_text().split("\n## ")[0], re.M)


def test_readme_gives_the_two_commands():
    install, test = readme_commands()
    assert install == ("python3 -m venv .venv && . .venv/bin/activate && pip install . "
                       "&& twistd -n syslog-collector")
    assert test.startswith("apt-get update && apt-get install -y ")
    assert test.endswith("&& python3 -m venv .venv && . .venv/bin/activate && pip install '.[test]' "
                         "&& python -m pytest")


def test_ci_runs_the_readme_test_command():
    _, test = readme_commands()
    assert test in (REPO / ".ci" / "run").read_text()


def test_readme_stays_short_and_links_every_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    for page in PAGES:
        assert f"(docs/{page}.md)" in text


@pytest.mark.parametrize("path", [README, REPO / "CHANGELOG.md", *(DOCS / f"{page}.md" for page in PAGES)],
                         ids=lambda path: path.name)
def test_relative_links_lead_to_files_and_headings(path):
    for target, anchor in re.findall(r"\]\(([^)#]*)(?:#([^)]*))?\)", path.read_text()):
        if "://" in target:
            continue
        linked = path.parent / target if target else path
        assert linked.exists(), f"{path.name} links to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(linked), f"{path.name} links to {target}#{anchor}, no such heading"


def anchors(page):
    """The anchors GitHub gives a page's headings."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("path", sorted(config_docs.OUTPUTS))
def test_configuration_documents_are_rendered_from_the_settings(path):
    expected = config_docs.OUTPUTS[path]()
    assert (REPO / path).read_text() == expected, (
        f"{path} disagrees with collector/config.py: run python -m collector.config_docs")


def test_every_setting_and_firewall_key_is_documented():
    config_docs.check_example()
    for section, specs in config_docs.settings():
        assert config_docs.SECTIONS[section]
        for spec in specs:
            doc = spec.metadata["doc"]
            assert doc.endswith(".") and " " in doc, f"{section}.{spec.name}: {doc!r}"


def metric_families():
    """Every family the collector, a supervisor of workers and the metrics
    listener export: name, labels."""
    families = {}
    registry = CollectorRegistry()
    CollectorMetrics(registry, max_hosts=10)
    HttpMetrics(registry)
    supervisor = CollectorRegistry()
    SupervisorMetrics(supervisor, workers=2)
    UdpPortDropsCollector(supervisor)
    for each in (registry, supervisor):
        for collector in list(each._collector_to_names):
            if isinstance(collector, MetricWrapperBase):
                suffix = "_total" if collector._type == "counter" else ""
                families[collector._name + suffix] = set(collector._labelnames)
            else:
                for family in collector.collect():
                    suffix = "_total" if family.type == "counter" else ""
                    families.setdefault(family.name + suffix, {"address"})
    return families


def documented_metrics():
    """The metrics page's table rows: name, labels."""
    rows = {}
    for name, labels in re.findall(r"^\| `(syslog_collector_\w+)` \| \w* \|([^|]*)\|",
                                   (DOCS / "metrics.md").read_text(), re.M):
        rows[name] = set(re.findall(r"`(\w+)`", labels))
    return rows


def test_every_metric_is_documented_with_its_labels():
    assert documented_metrics() == metric_families()

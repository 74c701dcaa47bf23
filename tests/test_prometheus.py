"""The Prometheus and Grafana files, checked with promtool and executed
against a real Prometheus server scraping a real collector."""

import json
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime

import pytest
import yaml

from collector_process import REPO, CollectorProcess
from conftest import require_binary

CONFIG = REPO / "config"
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
# Grafana's variables, as a query for all hosts over the last minutes would expand them.
GRAFANA_VARIABLES = {"$host": ".*", "$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s"}
METRIC_NAME = re.compile(r"\b((?:syslog_collector|process)_[a-z_]+)\b")


def promtool(*args):
    result = subprocess.run([require_binary("promtool"), *args], capture_output=True, text=True,
                            timeout=120, cwd=CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_promtool_checks_the_scrape_config():
    promtool("check", "config", "prometheus.yml")


def test_promtool_checks_the_rules():
    promtool("check", "rules", "alerts.yml")


def test_promtool_unit_tests_cover_every_alert_firing_and_not():
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yml")
    alerts = {rule["alert"] for group in yaml.safe_load((CONFIG / "alerts.yml").read_text())["groups"]
              for rule in group["rules"]}
    tests = yaml.safe_load((CONFIG / "alerts.test.yml").read_text())["tests"]
    firing, quiet = set(), set()
    for test in tests:
        for case in test["alert_rule_test"]:
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    assert firing == alerts
    assert quiet == alerts


def dashboard_queries():
    """(dashboard, panel title, [expressions]) for every panel and annotation."""
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            yield path.name, panel["title"], [t["expr"] for t in panel["targets"]]
        for annotation in board["annotations"]["list"]:
            yield path.name, "annotation: " + annotation["name"], [annotation["expr"]]


def alert_expressions():
    for group in yaml.safe_load((CONFIG / "alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


def expand(expression):
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    return expression


def per_host_metrics():
    """Names of the samples that carry a host label."""
    from collector.hosts import Sender
    from collector.records import Transport
    from helpers import Harness

    harness = Harness()
    lines = [line for lines in TRAFFIC.values() for line in lines]
    harness.pipeline.receive([b"<13>1 2025-11-25T12:00:00Z gw app - - - " + line for line in lines],
                           Sender.from_address("192.0.2.1", 1), Transport.UDP)
    harness.metrics.publish()
    return {sample.name for family in harness.registry.collect() for sample in family.samples
            if "host" in sample.labels}


def test_dashboards_are_current_grafana_json_on_the_provisioned_datasource():
    datasources = yaml.safe_load(
        (REPO / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    provider = yaml.safe_load(
        (REPO / "grafana" / "provisioning" / "dashboards" / "syslog-collector.yml").read_text())
    assert provider["providers"][0]["type"] == "file"
    titles = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        titles.add(board["title"])
        assert board["schemaVersion"] >= 39
        assert board["uid"]
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["host"]["datasource"]["uid"] in uids
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] in uids, panel["title"]
            assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in uids
                # The host variable filters everything that has a host.
                for name in METRIC_NAME.findall(target["expr"]):
                    if name in per_host_metrics():
                        assert f'{name}{{host=~"$host"' in target["expr"], (panel["title"], target["expr"])
        for annotation in board["annotations"]["list"]:
            assert annotation["datasource"]["uid"] in uids
    assert titles == {"Firewall security", "Collector health"}


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-workers"])
def workers(request):
    return request.param


@pytest.fixture(scope="module")
def collector(tmp_path_factory, workers):
    """A collector in one process, or a supervisor serving the metrics of two workers."""
    workdir = tmp_path_factory.mktemp("prometheus-collector")
    config = workdir / "collector.toml"
    # A registered firewall that sends nothing: the counters labelled by
    # registered firewalls (impersonations) exist from the start.
    config.write_text(f"[workers]\ncount = {workers}\n"
                      '[[firewall]]\nname = "fw-registered"\naddresses = ["192.0.2.1"]\n')
    process = CollectorProcess(workdir, config=str(config))
    yield process
    process.kill()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def prometheus(collector, tmp_path_factory):
    binary = require_binary("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(CONFIG / "alerts.yml")],
        "scrape_configs": [{"job_name": "syslog-collector", "static_configs": [
            {"targets": [f"127.0.0.1:{collector.ports['metrics']}"]}]}],
    }))
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(workdir / "prometheus.log", "wb"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("prometheus did not start: " + (workdir / "prometheus.log").read_text())
        time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(30)


def query(prometheus, expression):
    url = prometheus + "/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    assert body["status"] == "success", (expression, body)
    return body["data"]["result"]


# Sent twice, some seconds apart, so that rates over the last minute are not zero.
TRAFFIC = {
    "fw-alpha": [b"Engine: Startup.",
                 b"Authentication: WebAdmin: Client: 192.0.2.7: Invalid password for user admin",
                 b"Anti-Spoofing: Packet from LAN, proto:TCP, len:48, ip/port:10.0.0.1:1864 -> "
                 b"195.39.55.10:445, flags: SYN, seq:1 ack:0, win:16384, tcplen:0",
                 b"FTP: Bounce attack attempt: client: 1.2.3.4, server: 5.6.7.8, command: PORT 1,2,3,4,5,6"],
    "fw-beta": [b"IPS: Packet drop, severity: High, Rule ID: 1:2010575 X, proto:TCP, "
                b"ip/port:198.51.100.71:80 > 192.168.48.140:50211",
                b"FTP: Malicious server reply: client: 1.2.3.4, server: 5.6.7.8, response: 227 x",
                b"PERMIT 'Local traffic' packet to LAN, proto:TCP, len:52",
                b"Authentication: HTTP Proxy: Client: 2001:db8::1a: User jdoe doesn't exist"],
    "fw-gamma": [b"Engine: Shutdown.", b"<garbage without a header"],
}


def send_traffic(collector):
    # Stamped now, so that each firewall's clock skew is sampled.
    now = datetime.now(UTC).isoformat(timespec="microseconds").encode()
    collector.send_udp([b"<116>1 %s %s security - - - %s" % (now, host.encode(), line)
                        for host, lines in TRAFFIC.items() for line in lines])


def wait_for_value(prometheus, expression, expected, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = query(prometheus, expression)
        if result and float(result[0]["value"][1]) == expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"{expression} did not reach {expected}: {query(prometheus, expression)}")


@pytest.fixture(scope="module")
def traffic(collector, prometheus):
    """TRAFFIC sent twice, some seconds apart, and scraped."""
    total = sum(len(lines) for lines in TRAFFIC.values())
    send_traffic(collector)
    wait_for_value(prometheus, "sum(syslog_collector_records_total)", total)
    time.sleep(3)
    send_traffic(collector)
    wait_for_value(prometheus, "sum(syslog_collector_records_total)", 2 * total)
    time.sleep(2)


# Exported only by a supervisor of workers.
WORKERS_ONLY = {"syslog_collector_worker_connections", "syslog_collector_worker_restarts_total"}


def test_every_metric_used_by_dashboards_and_alerts_is_exported(collector, workers, traffic):
    # Once traffic has flowed: in multiprocess mode a metric shows only once a worker wrote it.
    body = collector.scrape()
    exported = set(re.findall(r"^# HELP (\S+)", body, re.M))
    # Counters come without a "_created" series, in either mode.
    assert re.findall(r"^\w+_created\b", body, re.M) == []
    used = set()
    for _, _, expressions in dashboard_queries():
        for expression in expressions:
            used |= set(METRIC_NAME.findall(expression))
    for _, expression in alert_expressions():
        used |= set(METRIC_NAME.findall(expression))
    assert used - exported == (WORKERS_ONLY if workers == 1 else set())
    assert len(used) > 20


def test_every_dashboard_and_alert_query_runs_and_panels_fill(prometheus, workers, traffic):
    empty = []
    for dashboard, title, expressions in dashboard_queries():
        results = [query(prometheus, expand(e)) for e in expressions]
        if not any(results):
            empty.append(f"{dashboard}: {title}")
    assert empty == []
    # Every process has its own CPU series, and with workers each has its connections.
    supervised = workers if workers > 1 else 0
    assert len(query(prometheus, "process_cpu_seconds_total")) == 1 + supervised
    assert len(query(prometheus, "syslog_collector_worker_connections")) == supervised

    for _alert, expression in alert_expressions():
        query(prometheus, expression)  # valid; firing or not is promtool's part

    per_host = {r["metric"]["host"]: float(r["value"][1]) for r in query(
        prometheus, expand('sum by (host) (syslog_collector_records_total{host=~"$host"})'))}
    assert per_host == {host: 2.0 * len(lines) for host, lines in TRAFFIC.items()}
    by_type = {(r["metric"]["host"], r["metric"]["type"]): float(r["value"][1]) for r in query(
        prometheus, 'syslog_collector_records_total{host="fw-beta"}')}
    assert by_type[("fw-beta", "ips")] == 2.0 and by_type[("fw-beta", "unknown")] == 2.0
    assert by_type[("fw-beta", "engine_startup")] == 0.0

    with urllib.request.urlopen(prometheus + "/api/v1/rules", timeout=10) as response:
        groups = json.load(response)["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == len(list(alert_expressions()))
    assert all(rule["health"] == "ok" for rule in rules), rules
    firing = {alert["labels"]["alertname"] for rule in rules for alert in rule.get("alerts", [])}
    assert "FirewallEngineRestarted" in firing
    assert "FirewallFtpBounceAttack" in firing

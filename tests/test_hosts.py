import ipaddress

import pytest

from collector.config import Firewall, UnregisteredPolicy
from collector.hosts import HostRegistry, normalize_ip, sanitize_host

HQ = Firewall(name="hq-gw", networks=(ipaddress.ip_network("192.0.2.0/28"),),
              hostnames=("gw.hq.example.com",))
RELAY = Firewall(name="relay", networks=(ipaddress.ip_network("2001:db8::10/128"),), relay=True)


@pytest.mark.parametrize("hostname, tag", [
    ("gw.example.com", "gw.example.com"),
    ("GW-Branch_1", "gw-branch_1"),
    ("10.0.0.99", "10.0.0.99"),
    ("2001:db8::1", "2001:db8::1"),
    ("../../etc", None),
    ("..%2f..%2fetc", None),
    ("/etc/passwd", None),
    ("a/b", None),
    ("a\\b", None),
    (".hidden", None),
    ("a..b", None),
    ("", None),
    ("nul\x00byte", None),
    ("tab\there", None),
    ("\u212aelvin", None),  # KELVIN SIGN folds to "k": refused before folding
    ("gw\u2215etc", None),  # DIVISION SLASH
    ("x" * 253, "x" * 253),
    ("x" * 254, None),
    # A directory named like an option would be one to a shell command run in the root.
    ("-rf", None),
    ("-", None),
    ("--help", None),
    ("gw-1-", "gw-1-"),
    (".", None),
    ("..", None),
])
def test_sanitize_host(hostname, tag):
    assert sanitize_host(hostname) == tag


def test_ipv4_mapped_senders_are_ipv4():
    assert normalize_ip("::ffff:192.0.2.5") == "192.0.2.5"
    assert normalize_ip("2001:DB8::1") == "2001:db8::1"


def test_registered_firewall_is_named_by_the_registry():
    registry = HostRegistry((HQ, RELAY), UnregisteredPolicy.ACCEPT)
    host = registry.resolve("192.0.2.3", "gw.hq.example.com")
    assert (host.name, host.firewall, host.hostname_mismatch) == ("hq-gw", HQ, False)
    assert not registry.resolve("192.0.2.3", "hq-gw.example.com").hostname_mismatch
    assert not registry.resolve("192.0.2.3", None).hostname_mismatch


def test_hostname_that_disagrees_with_the_registry_is_a_mismatch():
    registry = HostRegistry((HQ,), UnregisteredPolicy.ACCEPT)
    host = registry.resolve("192.0.2.3", "branch-gw")
    assert host.name == "hq-gw" and host.hostname_mismatch


def test_relay_passes_on_the_hostname():
    registry = HostRegistry((HQ, RELAY), UnregisteredPolicy.ACCEPT)
    assert registry.resolve("2001:db8::10", "Branch-GW").name == "branch-gw"
    assert registry.resolve("2001:db8::10", None).name == "relay"
    assert registry.resolve("2001:db8::10", "../etc").name == "relay"


def test_unregistered_senders_are_named_by_hostname_or_address():
    registry = HostRegistry((HQ,), UnregisteredPolicy.ACCEPT)
    assert registry.accepts("198.51.100.7")
    assert registry.resolve("198.51.100.7", "Branch").name == "branch"
    assert registry.resolve("198.51.100.7", None).name == "198.51.100.7"
    assert registry.resolve("198.51.100.7", "../../etc").name == "198.51.100.7"
    assert registry.resolve("2001:db8::99", "..").name == "2001:db8::99"


def test_refuse_policy():
    registry = HostRegistry((HQ,), UnregisteredPolicy.REFUSE)
    assert registry.accepts("192.0.2.15")
    assert not registry.accepts("192.0.2.16")


def test_a_hostname_like_an_option_is_tagged_with_the_sender():
    registry = HostRegistry((HQ, RELAY), UnregisteredPolicy.ACCEPT)
    assert registry.resolve("198.51.100.7", "-rf").name == "198.51.100.7"
    assert registry.resolve("2001:db8::10", "-rf").name == "relay"

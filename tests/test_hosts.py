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


GW1 = Firewall(name="gw1", networks=(ipaddress.ip_network("127.0.3.2/32"),), hostnames=("gw1-alias",))
GW2 = Firewall(name="gw2", networks=(ipaddress.ip_network("127.0.3.3/32"),))
FORWARDER = Firewall(name="forwarder", networks=(ipaddress.ip_network("127.0.3.4/32"),), relay=True)


@pytest.mark.parametrize("hostname", ["gw1", "GW1", "gw1.example.com", "gw1-alias"])
def test_another_sender_cannot_use_a_firewalls_names(hostname):
    registry = HostRegistry((GW1, GW2), UnregisteredPolicy.ACCEPT)
    host = registry.resolve("127.0.3.9", hostname)
    assert (host.name, host.firewall, host.impersonated) == ("127.0.3.9", None, GW1)
    # Its own firewall's name, and a mismatch besides, when the sender is registered.
    host = registry.resolve("127.0.3.3", hostname)
    assert (host.name, host.hostname_mismatch, host.impersonated) == ("gw2", True, GW1)


def test_the_firewall_itself_and_relays_use_its_names():
    registry = HostRegistry((GW1, FORWARDER), UnregisteredPolicy.ACCEPT)
    for hostname in ("gw1", "gw1.example.com", "gw1-alias"):
        assert registry.resolve("127.0.3.2", hostname) == registry.resolve("127.0.3.2", None)
    host = registry.resolve("127.0.3.4", "gw1")
    assert (host.name, host.firewall, host.impersonated) == ("gw1", FORWARDER, None)


def test_names_that_are_nobodys_are_not_impersonations():
    registry = HostRegistry((GW1, GW2), UnregisteredPolicy.ACCEPT)
    for hostname in ("gw10", "xgw1", "gw", "gw1x.example.com", "127.0.3.2"):
        host = registry.resolve("127.0.3.9", hostname)
        assert host.impersonated is None and host.name == hostname
    # A registered firewall naming an unregistered host: a mismatch only.
    host = registry.resolve("127.0.3.2", "elsewhere")
    assert host.hostname_mismatch and host.impersonated is None


def test_unregistered_host_tags_are_bounded():
    registry = HostRegistry((GW1, FORWARDER), UnregisteredPolicy.ACCEPT, max_unregistered=3)
    assert [registry.resolve("198.51.100.7", h).name for h in ("a", "b", None)] == ["a", "b", "198.51.100.7"]
    assert registry.unregistered_tags == 3
    host = registry.resolve("198.51.100.7", "d")
    assert (host.name, host.overflow) == ("unregistered", True)
    # Tags already given out stay; registered firewalls and relays' own are never bounded.
    assert not registry.resolve("198.51.100.8", "a").overflow
    assert registry.resolve("127.0.3.2", "whatever").name == "gw1"
    assert registry.resolve("127.0.3.4", "gw1").name == "gw1"
    assert registry.resolve("127.0.3.4", None).name == "forwarder"
    # What a relay passes on for unregistered firewalls is bounded too.
    host = registry.resolve("127.0.3.4", "branch9")
    assert (host.name, host.firewall, host.overflow) == ("unregistered", FORWARDER, True)
    # An impersonating sender's messages go to its address tag, which is bounded as well.
    host = registry.resolve("198.51.100.9", "gw1")
    assert (host.name, host.impersonated, host.overflow) == ("unregistered", GW1, True)
    assert registry.unregistered_tags == 3


def test_no_unregistered_host_tags_at_all():
    registry = HostRegistry((), UnregisteredPolicy.ACCEPT, max_unregistered=0)
    assert registry.resolve("198.51.100.7", "a").name == "unregistered"
    assert registry.resolve("198.51.100.7", "unregistered").overflow is False


def test_a_new_registry_takes_over_the_tags_given_out():
    old = HostRegistry((), UnregisteredPolicy.ACCEPT, max_unregistered=2)
    assert [old.resolve("198.51.100.7", h).name for h in ("a", "gw1", "c")] == ["a", "gw1", "unregistered"]
    # A reload registers gw1: its tag is the firewall's now, and frees its place.
    new = HostRegistry((GW1,), UnregisteredPolicy.ACCEPT, max_unregistered=2, previous=old)
    assert new.unregistered_tags == 1
    assert [new.resolve("198.51.100.7", h).name for h in ("a", "c", "e")] == ["a", "c", "unregistered"]
    # Without the previous registry, a reload would make room for as many again.
    assert HostRegistry((), UnregisteredPolicy.ACCEPT, 2).resolve("198.51.100.7", "e").name == "e"


HQ_BOUND = Firewall(name="hq", networks=(ipaddress.ip_network("127.0.4.1/32"),), tls_subject="hq-gw")
BRANCH_BOUND = Firewall(name="branch", networks=(ipaddress.ip_network("192.0.2.0/24"),), tls_subject="branch-gw")
PLAIN = Firewall(name="plain", networks=(ipaddress.ip_network("127.0.4.2/32"),))
BOUND_RELAY = Firewall(name="bound-relay", networks=(ipaddress.ip_network("127.0.4.4/32"),), relay=True,
                       tls_subject="relay-gw")


@pytest.mark.parametrize("sender, subject, refusal, firewall, impersonated", [
    # A bound certificate from its firewall's address, or a relay's.
    ("127.0.4.1", "hq-gw", None, HQ_BOUND, None),
    ("127.0.3.4", "hq-gw", None, HQ_BOUND, None),
    ("127.0.3.4", "branch-gw", None, BRANCH_BOUND, None),
    # From anywhere else it is refused, and counts as using that firewall's name.
    ("127.0.4.9", "hq-gw", "tls_subject_mismatch", None, HQ_BOUND),
    ("127.0.4.2", "hq-gw", "tls_subject_mismatch", None, HQ_BOUND),
    ("127.0.4.1", "branch-gw", "tls_subject_mismatch", None, BRANCH_BOUND),
    # A relay bound to a certificate of its own takes only that one.
    ("127.0.4.4", "hq-gw", "tls_subject_mismatch", None, HQ_BOUND),
    ("127.0.4.4", "relay-gw", None, BOUND_RELAY, None),
    # A bound firewall's addresses need its certificate, whatever the other one is.
    ("127.0.4.1", "someone", "tls_subject_mismatch", None, None),
    ("127.0.4.1", None, "tls_subject_mismatch", None, None),
    # A certificate bound to none is tagged by the sender's address.
    ("127.0.4.2", "someone", None, PLAIN, None),
    ("127.0.4.9", "someone", None, None, None),
])
def test_tls_binding(sender, subject, refusal, firewall, impersonated):
    registry = HostRegistry((HQ_BOUND, BRANCH_BOUND, PLAIN, FORWARDER, BOUND_RELAY), UnregisteredPolicy.ACCEPT)
    binding = registry.tls_binding(sender, subject)
    assert (binding.refusal, binding.firewall, binding.impersonated) == (refusal, firewall, impersonated)


def test_tls_binding_refuses_unregistered_senders_under_that_policy():
    registry = HostRegistry((HQ_BOUND, PLAIN), UnregisteredPolicy.REFUSE)
    assert registry.tls_binding("127.0.4.9", "someone").refusal == "unregistered"
    assert registry.tls_binding("127.0.4.9", "hq-gw").refusal == "tls_subject_mismatch"
    assert registry.tls_binding("127.0.4.2", None).firewall == PLAIN


def test_a_hostname_like_an_option_is_tagged_with_the_sender():
    registry = HostRegistry((HQ, RELAY), UnregisteredPolicy.ACCEPT)
    assert registry.resolve("198.51.100.7", "-rf").name == "198.51.100.7"
    assert registry.resolve("2001:db8::10", "-rf").name == "relay"


DOTTED = Firewall(name="branch.example.com", networks=(ipaddress.ip_network("127.0.3.5/32"),),
                  hostnames=("gw.hq.example.com",))


@pytest.mark.parametrize("hostname", ["gw.hq.example.com.", "GW.HQ.EXAMPLE.COM.", "branch.example.com.",
                                      "branch", "BRANCH", "branch.elsewhere.org", "branch:514", "branch:"])
def test_a_firewalls_names_are_its_own_in_every_spelling(hostname):
    registry = HostRegistry((DOTTED,), UnregisteredPolicy.ACCEPT)
    host = registry.resolve("127.0.3.9", hostname)
    assert (host.name, host.impersonated) == ("127.0.3.9", DOTTED)
    # The firewall itself, spelling its names so, is no mismatch.
    host = registry.resolve("127.0.3.5", hostname)
    assert (host.name, host.hostname_mismatch) == ("branch.example.com", False)

"""The configuration's documents, generated from the settings themselves.

``config/collector.toml`` (every setting with its default, each with its doc
as a comment) and ``docs/configuration.md`` (the same as a reference page)
are both rendered from the dataclass fields of ``collector.config``: a
field's ``metadata["doc"]`` says what it does and ``metadata["raw"]`` is its
default as TOML writes it. What is not a field (the section texts, the
``[[firewall]]`` keys and example) is here. ``tests/test_docs.py`` renders
both again and compares them byte for byte, so neither can drift from the
code:

    python -m collector.config_docs          # rewrite both files
    python -m collector.config_docs --check  # exit status 1 if either is stale

Docs are plain sentences; `backticks` mark code, which the page keeps and
the TOML comments drop.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import tomllib
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from collector import config
from collector.checks import OVERRIDES

# The source tree's root, where the generated files live.
ROOT = Path(__file__).resolve().parent.parent
TOML_PATH = "config/collector.toml"
PAGE_PATH = "docs/configuration.md"
WIDTH = 79

# What each section is for, before its keys.
SECTIONS = {
    "listen": (
        "Where syslog and HTTP are received. An address is `\"PORT\"` (every IPv4 interface), "
        "`\"HOST:PORT\"` or `\"[IPV6]:PORT\"`; `\"[::]:PORT\"` takes IPv6 and, on Linux, IPv4 too. Port "
        "`0` picks a free port, and the port bound is logged at start-up; `\"\"` disables the listener."
    ),
    "tls": (
        "Syslog over TLS (RFC 5425): octet-counted frames, and LF-framed ones too. Whatever the "
        "settings, the collector speaks TLS 1.3, and TLS 1.2 with ECDHE key exchange and AEAD ciphers "
        "(AES-GCM, ChaCha20-Poly1305) only. A failed handshake (no certificate, an untrusted or revoked "
        "one, no common protocol or cipher) is counted in "
        "`syslog_collector_refused_connections_total{reason=\"tls_handshake\"}`."
    ),
    "limits": (
        "What senders may take. A sender is a registered firewall's address, or for any other address "
        "its network (`limits.sender_prefix_ipv4`, `limits.sender_prefix_ipv6`). Refused connections are "
        "counted in `syslog_collector_refused_connections_total` and closed ones in "
        "`syslog_collector_closed_connections_total`, by reason; both are logged at most every 10 s. "
        "With several workers the connection limits hold for all of them together."
    ),
    "workers": "Several processes share the work, to use more than one core; one does it all by default.",
    "archive": (
        "The per-host archives: `<dir>/<host>/<YYYY-MM-DD>.log`, one received message a line, "
        "appended to."
    ),
    "syslog": "How syslog headers are read.",
    "hosts": (
        "Which senders are taken, and how their messages are tagged. Re-read on SIGHUP, with the "
        "`[[firewall]]` registry."
    ),
    "metrics": "Bounds on the label values of `/metrics`, whatever senders write.",
}

# Pages that say more about a section, linked from the configuration page only.
SEE_ALSO = {
    "listen": "[Operations](operations.md)",
    "tls": "[Operations: TLS](operations.md#tls)",
    "limits": "[Operations: limits against abusive senders](operations.md#limits-against-abusive-senders)",
    "workers": "[Operations: several worker processes](operations.md#several-worker-processes)",
    "archive": "[Archives](archives.md)",
    "hosts": "[Operations: firewalls and host tags](operations.md#firewalls-and-host-tags)",
    "metrics": "[Metrics](metrics.md)",
}

FIREWALL = (
    "The registry of firewalls, none by default: one `[[firewall]]` table each. A message from a "
    "listed address is tagged with the firewall's name whatever its HOSTNAME says; a HOSTNAME that is "
    "none of its names is counted in `syslog_collector_hostname_mismatches_total`. Its names are its "
    "`name`, its `hostnames`, and any HOSTNAME whose first label (up to a `.` or `:`) is its name's, "
    "compared without case or a trailing dot. They are the firewall's own: from any other "
    "sender but a relay they are not taken, the message is tagged as that sender's own (its address, "
    "or its own firewall's name), and counted in `syslog_collector_impersonations_total` under the "
    "firewall named. Re-read on SIGHUP."
)

# The keys of a [[firewall]] table: (key, default, doc). None: required.
FIREWALL_KEYS = (
    ("name", None,
     "The firewall's host tag: its archive directory and `host` label value. Lower-case ASCII letters, "
     "digits, `.`, `_`, `:` and `-`, beginning with a letter or digit, at most 63 characters; one "
     "firewall's only. Not `unregistered`, `other` or an IP address: those are tags the collector "
     "gives other senders."),
    ("addresses", None,
     "Its addresses: a non-empty list of IP addresses and CIDR networks (without host bits). Every "
     "message from them is tagged with `name`. IPv4-mapped IPv6 addresses are read as IPv4, as "
     "senders' are."),
    ("hostnames", "[]",
     "HOSTNAMEs it may write besides its name and those whose first label is its name's."),
    ("timezone", "`syslog.timezone`", "Zone of its RFC 3164 timestamps."),
    ("relay", "false",
     "An rsyslog forwarder, say: trusted to pass on the HOSTNAME of the firewall each message comes "
     "from, which then tags the message."),
    ("tls_subject", "none",
     "Subject CN of its TLS client certificate (with `tls.verify_clients`). That certificate then "
     "speaks for this firewall only, from its addresses or a relay's (from anywhere else it is refused "
     "and counted as an impersonation), and from this firewall's addresses only that certificate is "
     "taken."),
)

# The example registry, as TOML: the collector.toml shows it commented out.
FIREWALL_EXAMPLE = """\
[[firewall]]
name = "hq-gw"                              # lower case: letters, digits, . _ : -
addresses = ["192.0.2.1", "198.51.100.0/28", "2001:db8::/64"]
hostnames = ["gw.hq.example.com"]           # HOSTNAMEs it may use besides its name
timezone = "Europe/Prague"                  # its RFC 3164 timestamps' zone
tls_subject = "hq-gw.example.com"           # CN of its TLS client certificate

[[firewall]]
name = "relay"
addresses = ["192.0.2.10"]
relay = true        # an rsyslog forwarder: the HOSTNAME of each message names the firewall
"""


def settings() -> list[tuple[str, list[Field[Any]]]]:
    """Each section's name and its settings, in the order of the code."""
    return [(name, list(fields(cls))) for name, cls in config._SECTIONS.items()]


def default_of(spec: Field[Any]) -> str:
    """A setting's default as TOML writes it."""
    return config._toml_value(spec.metadata["raw"])


def _plain(text: str) -> str:
    return text.replace("`", "")


def _comment(text: str) -> list[str]:
    """``text`` as TOML comment lines, paragraphs kept apart."""
    lines: list[str] = []
    for paragraph in text.split("\n\n"):
        if lines:
            lines.append("#")
        lines += textwrap.wrap(_plain(paragraph), WIDTH, initial_indent="# ", subsequent_indent="# ",
                               break_long_words=False, break_on_hyphens=False)
    return lines


def config_toml() -> str:
    """``config/collector.toml``: every setting, with its doc and its default."""
    overrides = ", ".join(f"--{option}" for option in OVERRIDES)
    lines = [
        "# syslog-collector configuration: every setting, with its default.",
        "# Run the collector with:   twistd -n syslog-collector --config config/collector.toml",
        "# Check a file with:        syslog-collector check-config config/collector.toml",
        f"# Command-line options ({overrides}) override this file.",
        "# Generated from collector/config.py by python -m collector.config_docs, as is",
        "# docs/configuration.md: edit the docs there.",
    ]
    for section, specs in settings():
        lines += ["", f"[{section}]"]
        lines += _comment(SECTIONS[section])
        for spec in specs:
            lines.append("")
            lines += _comment(spec.metadata["doc"])
            lines.append(f"{spec.name} = {default_of(spec)}")
    lines += [""] + _comment(FIREWALL)
    for key, default, doc in FIREWALL_KEYS:
        shown = "required" if default is None else f"default {_plain(default)}"
        lines += ["#"] + _comment(f"{key} ({shown}): {doc}")
    lines += ["#", "# For example:", "#"]
    lines += [("# " + line).rstrip() for line in FIREWALL_EXAMPLE.splitlines()]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    if "|" in text or "\n" in text:
        raise ValueError(f"a table cell holds no '|' and no newline: {text!r}")
    return text


def configuration_markdown() -> str:
    """``docs/configuration.md``: every setting, its default and its meaning."""
    out = [
        "# Configuration",
        "",
        "<!-- Generated from collector/config.py by `python -m collector.config_docs`: "
        "edit the docs there, not this page. -->",
        "",
        "Every setting has a default, so no file is needed. `twistd -n syslog-collector --config FILE` "
        "reads a TOML file of the sections below; [`config/collector.toml`](../config/collector.toml) "
        "holds every setting with its default (and loads to exactly the defaults), for a copy to start "
        "from. Command-line options override the file:",
        "",
        "| option | overrides |",
        "|---|---|",
    ]
    for option, key in OVERRIDES.items():
        value = "DIR" if key == "archive.dir" else "ADDR"
        out.append(f"| `--{option} {value}` | `{key}` |")
    out += [
        "",
        "A bad configuration (an unknown key, a wrong type, a bad port or CIDR, an archive root that "
        "cannot be written, a TLS certificate or key that does not load) stops the collector before it "
        "listens, with exit status 1 and a line naming the key and the problem:",
        "",
        "    twistd -n: configuration error: archive.flush_interval_seconds: expected a positive number "
        "of seconds, got -1",
        "",
        "`syslog-collector check-config FILE` checks a file the same way (creating the archive root if "
        "it is missing, as the server would) and prints the effective settings. SIGHUP re-reads "
        "`[[firewall]]`, `hosts.unregistered`, `hosts.max_unregistered` and the file of `tls.crl`; "
        "every other setting takes effect at the next start.",
    ]
    for section, specs in settings():
        out += ["", f"## [{section}]", "", SECTIONS[section]]
        if section in SEE_ALSO:
            out[-1] += f" More in {SEE_ALSO[section]}."
        out += ["", "| key | default | meaning |", "|---|---|---|"]
        for spec in specs:
            out.append(f"| `{section}.{spec.name}` | `{default_of(spec)}` | {_cell(spec.metadata['doc'])} |")
    out += ["", "## [[firewall]]", "", FIREWALL, "", "| key | default | meaning |", "|---|---|---|"]
    for key, default, doc in FIREWALL_KEYS:
        shown = ("required" if default is None else default if default.startswith("`") or default == "none"
                 else f"`{default}`")
        out.append(f"| `{key}` | {shown} | {_cell(doc)} |")
    out += ["", "For example:", "", "```toml", FIREWALL_EXAMPLE.rstrip("\n"), "```",
            "", "More in [Operations: firewalls and host tags](operations.md#firewalls-and-host-tags)."]
    return "\n".join(out) + "\n"


OUTPUTS = {TOML_PATH: config_toml, PAGE_PATH: configuration_markdown}


def check_example() -> None:
    """The example registry must load, with every key of a firewall in it."""
    loaded = config.from_dict(tomllib.loads(FIREWALL_EXAMPLE))
    assert len(loaded.firewalls) == 2
    documented = {key for key, _, _ in FIREWALL_KEYS}
    assert documented == config._FIREWALL_KEYS, documented ^ config._FIREWALL_KEYS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render config/collector.toml and docs/configuration.md "
                                                 "from collector/config.py.")
    parser.add_argument("--check", action="store_true", help="only say whether they are up to date")
    parser.add_argument("--root", type=Path, default=ROOT, help="the source tree (default: %(default)s)")
    args = parser.parse_args(argv)
    check_example()
    stale = []
    for path, render in OUTPUTS.items():
        target = args.root / path
        text = render()
        if target.exists() and target.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    if args.check and stale:
        print(f"stale: {', '.join(stale)}: run python -m collector.config_docs", file=sys.stderr)
        return 1
    for path in stale:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

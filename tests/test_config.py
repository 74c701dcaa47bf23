import ipaddress
import socket
import subprocess
from datetime import UTC
from pathlib import Path

import pytest

from collector import config
from collector.cli import main as cli_main
from collector.config import Config, ConfigError, ListenAddress, UnregisteredPolicy
from collector_process import REPO, collector_environment, twistd

EXAMPLE = REPO / "config" / "collector.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(text)
    return path


def test_defaults_need_no_file():
    loaded = config.load()
    assert loaded == Config()
    assert loaded.listen.udp == ListenAddress("", 5514)
    assert loaded.listen.tcp == ListenAddress("", 5514)
    assert loaded.listen.metrics == ListenAddress("", 9514)
    assert loaded.archive.dir == Path("archive")
    assert loaded.archive.flush_interval_seconds == 1.0
    assert loaded.archive.timezone is UTC
    assert loaded.hosts.unregistered is UnregisteredPolicy.ACCEPT
    assert loaded.metrics.max_hosts == 1000


def test_example_file_documents_exactly_the_defaults():
    assert config.load(EXAMPLE) == Config()


def test_every_setting_appears_in_the_example_file():
    text = EXAMPLE.read_text()
    for line in config.describe(Config()).splitlines():
        if line and not line.startswith("["):
            assert line in text, f"{line!r} missing from {EXAMPLE.name}"


@pytest.mark.parametrize("text, address", [
    ("0", ListenAddress("", 0)),
    ("5514", ListenAddress("", 5514)),
    ("127.0.0.1:514", ListenAddress("127.0.0.1", 514)),
    ("[::1]:6514", ListenAddress("::1", 6514)),
    ("[::]:0", ListenAddress("::", 0)),
    ("", None),
])
def test_listen_addresses(text, address):
    assert config.parse_listen_address(text) == address


@pytest.mark.parametrize("text", ["65536", "-1", "abc", "::1:514", "[::1]514", "[1.2.3.4]:5",
                                  "localhost:514", "1.2.3.4:", "[::1]:x"])
def test_bad_listen_addresses(text):
    with pytest.raises(ValueError):
        config.parse_listen_address(text)


def test_firewall_registry(tmp_path):
    loaded = config.load(write(tmp_path, """
[[firewall]]
name = "hq-gw"
addresses = ["192.0.2.1", "198.51.100.0/28", "2001:db8::/64"]
hostnames = ["GW.hq.example.com"]
timezone = "Europe/Prague"

[[firewall]]
name = "relay"
addresses = ["192.0.2.10"]
relay = true
"""))
    hq, relay = loaded.firewalls
    assert hq.name == "hq-gw"
    assert hq.networks == (ipaddress.ip_network("192.0.2.1/32"), ipaddress.ip_network("198.51.100.0/28"),
                           ipaddress.ip_network("2001:db8::/64"))
    assert hq.hostnames == ("gw.hq.example.com",)
    assert str(hq.timezone) == "Europe/Prague"
    assert not hq.relay and relay.relay


@pytest.mark.parametrize("text, key, problem", [
    ("bogus = 1", "bogus", "unknown key"),
    ("[bogus]\nx = 1", "bogus", "unknown section"),
    ("[listen]\nudpp = '514'", "listen.udpp", "unknown key"),
    ("[listen]\nudp = 514.5", "listen.udp", "expected PORT"),
    ("[listen]\ntcp = '99999'", "listen.tcp", "bad port"),
    ("[listen]\nmetrics = 'x:1'", "listen.metrics", "bad address"),
    ("[listen]\nmax_frame_bytes = 0", "listen.max_frame_bytes", "positive integer"),
    ("[listen]\nmax_frame_bytes = true", "listen.max_frame_bytes", "positive integer"),
    ("[archive]\nflush_interval_seconds = -1", "archive.flush_interval_seconds", "positive number"),
    ("[archive]\nflush_interval_seconds = '1'", "archive.flush_interval_seconds", "number of seconds"),
    ("[listen]\nudp_read_interval_seconds = -0.01", "listen.udp_read_interval_seconds", "0 or more"),
    ("[listen]\ntcp_receive_buffer_bytes = -1", "listen.tcp_receive_buffer_bytes", "0 or more"),
    ("[archive]\nfsync = 'yes'", "archive.fsync", "true or false"),
    ("[archive]\ntimezone = 'Mars/Olympus'", "archive.timezone", "unknown time zone"),
    ("[hosts]\nunregistered = 'maybe'", "hosts.unregistered", "'accept', 'refuse'"),
    ("[archive]\ndir = 5", "archive.dir", "directory path"),
    ("listen = 5", "listen", "expected a table"),
    ("[[firewall]]\nname = 'a'\naddresses = ['10.0.0.0/33']", "firewall[0].addresses[0]", "CIDR"),
    ("[[firewall]]\nname = 'a'\naddresses = ['10.0.0.1/24']", "firewall[0].addresses[0]", "host bits"),
    ("[[firewall]]\nname = 'a'\naddresses = ['gw.example.com']", "firewall[0].addresses[0]", "CIDR"),
    ("[[firewall]]\nname = 'a'\naddresses = []", "firewall[0].addresses", "non-empty"),
    ("[[firewall]]\naddresses = ['10.0.0.1']", "firewall[0].name", "missing"),
    ("[[firewall]]\nname = '../etc'\naddresses = ['10.0.0.1']", "firewall[0].name", "lower-case"),
    ("[[firewall]]\nname = 'a'\naddresses = ['10.0.0.1']\nport = 1", "firewall[0].port", "unknown key"),
    ("[[firewall]]\nname = 'a'\naddresses = ['10.0.0.1']\n[[firewall]]\nname = 'a'\naddresses = ['10.0.0.2']",
     "firewall[1].name", "already"),
    ("[listen\nudp = 1", None, "not valid TOML"),
])
def test_bad_config_names_key_and_problem(tmp_path, text, key, problem):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        config.load(path)
    assert error.value.key == (key or str(path))
    assert problem in error.value.problem


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.toml")


def test_overrides_win_over_the_file(tmp_path):
    path = write(tmp_path, "[listen]\nudp = '1514'\ntcp = '1514'\n")
    loaded = config.load(path, {"listen.udp": "", "listen.tcp": "127.0.0.1:0"})
    assert loaded.listen.udp is None
    assert loaded.listen.tcp == ListenAddress("127.0.0.1", 0)


def test_unwritable_archive_dir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as error:
        config.check_archive_dir(config.load(overrides={"archive.dir": str(blocker / "archive")}))
    assert error.value.key == "archive.dir"


def test_archive_dir_is_created(tmp_path):
    root = tmp_path / "deep" / "archive"
    config.check_archive_dir(config.load(overrides={"archive.dir": str(root)}))
    assert root.is_dir() and not list(root.iterdir())


def test_check_config_prints_effective_settings(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "[archive]\nflush_interval_seconds = 2.5\n")
    assert cli_main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "flush_interval_seconds = 2.5" in out
    assert 'udp = "5514"' in out


def test_check_config_refuses_a_bad_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "[archive]\nflush_interval_seconds = 0\n")
    assert cli_main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["configuration error: archive.flush_interval_seconds: "
                   "expected a positive number of seconds, got 0"]


def run_twistd(tmp_path, *args):
    env = collector_environment()
    return subprocess.run([twistd(), "-n", "--pidfile=", "syslog-collector", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, message", [
    (["--udp", "70000"], "configuration error: --udp (listen.udp): bad port"),
    (["--tcp", "::1:5514"], "configuration error: --tcp (listen.tcp): write an IPv6 address in brackets"),
    (["--config", "{bad_cidr}"], "configuration error: firewall[0].addresses[0]: not an IP address or CIDR"),
    (["--config", "{unknown_key}"], "configuration error: archive.rotate: unknown key"),
    (["--archive-dir", "{unwritable}"], "configuration error: --archive-dir (archive.dir): cannot write"),
])
def test_twistd_refuses_a_bad_config_before_listening(tmp_path, args, message):
    files = {
        "bad_cidr": write(tmp_path, "[[firewall]]\nname = 'x'\naddresses = ['192.0.2.0/20']\n"),
        "unknown_key": tmp_path / "unknown.toml",
        "unwritable": tmp_path / "blocker" / "archive",
    }
    files["unknown_key"].write_text("[archive]\nrotate = true\n")
    (tmp_path / "blocker").write_text("")
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    result = run_twistd(tmp_path, *args)
    assert result.returncode == 1
    last_line = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert message in last_line
    assert "listening" not in result.stdout + result.stderr


def test_port_in_use_is_a_clear_start_up_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_twistd(tmp_path, "--udp", "127.0.0.1:0", "--tcp", "127.0.0.1:0",
                            "--metrics", f"127.0.0.1:{port}", "--archive-dir", str(tmp_path / "a"))
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert f"cannot listen for metrics on 127.0.0.1:{port} (listen.metrics): Address already in use" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("name", ["unregistered", "other", "127.0.0.77", "2001:db8::1"])
def test_a_firewall_may_not_take_a_tag_the_collector_gives_others(tmp_path, name):
    path = tmp_path / "c.toml"
    path.write_text(f'[[firewall]]\nname = "{name}"\naddresses = ["192.0.2.1"]\n')
    with pytest.raises(config.ConfigError, match="firewall\\[0\\].name"):
        config.load(str(path))


def test_ipv4_mapped_addresses_of_a_firewall_are_read_as_ipv4(tmp_path):
    import ipaddress

    path = tmp_path / "c.toml"
    path.write_text('[[firewall]]\nname = "v6fw"\naddresses = ["::ffff:127.0.0.20", "::ffff:10.0.0.0/120"]\n')
    [firewall] = config.load(str(path)).firewalls
    assert firewall.networks == (ipaddress.ip_network("127.0.0.20/32"), ipaddress.ip_network("10.0.0.0/24"))

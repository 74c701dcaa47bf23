"""A configuration checked as the server checks it before it listens.

Used by ``twistd syslog-collector`` and by ``syslog-collector check-config``;
it imports nothing of the server but, for a TLS listener, the TLS context
that proves the certificates load.
"""

from __future__ import annotations

from typing import Any

from collector import config as configuration
from collector.config import Config, ConfigError

# Command-line option -> config key it overrides.
OVERRIDES = {
    "udp": "listen.udp",
    "tcp": "listen.tcp",
    "metrics": "listen.metrics",
    "archive-dir": "archive.dir",
}


def load_checked(path: str | None, overrides: dict[str, Any] | None = None,
                 user: tuple[int, int] | None = None) -> Config:
    """Load a config and check the archive root can be written, as start-up does."""
    config = configuration.load(path, overrides)
    configuration.check_archive_dir(config, user)
    if config.tls.enabled:
        # Here, not at the top: reading a config needs no TLS library.
        from collector.net.tls import server_options


        server_options(config.tls)
    return config


def describe_error(error: ConfigError) -> str:
    for option, key in OVERRIDES.items():
        if error.key == key:
            return f"--{option} ({key}): {error.problem}"
    return str(error)

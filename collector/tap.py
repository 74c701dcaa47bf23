"""The ``twistd syslog-collector`` plugin: its options and ``makeService``.

``makeService`` only assembles services (``collector.service``, or with
several workers ``collector.workers.service``, which imports nothing of the
per-message path); sockets are bound when the services start, and the
reactor is injected so tests can pass a fake one.
"""

from __future__ import annotations

import pwd
from typing import Any

from prometheus_client import disable_created_metrics
from twisted.application.service import MultiService
from twisted.python import usage

from collector.checks import OVERRIDES, describe_error, load_checked
from collector.config import Config, ConfigError
from collector.listening import allow_descriptors
from collector.workers.supervisor import worker_role


class Options(usage.Options):
    synopsis = "[--config FILE] [--udp ADDR] [--tcp ADDR] [--metrics ADDR] [--archive-dir DIR]"
    longdesc = (
        "Receive Kerio security logs over syslog, archive them per firewall and count them "
        "for Prometheus. ADDR is PORT, HOST:PORT or [IPV6]:PORT; port 0 picks a free port; "
        "an empty ADDR disables that listener. Options override the config file."
    )
    optParameters = [
        ["config", "c", None, "TOML config file (default: built-in defaults, see config/collector.toml)"],
        ["udp", None, None, "syslog over UDP (default 5514)"],
        ["tcp", None, None, "syslog over TCP (default 5514)"],
        ["metrics", None, None, "HTTP for /metrics and /healthz (default 9514)"],
        ["archive-dir", None, None, "root directory of the per-host archives (default ./archive)"],
    ]

    config: Config

    def postOptions(self) -> None:
        overrides = {key: self[option] for option, key in OVERRIDES.items() if self[option] is not None}
        try:
            self.config = load_checked(self["config"], overrides, user=self._service_user())
        except ConfigError as e:
            raise usage.UsageError(f"configuration error: {describe_error(e)}") from None


    def plugin_args(self) -> list[str]:
        """The options as given, for starting worker processes alike."""
        args = [] if self["config"] is None else ["--config", self["config"]]
        for option in OVERRIDES:
            if self[option] is not None:
                args += [f"--{option}", self[option]]
        return args

    def _service_user(self) -> tuple[int, int] | None:
        """The user twistd's --uid/--gid will switch to after binding, if any."""
        parent = getattr(self, "parent", None)
        if parent is None or parent.get("uid") is None:
            return None
        uid = parent["uid"]
        gid = parent.get("gid")
        return uid, gid if gid is not None else pwd.getpwuid(uid).pw_gid


def makeService(options: Options, reactor: Any = None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    # No "_created" sample beside each counter: they would double what Prometheus
    # stores and what a scrape renders, and the workers' multiprocess mode
    # has none anyway.
    disable_created_metrics()
    config = options.config
    allow_descriptors(config)
    role = worker_role()
    if role is None and config.workers.count > 1:
        # The supervisor: it never loads the per-message path, which only
        # the workers run.
        from collector.workers.service import supervise

        return supervise(config, options.plugin_args(), reactor)
    from collector.service import ReloadOnHangup, build

    service = build(config, reactor, role)
    ReloadOnHangup(service, options["config"], reactor).setServiceParent(service)
    return service

"""Listening ports as services, and the descriptors they may need.

A ``Listener`` binds its port in ``privilegedStartService`` (so that twistd's
``--uid``/``--gid`` can drop root after binding port 514) and logs the
address actually bound, one stable line that scripts and tests read.
"""

from __future__ import annotations

import resource
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from collector.config import Config

# Connections the kernel completes before the collector accepts them: after an
# outage every firewall reconnects at once (Twisted's default is 50).
LISTEN_BACKLOG = 1024


class Listener(Service):
    """Binds one listening port at start; logs the address actually bound."""

    log = Logger()

    def __init__(self, kind: str, setting: str, listen: Callable[[], IListeningPort],
                 after_stop: Callable[[], Deferred[None]] | None = None) -> None:
        self.kind = kind
        self.setting = setting
        self._listen = listen
        self._after_stop = after_stop
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        try:
            self.port = self._listen()
        except CannotListenError as e:
            # An operator's problem, not a bug: one line, no traceback, exit status 1.
            reason = e.socketError.strerror if isinstance(e.socketError, OSError) else e.socketError
            self.log.critical("cannot listen for {kind} on {address} ({setting}): {reason}",
                              kind=self.kind, address=f"{e.interface or '*'}:{e.port}",
                              setting=self.setting, reason=reason)
            raise SystemExit(1) from None
        address = self.port.getHost()
        # One line per listener, stable so that scripts can read the bound port.
        self.log.info("listening {kind} on {host} port {port}",
                      kind=self.kind, host=address.host, port=address.port)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self.port is None:
            return succeed(None)
        d = maybeDeferred(self.port.stopListening)
        if self._after_stop is not None:
            after_stop = self._after_stop
            d.addCallback(lambda _: after_stop())
        return d


# Descriptors besides connections and archive files: listeners, the log, the
# workers' pipes and channels, the thread pool's, /proc reads at scrape time.
SPARE_DESCRIPTORS = 128
_log = Logger(namespace=__name__)


def allow_descriptors(config: Config) -> None:
    """Raise the soft limit on open files to what the configured limits need,
    as far as the hard limit allows; warn when it does not allow enough.

    Each kind of descriptor has a budget of its own, bounded by its limit:
    syslog connections, HTTP connections (a connection past either limit is
    closed as soon as it is accepted), archive files, and the spare. So no
    number of connections of either kind leaves an archive file unopenable.
    """
    limits = config.limits
    needed = (limits.max_connections + limits.max_http_connections + config.archive.max_open_files
              + SPARE_DESCRIPTORS)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    allowed = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if allowed > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (allowed, hard))
    if allowed < needed:
        _log.warn(
            "the hard limit on open files is {hard}, but limits.max_connections, "
            "limits.max_http_connections and archive.max_open_files need {needed}: "
            "raise it (LimitNOFILE= in the systemd unit, "
            "ulimit -Hn) or lower them", hard=hard, needed=needed)

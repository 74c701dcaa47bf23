"""The twistd process of several workers: it listens, balances, and serves their metrics.

It imports nothing of the per-message path: the workers run it.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from twisted.application.service import MultiService

from collector.config import Config, ListenAddress
from collector.hosts import HostRegistry
from collector.listening import Listener
from collector.metrics import ProcessesCollector, SupervisorMetrics, UdpPortDropsCollector, WorkersCollector
from collector.net.slots import ConnectionSlots
from collector.net.web import metrics_site
from collector.workers.balancing import KIND_TCP, KIND_TLS, BalancedPort, Balancer
from collector.workers.supervisor import WorkerSupervisor, new_metrics_dir


def supervise(config: Config, plugin_args: list[str], reactor: Any) -> MultiService:
    """The twistd process of several workers: /metrics summed over them, and the workers."""
    metrics_dir = new_metrics_dir()
    registry = CollectorRegistry()
    WorkersCollector(registry, metrics_dir)
    service = MultiService()
    if (metrics_at := config.listen.metrics) is not None:
        site = metrics_site(registry, reactor, config.limits.max_http_connections, in_thread=True)
        Listener("metrics", "listen.metrics", lambda: reactor.listenTCP(
            metrics_at.port, site, interface=metrics_at.host)).setServiceParent(service)
    supervisor_metrics = SupervisorMetrics(registry, config.workers.count)
    balancer = Balancer(reactor, supervisor_metrics.connections,
                        ConnectionSlots.from_settings(
                            config.limits, HostRegistry(config.firewalls, config.hosts.unregistered).firewall_name))

    def balanced(address: ListenAddress, kind: bytes) -> BalancedPort:
        port = BalancedPort(reactor, address, kind, balancer)
        port.startListening()
        return port

    if (tcp_at := config.listen.tcp) is not None:
        Listener("tcp", "listen.tcp", lambda: balanced(tcp_at, KIND_TCP)).setServiceParent(service)
    if config.tls.enabled and (tls_at := config.tls.listen) is not None:
        # The workers hold the certificates and do the handshakes.
        Listener("tls", "tls.listen", lambda: balanced(tls_at, KIND_TLS)).setServiceParent(service)
    supervisor = WorkerSupervisor(config, plugin_args, reactor, metrics_dir, UdpPortDropsCollector(registry),
                                  balancer, supervisor_metrics.worker_restarted)
    supervisor.setServiceParent(service)
    ProcessesCollector(registry, supervisor.worker_pids)
    reactor.addSystemEventTrigger("after", "shutdown", supervisor.exit_if_failed)
    return service

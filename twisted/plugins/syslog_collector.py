from twisted.application.service import ServiceMaker

syslogCollector = ServiceMaker(
    "syslog-collector",
    "collector.tap",
    "Collect Kerio security logs over syslog into per-host archives and Prometheus metrics",
    "syslog-collector",
)

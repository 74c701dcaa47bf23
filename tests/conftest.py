import os
import shutil
import signal

import pytest

# .ci/run sets this: there, a test must fail rather than skip for want of a program.
REQUIRE_ALL = os.environ.get("COLLECTOR_TESTS_REQUIRE_ALL") == "1"
# tests/test_plugin_install.py sets this to run tests against an installed,
# compiled copy of the package rather than the source tree.
INSTALLED = os.environ.get("COLLECTOR_TESTS_INSTALLED") == "1"

# A shell starts a background job with SIGINT ignored, and child processes
# inherit that: twistd would then never see the SIGINT a test sends it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_configure(config):
    import collector
    from collector.compiled import MESSAGE_PATH, plain_python

    plain = plain_python()
    if INSTALLED:
        if "site-packages" not in collector.__file__ or plain:
            raise pytest.UsageError(f"COLLECTOR_TESTS_INSTALLED=1, but collector comes from "
                                    f"{collector.__file__} with {plain} uncompiled")
        return
    compiled = sorted({module.__name__ for module in MESSAGE_PATH} - set(plain))
    if compiled:
        # An editable install compiles them in place, and they then stand in
        # for the .py files: the tests would not run what is being edited.
        raise pytest.UsageError(f"{', '.join(compiled)} are compiled in {collector.__path__[0]}: "
                                "the tests would not run the .py files. Remove them "
                                "(rm collector/*.so), or install with COLLECTOR_PURE_PYTHON=1 pip install -e .")


def require_binary(name: str) -> str:
    """The path of a program a test needs; skip (fail under CI) when it is missing."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        message = f"{name} is not installed"
        if REQUIRE_ALL:
            pytest.fail(message + " (COLLECTOR_TESTS_REQUIRE_ALL=1)")
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def clean_reactor():
    """Fail a test that leaves delayed calls or listening sockets on the global reactor."""
    from twisted.internet import reactor

    calls_before = set(reactor.getDelayedCalls())
    readers_before = set(reactor.getReaders())
    yield
    left_calls = [c for c in reactor.getDelayedCalls() if c not in calls_before and c.active()]
    left_ports = [r for r in reactor.getReaders()
                  if r not in readers_before and hasattr(r, "stopListening")]
    for call in left_calls:
        call.cancel()
    for port in left_ports:
        port.stopListening()
    assert not left_calls, f"test left delayed calls behind: {left_calls}"
    assert not left_ports, f"test left listening ports behind: {left_ports}"


@pytest.fixture
def log_events():
    """``log_events(text)``: the events logged so far in the test whose format holds ``text``."""
    from twisted.logger import globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    yield lambda text: [event for event in events if text in event.get("log_format", "")]
    globalLogPublisher.removeObserver(events.append)

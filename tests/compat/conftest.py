"""Fixtures for the client compatibility tests: each runs the real `weir` binary.

    broker         a fresh broker (own port and data dir) for one test
    make_broker    factory for tests that need settings or several brokers:
                   make_broker({"auto.create.topics.enable": False})
    shared_broker  one broker for a whole test module (tests use distinct topic names)

The broker object has .bootstrap, .port, .data_dir, .stop() (SIGTERM, returns the exit
code), .kill9(), .start() (same port and dir), .log_text(). Brokers are always stopped at
teardown; when a test fails, the logs of its brokers are attached to the failure report.
"""

from __future__ import annotations

import itertools

import pytest

from helpers import Broker, WEIR_BIN

_LOG_TAIL_LINES = 400
_counter = itertools.count()


def _new_broker(base_dir, settings=None, start=True) -> Broker:
    n = next(_counter)
    broker = Broker(base_dir / f"weir{n}" / "data", base_dir / f"weir{n}.log", settings)
    if start:
        broker.start()
    return broker


def _close_and_check(broker: Broker):
    broker.close()
    panics = broker.log_lines(r"panicked")
    assert not panics, "weir panicked:\n" + "\n".join(panics)


def _attach(node, broker: Broker):
    node.__dict__.setdefault("_weir_brokers", []).append(broker)


@pytest.fixture
def make_broker(request, tmp_path):
    brokers = []

    def make(settings=None, start=True) -> Broker:
        broker = _new_broker(tmp_path, settings, start)
        brokers.append(broker)
        _attach(request.node, broker)
        return broker

    yield make
    for broker in brokers:
        _close_and_check(broker)


@pytest.fixture
def broker(make_broker) -> Broker:
    return make_broker()


@pytest.fixture(scope="module")
def _module_broker(tmp_path_factory):
    broker = _new_broker(tmp_path_factory.mktemp("shared"))
    yield broker
    _close_and_check(broker)


@pytest.fixture
def shared_broker(request, _module_broker) -> Broker:
    _attach(request.node, _module_broker)
    assert _module_broker.running(), "the module's broker is no longer running"
    yield _module_broker
    assert _module_broker.running(), "the module's broker died during this test"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for broker in item.__dict__.get("_weir_brokers", []):
            lines = broker.log_text().splitlines()
            tail = lines[-_LOG_TAIL_LINES:]
            skipped = len(lines) - len(tail)
            header = f"(first {skipped} lines skipped; full log: {broker.log_path})\n" if skipped else ""
            report.sections.append((f"weir log {broker.bootstrap} ({report.when})",
                                    header + "\n".join(tail)))


def pytest_report_header(config):
    return f"weir binary: {WEIR_BIN}"

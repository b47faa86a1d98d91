import platform
import sys

import pytest

from tests.support import WORKERS, Daemon, Loggers, free_port


def python_description():
    """'CPython 3.11.7 (/usr/bin/python3.11)': the interpreter the suite runs on."""
    return '%s %s (%s)' % (platform.python_implementation(), platform.python_version(),
                           sys.executable)


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    """The summary line says which Python the suite ran on:
    ``=== 42 passed, on CPython 3.11.2 (/usr/bin/python3) in 3.1s ===``."""
    reporter = config.pluginmanager.get_plugin('terminalreporter')
    if reporter is None or not hasattr(reporter, 'build_summary_stats_line'):
        return
    build = reporter.build_summary_stats_line

    def with_python():
        parts, color = build()
        return parts + [('on ' + python_description(), {color: True})], color
    reporter.build_summary_stats_line = with_python

SIMPLE = """
[app]
rotate = daily
backup_count = 3
"""


def pytest_generate_tests(metafunc):
    """Tests marked each_workers that start daemons: once per WORKERS value."""
    if 'workers' in metafunc.fixturenames and metafunc.definition.get_closest_marker('each_workers'):
        metafunc.parametrize('workers', WORKERS, indirect=True,
                             ids=['workers%d' % n for n in WORKERS])


@pytest.fixture
def workers(request):
    """[server] workers for the daemons daemon_factory starts: 1 unless the test module
    says ``pytestmark = each_workers`` (tests/support.py)."""
    return getattr(request, 'param', 1)


@pytest.fixture
def daemon_factory(tmp_path, workers):
    """Start loghogd processes in tmp folders; every one is stopped at the end of the test."""
    started = []

    def start(facilities=SIMPLE, server=None, sections=None, name='d', extra_args=()):
        base = tmp_path / name
        base.mkdir()
        if workers != 1:
            server = dict({'workers': str(workers)}, **(server or {}))
        daemon = Daemon(base, facilities, server, sections, extra_args)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture
def daemon(daemon_factory):
    return daemon_factory()


@pytest.fixture
def make_logger(request):
    """``make(handler)``: a fresh logger with ``handler``, closed at the end of the test."""
    loggers = Loggers(f'{request.module.__name__}.{request.node.name}')
    yield loggers
    loggers.close()


@pytest.fixture
def same_port(daemon_factory, request):
    """``start()``: a new loghogd on the same loopback port each call (a restart), with the
    test module's ``FACILITIES``; ``start.port`` is that port, ``start.made`` the daemons."""
    port = free_port()
    made = []

    def start():
        made.append(daemon_factory(request.module.FACILITIES,
                                   server={'listen_ipv4': f'127.0.0.1:{port}'},
                                   name=f'd{len(made)}'))
        return made[-1]

    start.port = port
    start.made = made
    return start

import platform
import sys

import pytest

from tests.support import WORKERS, Daemon


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

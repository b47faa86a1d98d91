import pytest

from tests.support import Daemon

SIMPLE = """
[app]
rotate = daily
backup_count = 3
"""


@pytest.fixture
def daemon_factory(tmp_path):
    """Start loghogd processes in tmp folders; every one is stopped at the end of the test."""
    started = []

    def start(facilities=SIMPLE, server=None, sections=None, name='d', extra_args=()):
        base = tmp_path / name
        base.mkdir()
        daemon = Daemon(base, facilities, server, sections, extra_args)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture
def daemon(daemon_factory):
    return daemon_factory()

"""--check-config reads facilities.conf as the daemon's user too (attack finding A3-17).

The init script checks the configuration as root before a reload; the daemon, running as
[main] user, then reads facilities.conf itself. A file root can read and the user cannot
passed the check, and the reload was refused in the daemon's log only.
"""

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason='needs root (drops to a user)')

FACILITIES = """
[app]
rotate = daily
backup_count = 3
"""


@pytest.fixture
def folder():
    """A folder the user nobody can look into (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix='loghogd-check-'))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def check(tmp_path, mode):
    facilities = tmp_path / 'facilities.conf'
    facilities.write_text(textwrap.dedent(FACILITIES))
    os.chmod(facilities, mode)
    config = tmp_path / 'loghogd.conf'
    config.write_text('[main]\nlogdir = %s\nworkdir = %s\nrundir = %s\nfacilities_config = %s\n'
                      'user = nobody\n' % (tmp_path / 'log', tmp_path / 'lib', tmp_path / 'run',
                                           facilities))
    return subprocess.run([sys.executable, '-m', 'loghogd', '--check-config', '--config',
                           str(config)], cwd=str(ROOT), capture_output=True, text=True,
                          timeout=30)


def test_a_facilities_file_the_user_cannot_read_fails_the_check(folder):
    pwd.getpwnam('nobody')
    result = check(folder, 0o600)
    assert result.returncode == 78, result
    assert 'as user nobody' in result.stderr and 'facilities.conf' in result.stderr, result.stderr


def test_a_facilities_file_the_user_can_read_passes(folder):
    result = check(folder, 0o644)
    assert (result.returncode, result.stderr) == (0, '')

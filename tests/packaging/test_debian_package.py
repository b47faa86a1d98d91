"""The Debian packaging test, tests/packaging/debian-package.sh, run by pytest.

The script builds the packages, installs them with apt-get, drives the daemon through its init
script, then purges everything: it changes the machine it runs on (for about a minute), so it
runs only as root on Debian with apt-get, and LOGHOG_SKIP_PACKAGING=1 skips it.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().with_name('debian-package.sh')
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 900          # cold apt cache and slow mirrors included; it usually takes 40-70 s
SKIP_STATUS = 77         # the script's "cannot run here"


def reason_to_skip():
    """Why the packaging test cannot run here, or None."""
    if os.environ.get('LOGHOG_SKIP_PACKAGING') == '1':
        return 'LOGHOG_SKIP_PACKAGING=1'
    if os.geteuid() != 0:
        return 'needs root: it installs and purges packages'
    if shutil.which('apt-get', path='/usr/bin:/bin') is None:
        return 'needs apt-get'
    if not os.path.exists('/etc/debian_version'):
        return 'needs Debian'
    return None


@pytest.mark.timeout(TIMEOUT_S)
@pytest.mark.skipif(reason_to_skip() is not None, reason=reason_to_skip() or '')
def test_debian_packages_build_install_follow_the_quick_start_and_purge_cleanly():
    result = subprocess.run(['bash', str(SCRIPT), str(ROOT)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=TIMEOUT_S)
    print(result.stdout)
    if result.returncode == SKIP_STATUS:
        pytest.skip(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0, 'packaging test failed:\n' + result.stdout[-6000:]

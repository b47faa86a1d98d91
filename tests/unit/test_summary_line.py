"""The suite's summary line says which Python it ran on (tests/conftest.py, issue 20)."""

import platform
import subprocess
import sys

from tests.support import ROOT


def test_the_summary_line_names_the_python_the_tests_ran_on():
    result = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                             'tests/unit/test_binding.py'], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert ' passed, on %s %s (%s) in ' % (platform.python_implementation(),
                                           platform.python_version(), sys.executable) in last, last

"""`pip install loghog` is the client; the daemon's dependencies are the extra `loghog[server]`.

Each check runs in a fresh interpreter in which the daemon's dependencies cannot be imported,
as in an application's environment where only the client was installed.
"""

import subprocess
import sys

import pytest

from tests.support import ROOT

SERVER_ONLY = ('daemon', 'lockfile', 'dateutil', 'croniter')
PYPI_NAMES = ('python-daemon', 'lockfile', 'python-dateutil', 'croniter')

# Makes the daemon's dependencies unimportable, whether installed or not.
HIDE = '''
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in %r:
            raise ModuleNotFoundError('No module named %%r' %% name, name=name)
        return None
sys.meta_path.insert(0, Hide())
''' % (SERVER_ONLY,)


def run_without_server_deps(code, *args):
    return subprocess.run([sys.executable, '-c', HIDE + code] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize('argv', [[], ['--version'], ['--check-config'], ['status']])
def test_loghogd_without_the_server_extra_says_what_to_install_in_one_line(argv):
    result = run_without_server_deps(
        'import runpy; runpy.run_module("loghogd", run_name="__main__")', *argv)
    assert result.stdout == ''
    assert result.stderr.count('\n') == 1 and 'Traceback' not in result.stderr, result.stderr
    assert result.stderr.startswith('loghogd: ')
    assert "pip install 'loghog[server]'" in result.stderr
    assert result.returncode == 69


def test_the_client_imports_none_of_the_daemons_dependencies():
    result = run_without_server_deps('''
import pkgutil, sys, loghog
for module in pkgutil.iter_modules(loghog.__path__):
    if module.name != '__main__':
        __import__('loghog.' + module.name)
print(' '.join(sorted(name for name in sys.modules
                      if name.partition('.')[0] in %r + ('loghogd',))))
''' % (SERVER_ONLY,))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ''


def test_setup_py_puts_the_daemons_dependencies_in_the_server_extra_only(tmp_path):
    """What `pip install loghog` would install: setup.py's metadata, made afresh."""
    pytest.importorskip('setuptools')   # third-party: the Debian build has it, so does a venv
    result = subprocess.run([sys.executable, 'setup.py', '-q', 'egg_info', '--egg-base',
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    requires = (tmp_path / 'loghog.egg-info' / 'requires.txt').read_text()
    sections = {block.split()[0]: block.split()[1:] for block in requires.split('\n\n')
                if block.strip()}
    assert all(name.startswith('[') for name in sections), 'unconditional: %r' % requires
    assert sorted(r.split('>')[0] for r in sections['[server]']) == sorted(PYPI_NAMES)

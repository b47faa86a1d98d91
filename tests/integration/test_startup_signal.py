"""A SIGTERM during start-up (binding, detaching: before the loop's handlers) is a clean
stop: exit 0 and no pidfile left behind, never Python's default death (status -15)."""

import subprocess
import sys
import textwrap

from tests.support import ROOT

SCRIPT = """\
    import os, signal, sys
    from loghogd import cli

    real_bind_all = cli.bind_all

    def bind_then_terminate(config):
        bound = real_bind_all(config)
        os.kill(os.getpid(), signal.SIGTERM)   # the worst moment: sockets bound, no loop yet
        return bound

    cli.bind_all = bind_then_terminate
    sys.exit(cli.main(['--config', sys.argv[1]]))
    """


def test_sigterm_while_binding_stops_cleanly(tmp_path):
    (tmp_path / 'facilities.conf').write_text('[app]\nrotate = daily\nbackup_count = 1\n')
    config = tmp_path / 'loghogd.conf'
    config.write_text('[main]\nlogdir = log\nworkdir = lib\nrundir = run\n'
                      '[server]\nlisten_ipv4 = 127.0.0.1:0\nlisten_ipv6 =\n')
    result = subprocess.run([sys.executable, '-c', textwrap.dedent(SCRIPT), str(config)],
                            cwd=str(ROOT), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert not (tmp_path / 'run' / 'loghogd.pid').exists()
    assert 'SIGTERM' in result.stderr, result.stderr

"""``loghogd status``: finding the snapshot, deciding whether the daemon runs, what is printed."""

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from loghogd import cli
from loghogd.status_command import (NotRunning, Unknown, format_table, human_duration,
                                    human_size, read_status, render_brief, render_table)
from tests.unit.status_sample import NOW, sample


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv('TZ', 'UTC')
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def publish(rundir, snapshot):
    os.makedirs(rundir, exist_ok=True)
    with open(os.path.join(rundir, 'status.json'), 'w') as stream:
        json.dump(snapshot, stream)


def alive(pid):
    return pid == 4242


def test_human_sizes_and_durations():
    assert [human_size(n) for n in (0, 1023, 1536, 5 * 2**20, 3 * 2**30, None)] == [
        '0 B', '1023 B', '1.5 KiB', '5.0 MiB', '3.0 GiB', '-']
    assert [human_duration(s) for s in (0, 45, 125, 7380, 200000)] == [
        '0s', '45s', '2m 5s', '2h 3m', '2d 7h']


def test_table_columns_are_aligned_numbers_to_the_right():
    assert format_table(['NAME', 'COUNT'], [['a', '1'], ['longer', '1,000']]) == [
        'NAME    COUNT', 'a           1', 'longer  1,000']


def test_the_table_a_sysadmin_reads():
    text = render_table(sample(), NOW)
    lines = text.splitlines()
    assert lines[0] == ('loghogd 0.8.0 running as PID 4242, up 1h 2m (since 2023-11-14 22:13:20); '
                        'status written 2s ago')
    assert 'reloads     1 (0 failed); the last one, 2023-11-14 22:23:20, succeeded' in lines
    assert 'process     RSS 31.0 MiB, 27 open descriptors (limit 1,024), CPU 12.5s' in lines
    start = lines.index('APP    FACILITY   ACCEPTED      BYTES  LAST MIN     BYTES  MSG/S')
    assert lines[start + 1:start + 4] == [
        'shop   root      1,000,000  200.0 MiB    12,000   2.3 MiB    192',
        'shop   payments    250,000   50.0 MiB       500  97.7 KiB    8.0',
        'total            1,250,000  250.0 MiB    12,500   2.4 MiB    200']
    assert 'bad_signature         5         1' in lines
    assert '10.0.0.9         5' in lines
    assert 'tcp          12        40         1' in lines
    assert 'TLS handshakes failed: 2' in lines
    assert '0.0.0.0:5566      0 B            37' in lines
    assert 'UDP datagrams read: 5,000 (100 in the last minute); kernel drops in all: 37' in lines
    assert '/var/log/loghogd/shop/root.log      120.0 MiB      1s ago  hourly    48' in lines
    assert '(last and next rotation are not tracked by this version of loghogd)' in lines


def test_the_table_shows_rotation_where_the_daemon_tracks_it():
    snapshot = sample()
    snapshot['rotation_tracked'] = True
    snapshot['files'][1].update(last_rotation=NOW - 1800, next_rotation=NOW + 1800,
                                backups=['root.log.1.xz', 'root.log.2.xz'])
    lines = render_table(snapshot, NOW).splitlines()
    start = [n for n, line in enumerate(lines) if line.startswith('FILE')][0]
    assert lines[start:start + 3] == [
        'FILE                                     SIZE  LAST WRITE  ROTATE  KEEP  LAST ROTATION'
        '  NEXT ROTATION  BACKUPS',
        '/var/log/loghogd/shop/payments.log    3.0 MiB      4s ago   daily    30              -'
        '              -        -',
        '/var/log/loghogd/shop/root.log      120.0 MiB      1s ago  hourly    48     30m 0s ago'
        '      in 30m 0s        2']
    assert 'not tracked' not in '\n'.join(lines)


def test_a_failed_reload_and_a_young_daemon_say_so():
    snapshot = sample()
    snapshot['config']['last_reload'] = {'at': NOW - 60, 'ok': False}
    snapshot['config']['reloads_failed'] = 1
    snapshot['window_s'] = 12.0
    text = render_table(snapshot, NOW)
    assert ('reloads     2 (1 failed); the last one, 2023-11-14 23:14:25, FAILED: the facilities '
            'loaded before are still used') in text
    assert 'LAST 12s' in text


def test_the_brief_line_for_the_init_script():
    assert render_brief(sample(), NOW) == (
        'PID 4242, up 1h 2m: 200 msg/s, 0.02 rejected/s over the last minute; 15 connections; '
        'UDP kernel drops 37')


def test_losses_and_errors_are_shown_in_the_text_prominently_when_not_zero():
    """Issue 14 (attack): write errors, fsync errors and dropped lines were only in --json."""
    quiet = render_table(sample(), NOW)
    assert 'losses      none since the start (writes, fsyncs, rotations, reads, backlog)' in (
        quiet.splitlines())
    assert 'LOSSES' not in quiet and 'LOSSES' not in render_brief(sample(), NOW)
    snapshot = sample()
    snapshot['events'].update(write_errors=3, sync_errors=1, dropped_backlog=1200,
                              ack_connections_closed_on_loss=2)
    lines = render_table(snapshot, NOW).splitlines()
    start = lines.index("LOSSES/ERRORS since the start (see the daemon's log for which files):")
    assert start < lines.index('APP    FACILITY   ACCEPTED      BYTES  LAST MIN     BYTES  MSG/S')
    shown = [line.split() for line in lines[start + 2:start + 6]]
    assert [(' '.join(words[:-1]), words[-1]) for words in shown] == [
        ('write errors', '3'), ('fsync errors', '1'), ('lines lost (backlog dropped)', '1,200'),
        ('ack connections closed on loss', '2')]
    assert render_brief(snapshot, NOW).endswith(
        '; LOSSES/ERRORS: write errors 3, fsync errors 1, lines lost (backlog dropped) 1,200, '
        'ack connections closed on loss 2')


def test_a_fresh_snapshot_of_a_live_pid_means_running(tmp_path):
    publish(tmp_path, sample())
    assert read_status(str(tmp_path), NOW, alive)['daemon']['pid'] == 4242


def test_no_snapshot_means_not_running(tmp_path):
    with pytest.raises(NotRunning, match='no status in'):
        read_status(str(tmp_path), NOW, alive)


def test_a_dead_pid_means_not_running(tmp_path):
    publish(tmp_path, sample())
    with pytest.raises(NotRunning, match=r'PID 4242, which wrote .* 2s ago, has gone'):
        read_status(str(tmp_path), NOW, lambda pid: False)


def test_a_stale_snapshot_means_not_running_even_if_the_pid_lives(tmp_path):
    publish(tmp_path, sample())
    with pytest.raises(NotRunning, match='last wrote its status 1m 0s ago .* stopped or hung'):
        read_status(str(tmp_path), NOW + 58, alive)
    read_status(str(tmp_path), NOW + 20, alive)   # 3 intervals + 10 s is still fresh


def test_garbage_is_unknown(tmp_path):
    (tmp_path / 'status.json').write_text('{"half": ')
    with pytest.raises(Unknown, match='cannot be read'):
        read_status(str(tmp_path), NOW, alive)
    (tmp_path / 'status.json').write_text('[]')
    with pytest.raises(Unknown, match='not a loghogd status snapshot'):
        read_status(str(tmp_path), NOW, alive)


def write_config(tmp_path):
    config = tmp_path / 'loghogd.conf'
    config.write_text('[main]\nrundir = run\n')
    return config


def test_status_subcommand_exits_3_with_a_clear_message_when_nothing_runs(tmp_path, capsys):
    assert cli.main(['status', '-c', str(write_config(tmp_path))]) == 3
    out, err = capsys.readouterr()
    assert out == 'loghogd is not running: no status in %s (not started, or stopped cleanly)\n' \
        % (tmp_path / 'run')
    assert cli.main(['status', '--json', '--run-dir', str(tmp_path / 'run')]) == 3
    out, err = capsys.readouterr()
    assert out == '' and err.startswith('loghogd is not running')


@pytest.fixture
def live_loghogd_pid():
    """A live process whose command line says loghogd, as the daemon's does."""
    proc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', 'loghogd'])
    # Until the child has exec'd, its command line is pytest's (Python 3.13's Popen returns
    # sooner: the test saw "has gone" there).
    cmdline = pathlib.Path('/proc/%d/cmdline' % proc.pid)
    deadline = time.monotonic() + 10
    while b'loghogd' not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    yield proc.pid
    proc.kill()
    proc.wait()


def test_status_subcommand_prints_json_for_scripts_and_a_brief_line(tmp_path, capsys,
                                                                   live_loghogd_pid):
    snapshot = sample()
    snapshot['daemon']['pid'] = live_loghogd_pid
    snapshot['written_at'] = time.time()
    publish(tmp_path / 'run', snapshot)
    config = str(write_config(tmp_path))
    assert cli.main(['status', '--json', '-c', config]) == 0
    assert json.loads(capsys.readouterr().out) == snapshot
    assert cli.main(['status', '--brief', '-c', config]) == 0
    assert capsys.readouterr().out.startswith('PID %d, up 1h 2m: 200 msg/s' % live_loghogd_pid)
    assert cli.main(['status', '-c', config]) == 0
    assert 'TLS handshakes failed: 2' in capsys.readouterr().out


def test_status_of_a_pid_reused_by_another_program_is_not_running(tmp_path, capsys):
    other = subprocess.Popen(['sleep', '60'])
    try:
        snapshot = sample()
        snapshot['daemon']['pid'] = other.pid
        snapshot['written_at'] = time.time()
        publish(tmp_path / 'run', snapshot)
        assert cli.main(['status', '--run-dir', str(tmp_path / 'run')]) == 3
    finally:
        other.kill()
        other.wait()
    assert 'has gone (the file is stale)' in capsys.readouterr().out


def test_status_with_an_unreadable_config_is_unknown(tmp_path, capsys):
    assert cli.main(['status', '-c', str(tmp_path / 'nowhere.conf')]) == 4
    assert 'nowhere.conf: no such file' in capsys.readouterr().err
    bad = tmp_path / 'bad.conf'
    bad.write_text('rundir = run\n')
    assert cli.main(['status', '-c', str(bad)]) == 4
    assert 'a setting before any [section]' in capsys.readouterr().err


def test_a_mistake_elsewhere_in_the_config_does_not_hide_the_daemon(tmp_path, capsys):
    config = tmp_path / 'loghogd.conf'
    config.write_text('[main]\nrundir = run\n[server]\nmax_conections = 10\n'
                      'listen_ipv4_ssl = 127.0.0.1\npemfile = /root-only/server.pem\n')
    assert cli.main(['status', '-c', str(config)]) == 3
    assert capsys.readouterr().out.startswith('loghogd is not running: no status in %s'
                                              % (tmp_path / 'run'))


def test_rotation_and_compressor_tasks_report_in_their_own_lines():
    snapshot = sample()
    snapshot['tasks'] = {
        'rotation': {'files': 3, 'compressing': 1, 'next_rotation': NOW + 600},
        'compressor': {'format': 'xz', 'level': 6, 'waiting': 2, 'working_on': None,
                       'compressed': 1200, 'failed': 0}}
    lines = render_table(snapshot, NOW).splitlines()
    assert lines[-2:] == [
        'compressor  format xz, level 6, waiting 2, working on -, compressed 1,200, failed 0',
        'rotation    files 3, compressing 1, next rotation in 10m 0s']


def test_with_receivers_each_udp_socket_says_which_receiver_reads_it():
    snapshot = sample()
    snapshot['udp']['sockets'] = [
        {'address': '0.0.0.0:5566', 'queue_bytes': 0, 'drops': 30, 'receiver': 0},
        {'address': '0.0.0.0:5566', 'queue_bytes': 2048, 'drops': 7, 'receiver': 1}]
    lines = render_table(snapshot, NOW).splitlines()
    start = lines.index('UDP SOCKET    RECEIVER   QUEUED  KERNEL DROPS')
    assert lines[start + 1:start + 3] == ['0.0.0.0:5566         0      0 B            30',
                                          '0.0.0.0:5566         1  2.0 KiB             7']
    assert 'UDP datagrams read: 5,000 (100 in the last minute); kernel drops in all: 37' in lines

"""Sealed files with a real loghogd: the history it writes across rotations and
compression verifies intact; every kind of tampering fails `loghogd verify`, naming the
file and line; a daemon without a key refuses to start; a crash is not tampering."""

import contextlib
import io
import json
import lzma
import os
import shutil
import signal
import socket
import time

import pytest

from loghogd import cli, logs, seal_keys, sealing, status_command, verify
from tests.support import (Daemon, backup_names, file_history, frame, read_lines, send_tcp,
                           wait_for)

SEALED = '[app]\nrotate = daily\nmax_size = 2K\nbackup_count = 20\nsealed = yes\n'


def make_daemon(base, facilities=SEALED, interval=1, init=True):
    """A Daemon (not started) with a sealing key made by seal-init; its verification key
    is in ``base/verification.key``."""
    base.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(base, facilities, sections={'seal': {'interval': str(interval)},
                                                'compressor': {'level': '0'}})
    if init:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert cli.main(['seal-init', '-c', str(daemon.config_path)]) == 0
        (base / 'verification.key').write_text(out.getvalue())
    return daemon


def run_verify(base, *paths, anchor=None):
    out = io.StringIO()
    args = ['--key', str(base / 'verification.key')] + (['--anchor', anchor] if anchor else [])
    with contextlib.redirect_stdout(out):
        code = verify.main(args + [str(p) for p in paths])
    return code, out.getvalue()


def seals(sidecar):
    """The seal records of a sidecar (parsed)."""
    with open(sidecar, 'rb') as stream:
        lines = stream.read().splitlines(keepends=True)
    return [sealing.parse_record(line, False) for line in lines[1:] if line.startswith(b's ')]


def wait_sealed(folder, base='root.log', after=0):
    """Until the live file's last seal covers every line of it and is from epoch > after."""
    live, sidecar = folder / base, folder / (base + '.seal')

    def sealed():
        if not sidecar.exists():
            return False
        found = seals(sidecar)
        return found and found[-1].lines == len(read_lines(live)) and found[-1].last_epoch > after
    wait_for(sealed, 15, message='a seal covering every line')
    return seals(sidecar)[-1]


def all_compressed(folder):
    names = backup_names(folder)
    return names and all(n.endswith('.xz') for n in names) and names


def send_lines(port, start, count, width=60):
    send_tcp(port, b''.join(frame('app', 'message %05d %s' % (n, 'x' * width))
                            for n in range(start, start + count)))


@pytest.fixture(scope='module')
def history(tmp_path_factory):
    """A sealed history written by a real daemon: four compressed backups (one rotation
    per burst of lines), a live file with a few sealed lines, then two empty epochs
    sealed; the daemon stopped.  Tests tamper with copies of it."""
    base = tmp_path_factory.mktemp('sealed') / 'd'
    daemon = make_daemon(base)
    daemon.start()
    folder = daemon.logdir / 'app'
    try:
        sent = 0
        for burst in range(4):
            send_lines(daemon.tcp_port, sent, 40)     # > max_size: rotates after the write
            sent += 40
            wait_for(lambda: len(backup_names(folder)) > burst, 15, message='rotation')
            wait_sealed(folder)        # each backup holds seals: a forger needs old keys
        live = folder / 'root.log'
        while True:   # a few lines in the live file (a burst may have spilled into it)
            send_lines(daemon.tcp_port, sent, 6)
            sent += 6
            wait_for(lambda: len(file_history(folder)) == sent, 20, message='lines written')
            wait_sealed(folder)    # after the seal, a rotation of that write is done too
            if len(read_lines(live)) >= 6:
                break
        wait_for(lambda: all_compressed(folder), 20, message='every backup compressed')
        last = wait_sealed(folder)
        wait_sealed(folder, after=last.last_epoch + 1)   # two more (empty) epochs sealed
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    return base, sent


@pytest.fixture
def copy(history, tmp_path):
    """A copy of the sealed history to tamper with: (base, app folder, live lines)."""
    base, _ = history
    target = tmp_path / 'copy'
    shutil.copytree(base, target)
    folder = target / 'log' / 'app'
    return target, folder, len(read_lines(folder / 'root.log'))


def test_untampered_history_across_rotations_and_compression_verifies_intact(history):
    base, sent = history
    folder = base / 'log' / 'app'
    backups = len(all_compressed(folder))
    assert backups >= 4
    assert sorted(n for n in os.listdir(folder) if n.endswith('.seal')) == sorted(
        [n[:-3] + '.seal' for n in backup_names(folder)] + ['root.log.seal'])
    code, out = run_verify(base, folder)
    assert code == 0, out
    assert 'OK ' in out and '%d files' % (backups + 1) in out
    # The same, file by file (the live file alone begins its history later: a note).
    code, out = run_verify(base, *[folder / n for n in backup_names(folder)] + [folder / 'root.log'])
    assert code == 0, out
    code, out = run_verify(base, folder / 'root.log')
    assert code == 0 and 'history begins here' in out, out


def _lines(path):
    return path.read_bytes().splitlines(keepends=True)


def assert_broken(base, folder, path, line, *words):
    code, out = run_verify(base, folder)
    assert code == 1, out
    expected = 'BROKEN %s%s: ' % (path, '' if line is None else ':%d' % line)
    assert expected in out, out
    for word in words:
        assert word in out, out


def test_a_byte_edited_in_the_live_file_is_found(copy):
    base, folder, live_lines = copy
    live = folder / 'root.log'
    data = bytearray(live.read_bytes())
    data[data.index(b'message') + 9] ^= 1       # in line 1
    live.write_bytes(bytes(data))
    assert_broken(base, folder, live, 1, 'do not match the chain')


def test_a_byte_edited_in_a_recompressed_backup_is_found(copy):
    base, folder, live_lines = copy
    middle = folder / backup_names(folder)[1]
    lines = lzma.decompress(middle.read_bytes()).splitlines(keepends=True)
    lines[7] = lines[7].replace(b'message', b'massage')
    middle.write_bytes(lzma.compress(b''.join(lines)))
    assert_broken(base, folder, middle, 1, 'do not match the chain')


def test_a_missing_middle_backup_is_found(copy):
    base, folder, live_lines = copy
    names = backup_names(folder)
    os.unlink(folder / names[1])
    os.unlink(folder / (names[1][:-3] + '.seal'))
    assert_broken(base, folder, folder / names[2], 1, 'does not continue the chain')


def test_lines_cut_after_a_seal_are_found(copy):
    base, folder, live_lines = copy
    live = folder / 'root.log'
    live.write_bytes(b''.join(_lines(live)[:-2]))
    assert_broken(base, folder, live, live_lines - 1, 'cut short')


def test_two_reordered_lines_are_found(copy):
    base, folder, live_lines = copy
    live = folder / 'root.log'
    lines = _lines(live)
    lines[2], lines[3] = lines[3], lines[2]
    live.write_bytes(b''.join(lines))
    assert_broken(base, folder, live, 1, 'changed, inserted, removed or reordered')


def test_an_inserted_line_is_found(copy):
    base, folder, live_lines = copy
    live = folder / 'root.log'
    lines = _lines(live)
    lines.insert(3, lines[3])
    live.write_bytes(b''.join(lines))
    assert_broken(base, folder, live, 1, 'changed, inserted, removed or reordered')


def attacker_key(base):
    """What an intruder finds on the machine: the key of the current epoch."""
    return seal_keys.load(str(base / 'lib' / 'seal.key'))


def forge_sidecar(live, stolen, start_prev, name=None):
    """Rebuild ``live``'s sidecar from its (edited) content with the stolen key: a valid
    chain and a seal of the stolen key's epoch, made at a time right after it."""
    name = name or sealing.history_name(live.parent.name, live.name)
    chain = sealing.Chain(start_prev)
    chain.add(live.read_bytes())
    chain.close_chunk()
    time_us = int(stolen.epoch_end() * 1e6) + 1
    seal = sealing.make_seal(bytes(stolen.key), name, stolen.epoch, stolen.epoch, chain.lines,
                             chain.size, time_us, chain.last)
    (live.parent / (live.name + '.seal')).write_bytes(
        sealing.encode_start(start_prev, time_us, name) + b''.join(chain.take_records()) + seal)


def test_a_sidecar_rebuilt_with_the_current_key_is_found(copy):
    base, folder, live_lines = copy
    live = folder / 'root.log'
    start = sealing.parse_record(_lines(folder / 'root.log.seal')[0], True)
    live.write_bytes(live.read_bytes().replace(b'message', b'MESSAGE', 1))
    forge_sidecar(live, attacker_key(base), start.prev)
    assert_broken(base, folder, live, live_lines, 'were never sealed')


def test_cutting_back_to_an_older_seal_and_sealing_with_the_current_key_is_found(copy):
    """journald's CVE-2023-31438: epochs in which nothing was written are sealed too, so
    cutting the file back to an older seal and going on with the current key leaves a gap."""
    base, folder, live_lines = copy
    sidecar, live = folder / 'root.log.seal', folder / 'root.log'
    records = _lines(sidecar)
    seal_at = [i for i, r in enumerate(records) if r.startswith(b's ')][-3]   # an older seal
    older = sealing.parse_record(records[seal_at], False)
    stolen = attacker_key(base)
    chain = sealing.Chain(older.chain_hash, older.lines, older.size)
    forged_line = b'a line the intruder wants to be there\n'
    chain.add(forged_line)
    chain.close_chunk()
    time_us = int(stolen.epoch_end() * 1e6) + 1
    seal = sealing.make_seal(bytes(stolen.key), sealing.history_name(folder.name, 'root.log'), stolen.epoch, stolen.epoch,
                             chain.lines, chain.size, time_us, chain.last)
    sidecar.write_bytes(b''.join(records[:seal_at + 1]) + b''.join(chain.take_records()) + seal)
    live.write_bytes(live.read_bytes()[:older.size] + forged_line)
    assert_broken(base, folder, live, older.lines + 1, 'were never sealed')


def test_a_missing_seal_of_an_empty_epoch_is_found(copy):
    base, folder, live_lines = copy
    sidecar = folder / 'root.log.seal'
    records = _lines(sidecar)
    positions = [i for i, r in enumerate(records) if r.startswith(b's ')]
    del records[positions[-2]]                 # an empty epoch's seal, not the last one
    sidecar.write_bytes(b''.join(records))
    assert_broken(base, folder, folder / 'root.log', live_lines, 'were never sealed')


def test_a_seal_whose_time_is_not_its_epoch_is_found(copy):
    """journald's CVE-2023-31439: a seal made with the current key cannot pass for an
    older epoch, nor claim an older time."""
    base, folder, live_lines = copy
    sidecar = folder / 'root.log.seal'
    records = _lines(sidecar)
    last = sealing.parse_record(records[-1], False)
    stolen = attacker_key(base)
    early = int((stolen.epoch_end(last.first_epoch - 2)) * 1e6)
    records[-1] = sealing.make_seal(bytes(stolen.key), sealing.history_name(folder.name, 'root.log'), stolen.epoch, stolen.epoch,
                                    last.lines, last.size, early, last.chain_hash)
    sidecar.write_bytes(b''.join(records))
    assert_broken(base, folder, folder / 'root.log', live_lines, 'not right after that epoch')
    # The right time, but the epoch claimed is the old one: the key gives it away.
    records[-1] = sealing.make_seal(bytes(stolen.key), sealing.history_name(folder.name, 'root.log'), last.first_epoch,
                                    last.last_epoch, last.lines, last.size, last.time_us,
                                    last.chain_hash)
    sidecar.write_bytes(b''.join(records))
    assert_broken(base, folder, folder / 'root.log', live_lines, "not made with that epoch's key")


def test_rebuilding_a_whole_single_file_history_is_found_only_against_an_anchor(tmp_path):
    """The documented limit: with the current key an intruder can rebuild a history that
    has no older file from scratch; a seal noted off the machine shows it."""
    base = tmp_path / 'd'
    daemon = make_daemon(base, '[app]\nrotate = daily\nbackup_count = 3\nsealed = yes\n')
    daemon.start()
    folder = daemon.logdir / 'app'
    try:
        send_lines(daemon.tcp_port, 0, 5)
        anchored = wait_sealed(folder)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    anchor = '%d:%s' % (anchored.last_epoch, anchored.chain_hash.hex()[:16])
    assert run_verify(base, folder, anchor=anchor)[0] == 0
    live = folder / 'root.log'
    live.write_bytes(live.read_bytes().replace(b'message', b'MESSAGE', 1))
    forge_sidecar(live, attacker_key(base), sealing.GENESIS)
    assert run_verify(base, folder)[0] == 0          # the limit, as documented
    code, out = run_verify(base, folder, anchor=anchor)
    assert code == 1 and 'anchored' in out, out


def test_a_file_never_sealed_is_reported_not_sealed(copy):
    base, folder, live_lines = copy
    (folder / 'other.log').write_text('a line\n')
    code, out = run_verify(base, folder / 'other.log')
    assert code == 2 and 'NOT SEALED %s' % (folder / 'other.log') in out, out
    code, out = run_verify(base, folder)       # intact history + an unsealed file: still 2
    assert code == 2 and 'OK ' in out, out


def test_daemon_with_a_sealed_facility_and_no_key_refuses_to_start(tmp_path):
    daemon = make_daemon(tmp_path / 'd', init=False)
    with pytest.raises(AssertionError, match='exited with 78'):
        daemon.start()
    assert 'facilities.conf:1: [app]: sealed = yes, but there is no sealing key' in daemon.output()


def test_reload_sealing_a_facility_without_a_key_is_refused(tmp_path):
    daemon = make_daemon(tmp_path / 'd', SEALED.replace('sealed = yes\n', ''), init=False)
    daemon.start()
    try:
        daemon.reload(SEALED)
        wait_for(lambda: 'still using the facilities loaded before' in daemon.output(), 10,
                 message='the reload refused')
        assert 'sealed = yes, but there is no sealing key' in daemon.output()
        send_lines(daemon.tcp_port, 0, 1)       # still serving, with the old table
        wait_for(lambda: len(read_lines(daemon.logdir / 'app' / 'root.log')) == 1, 10)
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_sigkill_mid_write_then_restart_verifies_intact(tmp_path):
    base = tmp_path / 'd'
    daemon = make_daemon(base, '[app]\nrotate = daily\nbackup_count = 3\nsealed = yes\n')
    daemon.start()
    folder = daemon.logdir / 'app'
    try:
        send_lines(daemon.tcp_port, 0, 5)
        wait_sealed(folder)
        with socket.create_connection(('127.0.0.1', daemon.tcp_port)) as sock:
            sock.sendall(b''.join(frame('app', 'after the seal %d' % n) for n in range(200)))
            wait_for(lambda: len(read_lines(folder / 'root.log')) > 5, 10)
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.proc.wait()
        daemon.stderr.close()
        written = len(read_lines(folder / 'root.log'))
        covered = sum(r.n_bytes for r in (sealing.parse_record(line, False) for line in
                                          _lines(folder / 'root.log.seal')[1:])
                      if r.kind == 'chunk')
        daemon.start()
        if covered < (folder / 'root.log').stat().st_size:   # else a seal came first
            wait_for(lambda: 'were not sealed before the restart; sealed now'
                     in daemon.output(), 10, message='the warning about unsealed lines')
        wait_sealed(folder)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert len(read_lines(folder / 'root.log')) == written
    code, out = run_verify(base, folder)
    assert code == 0, out


def test_logs_command_does_not_read_seal_files(history):
    base, sent = history
    out = io.BytesIO()
    assert logs.main(['-c', str(base / 'loghogd.conf'), 'app'], stdout=out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == sent and not any(b'loghog-seal' in line for line in lines)


def test_pruned_backups_take_their_seal_files_and_the_rest_verifies(tmp_path):
    base = tmp_path / 'd'
    daemon = make_daemon(base, SEALED.replace('backup_count = 20', 'backup_count = 2'))
    daemon.start()
    folder = daemon.logdir / 'app'
    try:
        sent = 0
        while 'deleted' not in daemon.output():      # backup_count pruned one
            rotations = daemon.output().count('rotated ')
            send_lines(daemon.tcp_port, sent, 40)
            sent += 40
            wait_for(lambda: daemon.output().count('rotated ') > rotations, 15)
        wait_for(lambda: len(all_compressed(folder) or []) == 2, 15)
        wait_sealed(folder)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    names = os.listdir(folder)
    assert sorted(n for n in names if n.endswith('.seal')) == sorted(
        [n[:-3] + '.seal' for n in backup_names(folder)] + ['root.log.seal'])
    code, out = run_verify(base, folder)
    assert code == 0 and 'the history begins here' in out, out


def test_status_and_prometheus_show_the_latest_seal_to_anchor(tmp_path):
    base = tmp_path / 'd'
    base.mkdir()
    daemon = Daemon(base, '[app]\nrotate = daily\nbackup_count = 3\nsealed = yes\n',
                    sections={'seal': {'interval': '1'},
                              'stats': {'interval': '1', 'prometheus_file': 'run/loghogd.prom'}})
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(['seal-init', '-c', str(daemon.config_path)]) == 0
    (base / 'verification.key').write_text(out.getvalue())
    daemon.start()
    folder = daemon.logdir / 'app'
    try:
        send_lines(daemon.tcp_port, 0, 3)
        sealed = wait_sealed(folder)

        def shown():
            text = io.StringIO()
            with contextlib.redirect_stdout(text):
                status_command.main(['--run-dir', str(daemon.rundir), '--json'])
            snapshot = json.loads(text.getvalue() or 'null') or {}
            seals = snapshot.get('tasks', {}).get('sealing', {}).get('seals') or []
            return seals and seals[0]['epoch'] is not None and seals[0]['epoch'] >= \
                sealed.last_epoch and seals[0]
        seal = wait_for(shown, 10, message='the seal in the status')
        prom = wait_for(lambda: (daemon.rundir / 'loghogd.prom').exists() and
                        'loghogd_seal_epoch{' in (daemon.rundir / 'loghogd.prom').read_text()
                        and (daemon.rundir / 'loghogd.prom').read_text(), 10)
        assert 'loghogd_seal_chain_prefix{path="%s"}' % (folder / 'root.log') in prom
        # The running daemon replaces the key every interval: no new key under it.
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            assert cli.main(['seal-init', '-c', str(daemon.config_path), '--force']) == 1
        assert 'loghogd is running (PID %d)' % daemon.pid in err.getvalue()
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    code, out = run_verify(base, folder, anchor='%d:%s' % (seal['epoch'], seal['chain']))
    assert code == 0, out

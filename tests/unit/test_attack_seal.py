"""Attacks on sealed files (issue 19), the way an intruder with the daemon's account, or a
careless operator or a failing machine, would try them: each test names what a user would
see.  The daemon's side runs on a real Writer and Sealer with numbers for the clock
(tests/unit/test_sealing_daemon.Rig); the verifier is ``loghogd verify`` itself."""

import contextlib
import gzip
import io
import logging
import lzma
import os
import shutil
import time

import pytest

from loghogd import seal_keys, sealing, verify
from loghogd.errors import ConfigError
from tests.unit.test_sealing_daemon import INTERVAL, Rig, _history_with_rotation

PER_HOST = '[app]\nrotate = daily\nbackup_count = 3\nsealed = yes\nfile_per_host = yes\n'
INF = float('inf')


def run_verify(rig, *args):
    """``loghogd verify --key <the rig's verification key> ARGS...``: (exit status, stdout)."""
    key_file = rig.tmp / 'verification.key'
    key_file.write_text(sealing.format_verification_key(rig.keys.k0, rig.keys.t0,
                                                        rig.keys.interval))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = verify.main(['--key', str(key_file)] + [str(a) for a in args])
    return code, out.getvalue()


def seals_of(sidecar):
    with open(sidecar, 'rb') as stream:
        return [sealing.parse_record(line, False) for line in stream if line.startswith(b's ')]


def write_hosts(rig, hosts):
    facility = rig.table.lookup('app', 'root')
    for host in hosts:
        rig.writer.add(facility, host, 'a line from %s\n' % host)
    rig.writer.flush(rig.now)


# -- the daemon's side: failures that must not look like tampering --------------------------

def test_a_sealing_key_that_cannot_be_written_seals_each_epoch_once(tmp_path, caplog):
    """A4-1: the work folder's disk fails (here: the folder is gone) while the log folder's
    works.  Before the fix the round was over but the key stayed at the sealed epoch, so
    the sealer's deadline stayed in the past: every loop pass sealed the same epoch again
    (a seal and two fdatasyncs per file, an error line per pass) and verify then called the
    clean file tampered ("a seal of epoch 0 after one of epoch 0: seals out of order")."""
    rig = Rig(tmp_path)
    rig.write('one')
    shutil.rmtree(rig.workdir)
    rig.next_epoch()
    assert rig.sealer.next_deadline() > rig.now, 'the sealer would run on every loop pass'
    for pass_ in range(3):       # the loop comes back before the next epoch ends
        rig.sealer.tick(rig.now + 0.001 * pass_)
    rig.write('two')
    rig.next_epoch()
    assert [(s.first_epoch, s.last_epoch) for s in seals_of(rig.live + '.seal')] == [(0, 0),
                                                                                   (1, 1)]
    assert 'cannot write the next sealing key' in caplog.text
    code, out = rig.verify()
    assert code == 0, out
    os.mkdir(rig.workdir)            # the disk is back: the next round writes the key
    rig.next_epoch()
    assert seal_keys.load(seal_keys.key_path(rig.workdir)).epoch == 3
    assert rig.verify()[0] == 0


def test_a_daemon_killed_in_the_middle_of_a_seal_round_verifies_intact_after_restart(
        tmp_path, caplog):
    """A4-2: a seal round goes in slices of 5 ms; SIGKILL after some files got the seal of
    epoch 1 and before the others did.  At restart the key (still of epoch 1 on disk) was
    moved on past epoch 1, so the files not sealed yet never got epoch 1: verify reported
    "epochs 1 to 1 were never sealed ...: lines were cut and the file went on" for a
    crash."""
    rig = Rig(tmp_path, PER_HOST)
    write_hosts(rig, ['host0', 'host1', 'host2'])
    rig.next_epoch()                          # epoch 0 sealed in every file
    write_hosts(rig, ['host0', 'host1', 'host2'])
    rig.now += INTERVAL
    rig.sealer.tick(rig.now, budget_s=0.0)    # one file of three sealed, then the SIGKILL
    assert rig.sealer.next_deadline() == 0.0  # (the round was not over)
    rig.start()                               # the restart
    rig.next_epoch()
    code, out = rig.verify()
    assert code == 0 and out.count('OK ') == 3, out
    assert 'will report epochs' not in caplog.text


# -- verify: files it must not skip ---------------------------------------------------------

def test_a_forged_copy_of_a_backup_in_another_compression_is_not_skipped(tmp_path):
    """A4-3: ``root.log.<stamp>.gz`` (or an uncompressed ``root.log.<stamp>``) planted
    beside the real ``root.log.<stamp>.xz``: verify checked one form of the backup and
    silently skipped the other, and said OK, exit 0, while readers of the folder (zless,
    grep, ``loghogd logs``, which picks one compressed form) could read the forged one.
    A compression under way leaves two forms for a moment: both hold the same bytes."""
    rig, _ = _history_with_rotation(tmp_path)
    backup = rig.live + '.2026-12-05-00-00-00-000000'
    with open(backup, 'rb') as stream:
        data = stream.read()
    with lzma.open(backup + '.xz', 'wb') as stream:
        stream.write(data)
    assert run_verify(rig, os.path.dirname(rig.live))[0] == 0   # a compression under way
    os.unlink(backup)
    with gzip.open(backup + '.gz', 'wb') as stream:
        stream.write(data.replace(b'line 7 ', b'FORGED '))
    code, out = run_verify(rig, os.path.dirname(rig.live))
    assert code == 1 and 'BROKEN %s.gz:1: ' % backup in out, out
    os.unlink(backup + '.gz')
    with open(backup, 'wb') as stream:
        stream.write(data.replace(b'line 8 ', b'FORGED '))
    code, out = run_verify(rig, os.path.dirname(rig.live))
    assert code == 1 and 'BROKEN %s:1: ' % backup in out, out


# -- verify --anchor --------------------------------------------------------------------------

def test_an_anchor_without_enough_hash_digits_is_a_usage_error(tmp_path):
    """A4-4: ``--anchor 5:`` (the hash lost in a copy and paste) matched any chain: a
    history cut back and rebuilt passed its anchor.  loghogd status shows 16 hex digits,
    the Prometheus file 12; fewer is refused."""
    rig = Rig(tmp_path)
    rig.write('one')
    rig.next_epoch()
    seal = seals_of(rig.live + '.seal')[-1]
    for anchor in ('%d:' % seal.last_epoch, '%d:%s' % (seal.last_epoch, seal.chain_hash.hex()[:3])):
        code, out = run_verify(rig, '--anchor', anchor, rig.live)
        assert code == 64 and '--anchor' in out, (anchor, out)
    anchor = '%d:%s' % (seal.last_epoch, seal.chain_hash.hex()[:12])
    assert run_verify(rig, '--anchor', anchor, rig.live)[0] == 0


def test_an_anchor_with_a_folder_of_several_histories_is_not_a_false_alarm(tmp_path):
    """A4-5: docs/security.md shows ``verify --anchor E:H /var/log/loghogd/shop``; the
    anchor (one file's seal, from loghogd status) was required of every history in the
    folder, so a folder with two (file_per_host, a sub-facility) reported the other one
    BROKEN ("differs from the anchored one"), exit 1, on an untouched folder.  It now asks
    for the files of the anchored history."""
    rig = Rig(tmp_path, PER_HOST)
    write_hosts(rig, ['host0', 'host1'])
    rig.next_epoch()
    status = rig.sealer.status(rig.now)['seals'][0]
    anchor = '%d:%s' % (status['epoch'], status['chain'])
    folder = os.path.dirname(status['path'])
    code, out = run_verify(rig, '--anchor', anchor, folder)
    assert code == 64 and 'one history' in out and 'BROKEN' not in out, out
    code, out = run_verify(rig, '--anchor', anchor, status['path'])
    assert code == 0, out


# -- verify: what a history is bound to -------------------------------------------------------

def test_a_history_copied_into_another_apps_folder_is_found(tmp_path):
    """A4-6: every sealed file of every app was sealed with the same key under its name in
    its folder (``root.log``): an intruder with no key at all could replace the history of
    app ``bank`` by a copy of app ``shop``'s, and ``verify log/bank`` said OK, exit 0.
    Now a history is sealed under its app folder and name (``bank/root.log``); verify takes
    the folder's name as the app, or ``--app`` for copies kept elsewhere."""
    rig = Rig(tmp_path, '[shop]\nrotate = daily\nbackup_count = 3\nsealed = yes\n'
                        '[bank]\nrotate = daily\nbackup_count = 3\nsealed = yes\n')
    for app in ('shop', 'bank'):
        rig.writer.add(rig.table.lookup(app, 'root'), 'h', 'a line of %s\n' % app)
    rig.writer.flush(rig.now)
    rig.next_epoch()
    rig.stop()
    shop, bank = (os.path.join(rig.logdir, app) for app in ('shop', 'bank'))
    assert run_verify(rig, bank)[0] == 0
    for name in os.listdir(bank):
        os.unlink(os.path.join(bank, name))
    for name in os.listdir(shop):
        shutil.copy(os.path.join(shop, name), bank)
    code, out = run_verify(rig, bank)
    assert code == 1, out
    assert "belongs to 'shop/root.log', not 'bank/root.log'" in out
    # A copy of shop's history kept elsewhere verifies with --app shop, not as bank's.
    archive = os.path.join(str(tmp_path), 'archive')
    shutil.copytree(shop, archive)
    assert run_verify(rig, archive, '--app', 'shop')[0] == 0
    assert run_verify(rig, archive, '--app', 'bank')[0] == 1
    assert run_verify(rig, archive)[0] == 1   # 'archive' is no application of its seals


def test_a_new_key_from_seal_init_force_seals_at_its_first_epoch(tmp_path, caplog):
    """A4-7: ``seal-init --force`` (docs: "starts a new key"), files sealed with the old
    key left in place.  At start the daemon took the old key's seals (epoch 50 here) for
    this key's and moved the new key on to epoch 51: nothing was sealed until the new
    key's epoch 51 came, as long as the old key had run (a year of seals, a year without).
    The seals of another key are now told by their time, which does not fit this key's
    epochs."""
    rig = Rig(tmp_path)
    rig.write('one')
    rig.next_epoch(50)
    rig.stop()
    rig.now += 5
    text = seal_keys.create(rig.workdir, INTERVAL, rig.now, force=True)
    rig.keys = verify.Keys(*sealing.parse_verification_key(text))
    rig.start()
    assert rig.sealer.key.epoch == 0
    rig.write('two')
    rig.next_epoch()
    last = seals_of(rig.live + '.seal')[-1]
    assert (last.first_epoch, last.last_epoch, last.lines) == (0, 0, 2)
    assert 'made with another key' in caplog.text
    code, out = rig.verify()        # the old seals do not follow the new key's: reported
    assert code == 1 and 'BROKEN' in out, out


# -- verify: files that are not files -------------------------------------------------------

def verify_in_a_process(rig, *paths):
    """``python -m loghogd verify`` in a child process, killed after 10 s (a hang)."""
    import subprocess
    import sys
    from tests.support import ROOT
    key_file = rig.tmp / 'verification.key'
    key_file.write_text(sealing.format_verification_key(rig.keys.k0, rig.keys.t0,
                                                        rig.keys.interval))
    try:
        result = subprocess.run([sys.executable, '-m', 'loghogd', 'verify', '--key',
                                 str(key_file)] + [str(p) for p in paths], cwd=str(ROOT),
                                capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail('loghogd verify hangs on %s' % (paths,))
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize('what', ['sidecar', 'backup'])
def test_a_fifo_in_place_of_a_seal_file_or_backup_is_reported_not_waited_for(tmp_path, what):
    """A4-10: an intruder with the daemon's account replaces ``root.log.seal`` with a FIFO
    (or plants one named like a backup, which the operator's ``root.log*`` passes):
    ``loghogd verify`` blocked for ever in open(), printing nothing, so the cron job that
    runs it never reports the tampering it hides.  Expected: BROKEN naming the file."""
    rig, sidecars = _history_with_rotation(tmp_path)
    folder = os.path.dirname(rig.live)
    if what == 'sidecar':
        target = sidecars[0]
        os.unlink(target)
        os.mkfifo(target)
        paths = [folder]
    else:
        target = rig.live + '.2026-12-06-00-00-00-000000'
        os.mkfifo(target)
        shutil.copy(sidecars[0], target + '.seal')
        paths = sorted(os.path.join(folder, n) for n in os.listdir(folder)
                       if n.startswith('root.log') and not n.endswith('.seal'))
    code, out = verify_in_a_process(rig, *paths)
    assert code == 1 and 'BROKEN %s' % target in out and 'not a regular file' in out, out


# -- verify: many histories -------------------------------------------------------------------

def sealed_host_files(folder, hosts, epoch, keys):
    """One file per host, each sealed at ``epoch`` and ``epoch + 1`` (as every file of a
    file_per_host facility is, every epoch), written with the sealing module directly."""
    os.makedirs(folder)
    key = sealing.key_at(keys.k0, 0, epoch)
    for host in range(hosts):
        name = 'h%d-root.log' % host
        data = b'a line of host %d\n' % host
        chain = sealing.Chain()
        chain.add(data)
        chain.close_chunk()
        sealed_as = sealing.history_name(os.path.basename(folder), name)
        records = [sealing.encode_start(sealing.GENESIS, 0, sealed_as)] + chain.take_records()
        for number, seal_key in enumerate((key, sealing.evolve(key))):
            made = int(sealing.epoch_end(epoch + number, keys.t0, keys.interval) * 1e6) + 1
            records.append(sealing.make_seal(seal_key, sealed_as, epoch + number, epoch + number,
                                             chain.lines, chain.size, made, chain.last))
        with open(os.path.join(folder, name), 'wb') as stream:
            stream.write(data)
        with open(os.path.join(folder, name + sealing.SUFFIX), 'wb') as stream:
            stream.write(b''.join(records))


def test_verifying_many_histories_derives_the_keys_once(tmp_path):
    """A4-11: each epoch's key is derived from k_0 forward, one SHA-256 an epoch; verify
    kept only the last key derived, so each history whose seals begin before the previous
    history's end started again from k_0: with 60-s epochs a year of key history costs
    about half a million SHA-256 (0.3 s) per history, five minutes for a thousand host
    files that keep a week of backups each, where the seals themselves take seconds.
    Measured as a ratio on the same machine: twenty histories against one."""
    import time
    epoch = 300000                       # 300,000 one-second epochs: 3.5 days
    t0 = int(time.time()) - epoch - 10
    keys = verify.Keys(sealing.new_key(), t0, 1)
    rig = type('R', (), {'tmp': tmp_path, 'keys': keys})
    sealed_host_files(str(tmp_path / 'one'), 1, epoch, keys)
    sealed_host_files(str(tmp_path / 'many'), 20, epoch, keys)
    began = time.perf_counter()
    code, out = run_verify(rig, tmp_path / 'one')
    one_s = time.perf_counter() - began
    assert code == 0, out
    began = time.perf_counter()
    code, out = run_verify(rig, tmp_path / 'many')
    many_s = time.perf_counter() - began
    assert code == 0 and out.count('OK ') == 20, out
    assert many_s < 4 * one_s, 'one history %.2f s, twenty %.2f s' % (one_s, many_s)


def test_keys_asked_in_any_order_are_the_documented_derivation():
    """Keys.at going back (from its checkpoints) gives what k_n = SHA-256(label || k_(n-1))
    gives from k_0."""
    keys = verify.Keys(sealing.new_key(), 0, 60)
    for epoch in (5000, 3, 2047, 1024, 1023, 7000, 6999, 0, 4096, 4097):
        assert keys.at(epoch) == sealing.key_at(keys.k0, 0, epoch), epoch


# -- a crash in the middle of a rotation ------------------------------------------------------

@pytest.mark.parametrize('renamed', ['the log file', 'the log file and its seal file'])
def test_a_crash_in_the_middle_of_a_rotation_is_not_tampering(tmp_path, renamed, caplog):
    """A4-12: rotation renames the log file, then its seal file, then starts the new
    file's seal file from the backup's last hash.  SIGKILL (or a power cut before the
    folder reached the disk) between those steps: at restart the daemon started the new
    file's chain afresh (no seal file) or went on with the backup's seal file as the live
    file's ("holds 0 bytes, but its seal chain covers N: cut short outside loghogd"), and
    verify called the history tampered."""
    rig = Rig(tmp_path)
    rig.write('one', 'two')
    rig.next_epoch()
    rig.write('three')
    for log_file in list(rig.writer.files.values()):
        rig.writer.release(log_file)
    backup = rig.live + '.2026-12-05-00-00-00-000000'
    rig.sealer.before_rename(rig.live)
    os.rename(rig.live, backup)
    if renamed == 'the log file and its seal file':
        os.rename(rig.live + '.seal', backup + '.seal')
    rig.start()                       # the crash, and the restart
    rig.write('four')
    rig.next_epoch()
    code, out = rig.verify()
    assert code == 0 and '2 files' in out, out
    assert 'cut short outside loghogd' not in caplog.text


# -- the clock --------------------------------------------------------------------------------

def test_a_clock_set_back_behind_the_key_is_logged_with_when_sealing_resumes(tmp_path, caplog):
    """A4-13: the clock ran an hour ahead (a bad NTP server, a typo in ``date -s``) and was
    set right: the daemon had sealed up to the wrong time and moved the key on (it cannot
    go back), so it made no seal for an hour, and said nothing: the lines of that hour
    stayed unsealed, changeable by an intruder, with no trace in the daemon's log.  Now
    it logs once, with when sealing resumes (``loghogd status`` shows it too)."""
    caplog.set_level(logging.INFO)
    rig = Rig(tmp_path)
    rig.write('one')
    rig.now += 3600                           # the clock an hour ahead
    rig.sealer.tick(rig.now, INF)
    rig.now -= 3600 - 5                       # set right
    rig.write('two')
    for _ in range(3):
        rig.sealer.tick(rig.now, INF)
        rig.now += 1
    assert caplog.text.count('behind the sealing key') == 1, caplog.text
    assert 'no seal until' in caplog.text
    rig.now += 3600 + INTERVAL                # past the key's epoch: sealing resumes
    rig.sealer.tick(rig.now, INF)
    assert seals_of(rig.live + '.seal')[-1].lines == 2
    assert rig.verify()[0] == 0


# -- verify: the files given ------------------------------------------------------------------

def test_the_documented_glob_of_a_history_verifies_intact(tmp_path):
    """A4-14: docs/security.md: ``loghogd verify --key vkey.txt /var/log/loghogd/shop/root.log*``.
    The shell's glob passes the seal files too, and verify took each for a log file of its
    own: "NOT SEALED root.log.seal: it has no seal file", exit 2, on an intact history."""
    import glob
    rig, _ = _history_with_rotation(tmp_path)
    given = sorted(glob.glob(rig.live + '*'))
    assert any(path.endswith('.seal') for path in given)
    code, out = run_verify(rig, *given)
    assert code == 0 and 'OK ' in out and '2 files' in out and 'NOT SEALED' not in out, out
    seal = seals_of(rig.live + '.seal')[-1]
    code, out = run_verify(rig, '--anchor', '%d:%s' % (seal.last_epoch,
                                                       seal.chain_hash.hex()[:16]), *given)
    assert code == 0, out


def test_a_deleted_log_file_whose_seal_file_is_left_is_found(tmp_path):
    """A4-15: ``rm root.log`` (the live file, every line of it sealed): verify said "OK
    ... 1 files; sealed through epoch 0", exit 0, though ``root.log.seal`` is right there
    saying the file held sealed lines.  The daemon never deletes a log file without its
    seal file (pruning deletes the seal file last: one left by a crash while pruning the
    oldest backup is a note)."""
    rig, sidecars = _history_with_rotation(tmp_path)
    folder = os.path.dirname(rig.live)
    os.unlink(rig.live)
    code, out = run_verify(rig, folder)
    assert code == 1 and 'BROKEN %s: ' % rig.live in out and 'deleted' in out, out
    (tmp_path / 'pruned').mkdir()
    rig, sidecars = _history_with_rotation(tmp_path / 'pruned')
    os.unlink(sidecars[0][:-len('.seal')])   # the oldest backup pruned, a crash, its seal file left
    code, out = run_verify(rig, os.path.dirname(rig.live))
    assert code == 0 and 'note: ' in out, out


# -- the verification key ---------------------------------------------------------------------

def test_a_garbage_or_wrong_verification_key_says_so(tmp_path):
    """A4-17: a verification key with a 400-digit t0 or interval (a paste gone wrong) made
    verify die with ``OverflowError: int too large to convert to float`` and a traceback
    (exit 1, the status of tampering); a valid key of another machine, or the one from
    before ``seal-init --force``, made it call the seals forged ("its time or epoch is
    forged", "not made with that epoch's key: forged"), never hinting at the key."""
    rig = Rig(tmp_path)
    rig.write('one')
    rig.next_epoch()
    text = sealing.format_verification_key(rig.keys.k0, rig.keys.t0, rig.keys.interval)
    prefix, key, t0, interval = text.split(':')
    for garbage in ((prefix, key, '9' * 400, interval), (prefix, key, t0, '9' * 400)):
        (tmp_path / 'garbage.key').write_text(':'.join(garbage))
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = verify.main(['--key', str(tmp_path / 'garbage.key'), rig.live])
        assert code == 64 and 'garbage.key' in out.getvalue(), out.getvalue()
    for other in ((prefix, sealing.new_key().hex(), t0, interval), (prefix, key, '0', '1')):
        rig.keys = verify.Keys(*sealing.parse_verification_key(':'.join(other)))
        code, out = run_verify(rig, rig.live)
        assert code == 1 and 'not the verification key' in out, out


# -- seal files a crash left empty ------------------------------------------------------------

def test_a_seal_file_left_empty_by_a_crash_does_not_stop_the_daemon(tmp_path):
    """A4-19: the new file's seal file is created at rotation and written and fdatasynced
    at once; a power cut in between leaves it empty (ext4's delayed allocation), and a
    crash while its first record was written leaves a cut record the daemon cuts off,
    also empty.  At start the daemon died with a traceback (``TypeError: object supporting
    the buffer API required``, from sealing.Chain with no previous hash): nothing logged
    at all until someone deleted the file by hand.  Now an empty seal file is no seal
    file, and the chain goes on from the backup's."""
    rig = Rig(tmp_path)
    rig.write('one', 'two')
    rig.next_epoch()
    for log_file in list(rig.writer.files.values()):
        rig.writer.release(log_file)
    backup = rig.live + '.2026-12-05-00-00-00-000000'
    rig.sealer.before_rename(rig.live)
    os.rename(rig.live, backup)
    rig.sealer.after_rename(rig.live, backup)
    open(rig.live, 'wb').close()              # rotation's new, empty file
    open(rig.live + '.seal', 'wb').close()    # the power cut: its seal file empty
    rig.start()
    rig.write('three')
    rig.next_epoch()
    code, out = rig.verify()
    assert code == 0 and '2 files' in out, out


# -- a seal file damaged or deleted, and the daemon restarted ---------------------------------

def test_lines_edited_with_the_seal_file_damaged_or_deleted_are_not_laundered(tmp_path):
    """A4-18: an intruder edits a sealed live file that has no backup yet (every host file
    of a file_per_host facility, every facility on its first day) and damages its seal
    file; at the next start the daemon moved it to ``root.log.seal.damaged`` ("loghogd
    verify will report the break", its log said) and sealed the edited lines afresh;
    verify ignored the ``.damaged`` file and said OK, exit 0, not even a note.  Deleting
    the seal file instead leaves no trace but the daemon's log: verify now notes the lines
    the daemon adopted when it started the seal file."""
    rig = Rig(tmp_path)
    rig.write('one', 'two')
    rig.next_epoch()
    rig.stop()
    with open(rig.live + '.seal', 'r+b') as stream:
        stream.write(b'garbage')
    with open(rig.live, 'wb') as stream:
        stream.write(b'ONE\ntwo\n')
    rig.start()
    rig.next_epoch()
    code, out = rig.verify()
    assert code == 1 and 'BROKEN %s: ' % rig.live in out and '.damaged' in out, out
    os.unlink(rig.live + '.seal.damaged')     # the intruder tidies up: the deletion case
    code, out = rig.verify()
    assert code == 0 and 'lines 1-2 were in the file when its seal file was started' in out, out


def test_a_fifo_in_place_of_a_seal_file_does_not_block_the_daemon(tmp_path, caplog):
    """A4-21: ``root.log.seal`` replaced by a FIFO (the daemon's account can): at the next
    seal the daemon opened it for writing, which blocks until someone opens it for
    reading: the loop stopped, every client with it.  Now the seal fails, counted and
    logged, and the daemon goes on."""
    import signal

    class Hung(Exception):
        """Not an OSError, which the sealer catches."""

    def hung(signum, frame):
        raise Hung('the sealer blocked')

    rig = Rig(tmp_path)
    rig.write('one')
    rig.next_epoch()
    os.unlink(rig.live + '.seal')
    os.mkfifo(rig.live + '.seal')
    rig.write('two')
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(3)
    try:
        rig.next_epoch()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert rig.counters.events['seal_errors'] >= 1
    assert 'cannot seal' in caplog.text


def test_a_fifo_in_place_of_the_sealing_key_is_refused_not_waited_for(tmp_path):
    """The daemon's start read seal.key with a blocking open: a FIFO put in its place (by
    the daemon's account) stopped the start for ever.  Now a clear configuration error."""
    path = str(tmp_path / 'seal.key')
    os.mkfifo(path)
    started = time.monotonic()
    with pytest.raises(ConfigError, match='not a regular file'):
        seal_keys.load(path)
    assert time.monotonic() - started < 5

"""The daemon's side of sealing (sealer.py) with a real Writer in a temporary folder and
numbers for the clock, checked by the verifier (verify.py)."""

import contextlib
import io
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from loghogd import seal_keys, sealing, sealer as sealer_module, verify
from loghogd.facilities import load_facilities
from loghogd.sealer import Sealer
from loghogd.stats import Counters
from loghogd.writer import Writer

T0 = 1_700_000_000
INTERVAL = 10


class Rig:
    """A Writer and a Sealer on ``tmp``, a key made at T0; ``now`` moves by hand."""

    def __init__(self, tmp, facilities='[app]\nrotate = daily\nbackup_count = 3\nsealed = yes\n'):
        self.tmp = tmp
        (tmp / 'facilities.conf').write_text(facilities)
        self.table = load_facilities(str(tmp / 'facilities.conf'))
        self.logdir = str(tmp / 'log')
        self.workdir = str(tmp / 'lib')
        self.keys = verify.Keys(*sealing.parse_verification_key(
            seal_keys.create(self.workdir, INTERVAL, T0)))
        self.now = T0 + 1.0
        self.start()

    def start(self):
        self.counters = Counters()
        self.writer = Writer(self.logdir, self.counters)
        key = seal_keys.load(seal_keys.key_path(self.workdir))
        self.sealer = Sealer(self.writer, self.table, self.logdir, key, self.counters)
        self.sealer.start(self.now)

    def write(self, *lines, module='root'):
        facility = self.table.lookup('app', module)
        for line in lines:
            self.writer.add(facility, 'h', line + '\n')
        self.writer.flush(self.now)

    def next_epoch(self, epochs=1):
        self.now += epochs * INTERVAL
        self.sealer.tick(self.now, budget_s=float('inf'))

    def stop(self):
        self.writer.close(self.now)
        self.sealer.close()

    def verify(self, *paths, anchor=None):
        out = io.StringIO()
        found = verify.histories([str(p) for p in paths] or [os.path.join(self.logdir, 'app')])
        statuses = [verify.check_history(files, self.keys, anchor, out)
                    for _, files in sorted(found.items())]
        code = 1 if 1 in statuses else 2 if 2 in statuses else 0
        return code, out.getvalue()

    @property
    def live(self):
        return os.path.join(self.logdir, 'app', 'root.log')


def test_lines_written_and_sealed_verify_intact_and_empty_epochs_are_sealed(tmp_path):
    rig = Rig(tmp_path)
    rig.write('one', 'two')
    rig.next_epoch()
    rig.next_epoch()           # nothing written: sealed all the same
    rig.write('three')
    rig.next_epoch()
    seals = [line for line in open(rig.live + '.seal', 'rb') if line.startswith(b's ')]
    assert [sealing.parse_record(s, False).last_epoch for s in seals] == [0, 1, 2]
    assert [sealing.parse_record(s, False).lines for s in seals] == [2, 2, 3]
    code, out = rig.verify()
    assert code == 0, out
    status = rig.sealer.status(rig.now)
    assert status['key_epoch'] == 3 and status['seals'][0]['epoch'] == 2
    assert status['seals'][0]['path'] == rig.live and len(status['seals'][0]['chain']) == 16


def test_lines_after_the_last_seal_are_a_note_not_a_failure(tmp_path):
    rig = Rig(tmp_path)
    rig.write('one')
    rig.next_epoch()
    rig.write('two')
    rig.stop()
    code, out = rig.verify()
    assert code == 0 and 'not sealed yet' in out, out


def test_a_chain_without_any_seal_is_not_sealed(tmp_path):
    rig = Rig(tmp_path)
    rig.write('one')
    rig.stop()
    code, out = rig.verify()
    assert code == 2 and 'NOT SEALED' in out, out


def test_downtime_is_sealed_by_one_seal_over_the_missed_epochs(tmp_path):
    rig = Rig(tmp_path)
    rig.write('one')
    rig.next_epoch()
    rig.stop()
    rig.now += 5 * INTERVAL
    rig.start()
    seals = [sealing.parse_record(s, False) for s in open(rig.live + '.seal', 'rb')
             if s.startswith(b's ')]
    assert [(s.first_epoch, s.last_epoch) for s in seals] == [(0, 0), (1, 5)]
    code, out = rig.verify()
    assert code == 0 and 'sealed together' in out, out


def test_a_crash_between_write_and_seal_is_chained_at_restart(tmp_path, caplog):
    rig = Rig(tmp_path)
    rig.write('one')
    rig.next_epoch()
    rig.write('two', 'three')   # written, its records only in memory: then the crash
    with open(rig.live, 'ab') as stream:
        stream.write(b'cut sh')   # and a line cut short by the crash
    rig.start()
    assert 'were not sealed before the restart; sealed now' in caplog.text
    rig.write('four')           # the Writer ends the cut line first
    rig.next_epoch()
    code, out = rig.verify()
    assert code == 0, out
    assert b'cut sh\nfour\n' in open(rig.live, 'rb').read()


def test_a_sidecar_record_cut_by_a_crash_is_cut_off_at_start(tmp_path, caplog):
    rig = Rig(tmp_path)
    rig.write('one')
    rig.next_epoch()
    with open(rig.live + '.seal', 'ab') as stream:
        stream.write(b's 1 1 1')
    rig.start()
    assert 'incomplete' in caplog.text
    rig.next_epoch()
    assert rig.verify()[0] == 0


def test_seal_rounds_are_sliced_and_the_key_moves_on_after_the_last_file(tmp_path):
    facilities = ('[app]\nrotate = daily\nbackup_count = 3\nsealed = yes\nfile_per_host = yes\n')
    rig = Rig(tmp_path, facilities)
    facility = rig.table.lookup('app', 'root')
    for host in range(5):
        rig.writer.add(facility, 'host%d' % host, 'a line\n')
    rig.writer.flush(rig.now)
    rig.now += INTERVAL
    passes = 0
    while True:
        rig.sealer.tick(rig.now, budget_s=0.0)     # one file per pass
        passes += 1
        if rig.sealer.next_deadline() != 0.0:
            break
        assert rig.sealer.key.epoch == 0
    assert passes == 5 and rig.sealer.key.epoch == 1
    code, out = rig.verify()
    assert code == 0 and out.count('OK ') == 5, out


def test_reload_starts_and_stops_sealing(tmp_path):
    rig = Rig(tmp_path, '[app]\nrotate = daily\nbackup_count = 3\n')
    rig.write('before')
    (tmp_path / 'facilities.conf').write_text('[app]\nrotate = daily\nbackup_count = 3\n'
                                             'sealed = yes\n')
    rig.table = load_facilities(str(tmp_path / 'facilities.conf'))
    rig.writer.retarget(rig.table)
    rig.sealer.reload(rig.table)
    rig.write('after')
    rig.next_epoch()
    code, out = rig.verify()
    assert code == 0, out
    (tmp_path / 'facilities.conf').write_text('[app]\nrotate = daily\nbackup_count = 3\n')
    rig.table = load_facilities(str(tmp_path / 'facilities.conf'))
    rig.writer.retarget(rig.table)
    rig.sealer.reload(rig.table)
    assert rig.sealer.files == {}


def test_seal_files_are_not_log_files_for_the_logs_command(tmp_path):
    from loghogd.logfiles import LogFiles
    rig = Rig(tmp_path)
    rig.write('one')
    rig.next_epoch()
    listing = LogFiles(os.path.join(rig.logdir, 'app'), 'root').list()
    assert list(listing) == ['root.log']


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1,
                        max_size=300), min_size=1, max_size=60),
       st.integers(min_value=0), st.integers(1, 255))
def test_any_changed_byte_of_a_sealed_file_is_found(tmp_path_factory, lines, where, flip):
    rig = Rig(tmp_path_factory.mktemp('h'))
    half = len(lines) // 2
    rig.write(*lines[:half])
    rig.next_epoch()
    rig.write(*lines[half:])
    rig.next_epoch()
    rig.stop()
    data = bytearray(open(rig.live, 'rb').read())
    position = where % len(data)
    data[position] ^= flip
    with open(rig.live, 'wb') as stream:
        stream.write(data)
    code, out = rig.verify()
    assert code == 1, out
    line = data[:position].count(b'\n') + 1
    reported = int(out.split('root.log:')[1].split(':')[0])
    assert reported <= line       # the first line of the chunk that holds the change


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1,
                        max_size=50), min_size=2, max_size=40), st.data())
def test_any_removed_inserted_or_swapped_line_is_found(tmp_path_factory, lines, data):
    rig = Rig(tmp_path_factory.mktemp('h'))
    rig.write(*lines)
    rig.next_epoch()
    rig.stop()
    content = open(rig.live, 'rb').read().splitlines(keepends=True)
    action = data.draw(st.sampled_from(['remove', 'insert', 'swap']))
    i = data.draw(st.integers(0, len(content) - 1))
    if action == 'remove':
        del content[i]
    elif action == 'insert':
        content.insert(i, b'intruder\n')
    else:
        j = data.draw(st.integers(0, len(content) - 1))
        if content[i] == content[j]:
            return
        content[i], content[j] = content[j], content[i]
    with open(rig.live, 'wb') as stream:
        stream.write(b''.join(content))
    assert rig.verify()[0] == 1


def test_lines_rotated_out_after_the_last_seal_are_noted_as_not_sealed(tmp_path):
    rig = Rig(tmp_path)
    rig.write('one')
    rig.next_epoch()
    rig.write('two')
    for log_file in list(rig.writer.files.values()):
        rig.writer.release(log_file)       # as rotation does
    rig.sealer.before_rename(rig.live)
    os.rename(rig.live, rig.live + '.2026-12-05-00-00-00-000000')
    rig.sealer.after_rename(rig.live, rig.live + '.2026-12-05-00-00-00-000000')
    code, out = rig.verify()
    assert code == 0 and 'root.log.2026-12-05-00-00-00-000000: line 2 and what follows' in out, out
    rig.write('three')          # the new file's seal covers the old file's last line too
    rig.next_epoch()
    code, out = rig.verify()
    assert code == 0 and 'not sealed yet' not in out, out


def test_verify_command_line_errors(tmp_path, capsys):
    assert verify.main(['--key', str(tmp_path / 'none'), str(tmp_path)]) == 64
    (tmp_path / 'bad.key').write_text('not a key\n')
    assert verify.main(['--key', str(tmp_path / 'bad.key'), str(tmp_path)]) == 64
    (tmp_path / 'good.key').write_text(sealing.format_verification_key(bytes(32), 0, 60))
    assert verify.main(['--key', str(tmp_path / 'good.key'), str(tmp_path / 'missing')]) == 64
    assert verify.main(['--key', str(tmp_path / 'good.key'), '--anchor', 'x', str(tmp_path)]) == 64
    assert verify.main(['--key', str(tmp_path / 'good.key'), str(tmp_path)]) == 2  # no log files
    assert verify.main([]) == 64


def test_verify_walks_the_log_folder_into_app_folders(tmp_path):
    rig = Rig(tmp_path)
    rig.write('one')
    rig.next_epoch()
    code, out = rig.verify(rig.logdir)
    assert code == 0 and out.count('OK ') == 1, out


def test_a_file_cut_short_outside_loghogd_is_logged_once_and_fails_verify(tmp_path, caplog):
    rig = Rig(tmp_path)
    rig.write('one', 'two')
    rig.next_epoch()
    for log_file in list(rig.writer.files.values()):
        rig.writer.release(log_file)
    with open(rig.live, 'r+b') as stream:
        stream.truncate(4)
    rig.write('three')
    for log_file in list(rig.writer.files.values()):
        rig.writer.release(log_file)
    rig.write('four')
    assert caplog.text.count('its seal chain covers') == 1
    assert rig.counters.events['seal_errors'] == 1
    code, out = rig.verify()
    assert code == 1 and 'root.log:1: ' in out, out


@pytest.mark.skipif(os.geteuid() == 0, reason='root reads every file')
def test_a_file_verify_may_not_read_is_not_checked_not_broken(tmp_path):
    rig = Rig(tmp_path)
    rig.write('one')
    rig.next_epoch()
    os.chmod(rig.live, 0)
    code, out = rig.verify()
    assert code == 66 and 'NOT CHECKED' in out, out


def _history_with_rotation(tmp):
    """A sealed history of two files: lines and seals in both."""
    rig = Rig(tmp)
    rig.write(*['line %d %s' % (n, 'x' * 400) for n in range(60)])   # more than a chunk
    rig.next_epoch()
    rig.write('before the rotation')
    for log_file in list(rig.writer.files.values()):
        rig.writer.release(log_file)
    backup = rig.live + '.2026-12-05-00-00-00-000000'
    rig.sealer.before_rename(rig.live)
    os.rename(rig.live, backup)
    rig.sealer.after_rename(rig.live, backup)
    rig.write('after the rotation')
    rig.next_epoch()
    rig.next_epoch()
    rig.stop()
    return rig, [backup + '.seal', rig.live + '.seal']


@pytest.mark.parametrize('action', ['delete', 'swap', 'duplicate'])
def test_every_record_of_a_sidecar_matters(tmp_path, action):
    """Deleting, swapping or repeating any record (chunk or seal) of either sidecar breaks
    verification, but for deleting the first seal of the history (a later seal covers its
    lines: nothing can be changed that way) or the last one (the end of a history: only
    an anchor shows it, as documented)."""
    rig, sidecars = _history_with_rotation(tmp_path)
    assert rig.verify()[0] == 0
    seals = [(sidecar, index) for sidecar in sidecars
             for index, line in enumerate(open(sidecar, 'rb')) if line.startswith(b's ')]
    harmless = {seals[0], seals[-1]} if action == 'delete' else set()
    for sidecar in sidecars:
        original = open(sidecar, 'rb').read()
        records = original.splitlines(keepends=True)
        for index in range(1, len(records) - (action == 'swap')):
            changed = list(records)
            if action == 'delete':
                del changed[index]
            elif action == 'swap':
                changed[index], changed[index + 1] = changed[index + 1], changed[index]
            else:
                changed.insert(index, changed[index])
            with open(sidecar, 'wb') as stream:
                stream.write(b''.join(changed))
            code, out = rig.verify()
            assert code == (0 if (sidecar, index) in harmless else 1), (sidecar, index, out)
        with open(sidecar, 'wb') as stream:
            stream.write(original)


def test_a_changed_digit_in_any_record_breaks_verification(tmp_path):
    rig, sidecars = _history_with_rotation(tmp_path)
    for sidecar in sidecars:
        original = open(sidecar, 'rb').read()
        start_end = original.index(b'\n') + 1
        for position in range(start_end, len(original)):
            byte = original[position:position + 1]
            if not byte.isdigit():
                continue
            changed = original[:position] + (b'1' if byte != b'1' else b'2') + original[position + 1:]
            with open(sidecar, 'wb') as stream:
                stream.write(changed)
            assert rig.verify()[0] == 1, (sidecar, position)
        with open(sidecar, 'wb') as stream:
            stream.write(original)


@pytest.mark.parametrize('suffix, opener', [('.gz', 'gzip'), ('.bz2', 'bz2'), ('.xz', 'lzma')])
def test_backups_compressed_any_way_verify(tmp_path, suffix, opener):
    import importlib
    rig, _ = _history_with_rotation(tmp_path)
    backup = rig.live + '.2026-12-05-00-00-00-000000'
    module = importlib.import_module(opener)
    with open(backup, 'rb') as source:
        data = source.read()
    with module.open(backup + suffix, 'wb') as out:
        out.write(data)
    os.unlink(backup)
    code, out = rig.verify()
    assert code == 0 and '2 files' in out, out
    with module.open(backup + suffix, 'wb') as out:
        out.write(data.replace(b'line 7 ', b'line 8 '))
    code, out = rig.verify()
    assert code == 1 and 'BROKEN %s%s:1: ' % (backup, suffix) in out, out


def test_a_sidecar_that_cannot_be_written_never_fails_the_write(tmp_path, monkeypatch, caplog):
    rig = Rig(tmp_path)
    monkeypatch.setattr(sealer_module, 'SIDECAR_BATCH', 2)
    rig.write('one')
    os.mkdir(rig.live + '.seal')        # cannot be opened for writing: EISDIR
    for n in range(4):
        rig.write(*['line %d %s' % (n, 'x' * 20000)])    # a chunk each
    assert not any(f.failing for f in rig.writer.files.values())
    assert len(open(rig.live).read().splitlines()) == 5
    assert rig.counters.events['seal_errors'] >= 1 and 'records wait in memory' in caplog.text


def test_a_crash_after_sealing_before_the_key_moved_on_is_not_a_gap(tmp_path, caplog):
    rig = Rig(tmp_path)
    rig.write('one')
    rig.next_epoch()
    key_file = seal_keys.key_path(rig.workdir)
    before = open(key_file, 'rb').read()
    rig.next_epoch()               # seals written, key moved on...
    with open(key_file, 'wb') as stream:
        stream.write(before)       # ... but the crash came before the key file was replaced
    rig.start()
    assert 'moving the key on' in caplog.text
    rig.next_epoch()
    code, out = rig.verify()
    assert code == 0, out


def sealed_name(rig):
    """What the daemon seals the rig's live file under (its app folder and name)."""
    return sealing.history_name(os.path.basename(os.path.dirname(rig.live)), 'root.log')


def test_a_seal_from_the_far_future_is_refused_at_once(tmp_path):
    """Its epoch would also make deriving the key take for ever."""
    rig = Rig(tmp_path)
    rig.write('one')
    rig.next_epoch()
    rig.stop()
    sidecar = rig.live + '.seal'
    records = open(sidecar, 'rb').read().splitlines(keepends=True)
    last = sealing.parse_record(records[-1], False)
    epoch = 10 ** 12
    records.append(sealing.make_seal(bytes(32), sealed_name(rig), last.last_epoch + 1, epoch, 1, 4,
                                     int(sealing.epoch_end(epoch, T0, INTERVAL) * 1e6) + 1,
                                     last.chain_hash))
    with open(sidecar, 'wb') as stream:
        stream.write(b''.join(records))
    code, out = rig.verify()
    assert code == 1 and 'in the future' in out, out


def test_an_endless_sidecar_line_is_refused_with_flat_memory(tmp_path):
    rig = Rig(tmp_path)
    rig.write('one')
    rig.next_epoch()
    rig.stop()
    with open(rig.live + '.seal', 'ab') as stream:
        stream.write(b'c 2 1 2 ' + b'0' * (8 << 20) + b'\n')
    code, out = rig.verify()
    assert code == 1 and 'root.log.seal:4: a record cut short' in out, out

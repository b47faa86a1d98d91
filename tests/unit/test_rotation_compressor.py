"""The background compressor: each format gives what the standard tools read back byte
for byte, nothing half-written ever has a final name, and start-up recovery."""

import os
import shutil
import subprocess
import threading
import time

import pytest

from loghogd.compressor import Compressor, Orphaned, compress_file
from loghogd.compressor import main as compressor_main
from tests.unit.rotation_harness import read_backup

BACKUP = 'root.log.2024-05-14-00-00-00-000000'
TOOLS = {'xz': 'xzcat', 'gzip': 'zcat', 'bzip2': 'bzcat'}


def lines(count, tag='line'):
    return ''.join('2024-05-14 10:00:00.%06d - web1 - %s %d é\n' % (n, tag, n)
                   for n in range(count)).encode('utf-8')


class Finished:
    """The loop's side, for tests: wake-ups arrive on an Event; ``wait`` runs ``tick``
    until ``count`` jobs came back, and returns them."""

    def __init__(self, fmt, level=6):
        self.event = threading.Event()
        self.jobs = []
        self.compressor = Compressor(fmt, level, self.event.set)

    def on_done(self, job):
        self.jobs.append(job)

    def wait(self, count, timeout=30.0):
        limit = time.monotonic() + timeout
        while len(self.jobs) < count:
            assert time.monotonic() < limit, 'the compressor did not report back'
            self.event.wait(0.05)
            self.event.clear()
            if self.compressor.next_deadline() is not None:
                self.compressor.tick(time.time())
        return self.jobs


@pytest.fixture
def finished():
    made = []

    def make(fmt, level=6):
        made.append(Finished(fmt, level))
        made[-1].compressor.start()
        return made[-1]
    yield make
    for each in made:
        each.compressor.close()


@pytest.mark.parametrize('fmt, suffix', [('xz', '.xz'), ('gzip', '.gz'), ('bzip2', '.bz2')])
def test_each_format_reads_back_byte_for_byte_with_the_standard_tool(tmp_path, finished, fmt,
                                                                     suffix):
    data = lines(5000)
    source = tmp_path / BACKUP
    source.write_bytes(data)
    os.utime(source, (1715680000, 1715680000))
    f = finished(fmt)
    f.compressor.submit(str(source), f.on_done)
    job, = f.wait(1)
    assert job.result == str(source) + suffix and job.error is None
    assert os.listdir(tmp_path) == [BACKUP + suffix]            # no source, no partial
    assert os.stat(job.result).st_mtime == 1715680000           # sorts by age like the backup
    assert read_backup(job.result).encode('utf-8') == data
    if shutil.which(TOOLS[fmt]):
        assert subprocess.run([TOOLS[fmt], job.result], capture_output=True,
                              check=True).stdout == data


@pytest.mark.parametrize('fmt', ['xz', 'gzip', 'bzip2'])
def test_level_zero_works_for_every_format(tmp_path, finished, fmt):
    source = tmp_path / BACKUP
    source.write_bytes(lines(10))
    f = finished(fmt, level=0)
    f.compressor.submit(str(source), f.on_done)
    job, = f.wait(1)
    assert read_backup(job.result).encode('utf-8') == lines(10)


def test_an_empty_backup_compresses_to_a_valid_empty_file(tmp_path, finished):
    source = tmp_path / BACKUP
    source.write_bytes(b'')
    f = finished('xz')
    f.compressor.submit(str(source), f.on_done)
    job, = f.wait(1)
    assert read_backup(job.result) == ''


def test_recovery_removes_partials_and_finishes_what_a_crash_left(tmp_path, finished):
    folder = tmp_path
    (folder / 'web.log.2024-05-13-00-00-00-000000').write_bytes(lines(3, 'plain'))
    # a crash while compressing: the backup and a partial file
    (folder / 'web.log.2024-05-14-00-00-00-000000').write_bytes(lines(3, 'interrupted'))
    (folder / 'web.log.2024-05-14-00-00-00-000000.xz.partial').write_bytes(b'\xfd7zXZ half')
    # a crash between the rename and the delete: both complete
    (folder / 'web.log.2024-05-12-00-00-00-000000').write_bytes(lines(3, 'done'))
    (folder / 'web.log.2024-05-12-00-00-00-000000.gz').write_bytes(b'complete')
    # a partial whose backup was pruned meanwhile, and files that are not ours
    (folder / 'web.log.2024-05-11-00-00-00-000000.bz2.partial').write_bytes(b'BZh half')
    for name in ('notes.txt.partial', 'web.log', 'web.log.1'):
        (folder / name).write_bytes(b'keep')
    f = finished('xz')
    is_backup = lambda name: name.startswith('web.log.2024-')   # the rotation's naming
    jobs = f.compressor.recover(str(folder), is_backup, f.on_done)
    assert sorted(os.path.basename(job.path) for job in jobs) == [
        'web.log.2024-05-13-00-00-00-000000', 'web.log.2024-05-14-00-00-00-000000']
    f.wait(2)
    assert sorted(os.listdir(folder)) == [
        'notes.txt.partial', 'web.log', 'web.log.1',
        'web.log.2024-05-12-00-00-00-000000.gz',
        'web.log.2024-05-13-00-00-00-000000.xz',
        'web.log.2024-05-14-00-00-00-000000.xz']
    assert read_backup(str(folder / 'web.log.2024-05-14-00-00-00-000000.xz')).encode() == \
        lines(3, 'interrupted')


def test_a_cancelled_job_leaves_its_backup_alone_and_reports_no_result(tmp_path, finished):
    f = finished('xz')
    big = tmp_path / 'big.log.2024-05-14-00-00-00-000000'
    big.write_bytes(os.urandom(3 * 1024 * 1024))       # incompressible: several chunks
    small = tmp_path / BACKUP
    small.write_bytes(lines(10))
    first = f.compressor.submit(str(big), f.on_done)
    second = f.compressor.submit(str(small), f.on_done)
    second.cancelled = True
    first.cancelled = True
    f.wait(2)
    assert first.result is None and second.result is None
    assert sorted(os.listdir(tmp_path)) == [big.name, small.name]


def test_stopping_does_not_wait_for_a_big_file_and_leaves_no_partial(tmp_path):
    big = tmp_path / 'big.log.2024-05-14-00-00-00-000000'
    big.write_bytes(os.urandom(16 * 1024 * 1024))
    compressor = Compressor('xz', 9, lambda: None)
    compressor.start()
    compressor.submit(str(big), lambda job: None)
    deadline = time.monotonic() + 10
    while not any(n.endswith('.partial') for n in os.listdir(tmp_path)):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    compressor.close()
    assert time.monotonic() - started < 3.0
    assert os.listdir(tmp_path) == [big.name]          # stays for the next start's recovery


def test_a_file_that_cannot_be_read_is_reported(tmp_path, finished):
    f = finished('gzip')
    f.compressor.submit(str(tmp_path / 'gone.log.2024-05-14-00-00-00-000000'), f.on_done)
    job, = f.wait(1)
    assert job.result is None and 'No such file' in job.error
    assert f.compressor.failed == 1 and os.listdir(tmp_path) == []


def test_a_child_whose_daemon_is_gone_stops_and_leaves_the_backup(tmp_path):
    source = tmp_path / BACKUP
    source.write_bytes(lines(100000))
    with pytest.raises(Orphaned):
        compress_file(str(source), 'xz', 0, should_stop=lambda: True)
    assert os.listdir(tmp_path) == [BACKUP]


def test_an_older_child_never_touches_the_partial_file_of_a_newer_daemon(tmp_path):
    """A daemon was killed; its child still runs while the next daemon, at start-up,
    removes the partial file and starts over on the same backup."""
    source = tmp_path / BACKUP
    source.write_bytes(lines(100000))
    partial = tmp_path / (BACKUP + '.xz.partial')

    def newer_daemon_starts_over():
        if not partial.read_bytes().startswith(b'newer'):
            partial.unlink()
            partial.write_bytes(b'newer daemon at work')
        return False
    with pytest.raises(Orphaned):
        compress_file(str(source), 'xz', 0, should_stop=newer_daemon_starts_over)
    assert sorted(os.listdir(tmp_path)) == [BACKUP, partial.name]
    assert partial.read_bytes() == b'newer daemon at work'


def test_the_compressor_command_says_why_it_failed(tmp_path, capsys):
    missing = str(tmp_path / BACKUP)
    assert compressor_main(['--format', 'gzip', '--level', '1', '--parent', str(os.getppid()),
                            missing]) == 1
    assert 'No such file or directory' in capsys.readouterr().err


def test_xz_falls_back_to_gzip_with_a_warning_where_python_has_no_lzma(tmp_path, monkeypatch,
                                                                       caplog):
    import loghogd.compressor
    monkeypatch.setattr(loghogd.compressor, 'lzma', None)
    with caplog.at_level('WARNING', logger='loghogd.compressor'):
        compressor = Compressor('xz', 6, lambda: None)
    assert (compressor.format, compressor.suffix) == ('gzip', '.gz')
    assert 'no lzma module: using gzip' in caplog.text

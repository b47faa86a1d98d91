"""A backup an operator deletes while it is being compressed stays deleted (issue 20): no
``<backup>.xz`` comes back, no partial file is left, and nothing is reported as an error."""

import os
import threading
import time

import pytest

from loghogd import compressor as compressor_module
from loghogd.compressor import EXIT_GONE, BackupGone, Compressor, compress_file
from loghogd.compressor import main as compressor_main

BACKUP = 'root.log.2024-05-14-00-00-00-000000'


def write_backup(folder, size=64 * 1024):
    path = folder / BACKUP
    path.write_bytes(b'2024-05-14 10:00:00.000000 - web1 - a line\n' * (size // 44 + 1))
    return path


def test_deleted_while_being_read_leaves_nothing(tmp_path):
    path = write_backup(tmp_path)

    def operator_deletes_it():
        if path.exists():
            path.unlink()
        return False
    with pytest.raises(BackupGone):
        compress_file(str(path), 'xz', 6, should_stop=operator_deletes_it)
    assert os.listdir(tmp_path) == []


def test_deleted_between_the_check_and_the_rename_leaves_nothing(tmp_path, monkeypatch):
    path = write_backup(tmp_path)
    rename = os.rename

    def rename_then_operator_deletes(source, target):
        rename(source, target)
        if os.path.exists(path):
            os.unlink(path)
    monkeypatch.setattr(compressor_module.os, 'rename', rename_then_operator_deletes)
    with pytest.raises(BackupGone):
        compress_file(str(path), 'gzip', 6)
    assert os.listdir(tmp_path) == []


def test_the_compressor_command_exits_gone(tmp_path, monkeypatch):
    path = write_backup(tmp_path)

    def gone(*args, **kwargs):
        os.unlink(path)
        raise BackupGone(str(path))
    monkeypatch.setattr(compressor_module, 'compress_file', gone)
    assert compressor_main(['--format', 'xz', '--level', '6', '--parent', str(os.getppid()),
                            str(path)]) == EXIT_GONE


def test_a_backup_deleted_during_a_real_compression_does_not_come_back(tmp_path, caplog):
    """The daemon's path: the worker thread, the child process, the loop's tick."""
    path = tmp_path / BACKUP
    path.write_bytes(os.urandom(12 * 1024 * 1024))   # incompressible: xz takes a while
    woken = threading.Event()
    jobs = []
    compressor = Compressor('xz', 6, woken.set)
    compressor.start()
    try:
        job = compressor.submit(str(path), jobs.append)
        partial = str(path) + '.xz.partial'
        deadline = time.monotonic() + 30
        while not os.path.exists(partial):       # the child has started on it
            assert time.monotonic() < deadline and not jobs, 'no compression started'
            time.sleep(0.005)
        path.unlink()
        while not jobs:
            assert time.monotonic() < deadline, 'the compressor did not report back'
            woken.wait(0.05)
            woken.clear()
            with caplog.at_level('INFO', logger='loghogd.compressor'):
                compressor.tick(time.time())
    finally:
        compressor.close()
    assert jobs == [job] and job.gone and job.result is None and job.error is None
    assert os.listdir(tmp_path) == []
    assert 'was deleted while' in caplog.text and 'cannot compress' not in caplog.text

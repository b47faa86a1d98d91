"""Operator slips around rotation, with a real loghogd: a backup that cannot be deleted
or compressed is a warning, never a reason not to start, and logging goes on; a host
name too long for a file name with its module's is shortened, so its backups can exist."""

import lzma

from tests.support import Daemon, frame, send_tcp, wait_for, wait_for_lines

STAMP = 'root.log.2020-01-01-00-00-00-000000'


FACILITIES = '[app]\nrotate = daily\nbackup_count = 3\n'


def test_a_backup_that_cannot_be_deleted_does_not_stop_the_start(tmp_path):
    daemon = Daemon(tmp_path, FACILITIES)
    folder = tmp_path / 'log' / 'app'
    folder.mkdir(parents=True)
    # A crash left the backup beside its complete .xz: start-up deletes the uncompressed
    # one. Here it cannot be deleted (a folder of that name stands in for EACCES/EPERM).
    (folder / STAMP).mkdir()
    (folder / STAMP / 'kept').write_text('x')
    (folder / (STAMP + '.xz')).write_bytes(lzma.compress(b'old\n'))
    (folder / 'root.log.2020-01-02-00-00-00-000000').write_text('to compress\n')
    with daemon:
        check_start(daemon, folder)


def check_start(daemon, folder):
    send_tcp(daemon.tcp_port, frame('app', 'hello'))
    assert wait_for_lines(daemon.log_file('app'), 1)[0].endswith(' - web1 - hello')
    wait_for(lambda: (folder / 'root.log.2020-01-02-00-00-00-000000.xz').exists(), 10,
             message='the other backup compressed')
    assert 'cannot delete' in daemon.daemon_log.read_text()
    assert (folder / STAMP).is_dir()
    assert daemon.stop() == 0


def test_a_long_host_name_with_a_long_module_name_still_rotates_and_compresses(tmp_path):
    module = 'm' * 100 + '.' + 'n' * 40
    facilities = ('[app]\nrotate = size\nmax_size = 100\nbackup_count = 3\nfile_per_host = yes\n'
                  '[app:%s]\nrotate = size\nbackup_count = 3\n' % module)
    host = 'h' * 100
    with Daemon(tmp_path, facilities) as daemon:
        send_tcp(daemon.tcp_port, frame('app', 'x' * 200, module=module, host=host))
        folder = daemon.logdir / 'app'
        compressed = wait_for(lambda: folder.exists() and [
            p for p in folder.iterdir() if p.name.endswith('.xz')], 15,
            message='the backup, compressed')
        assert len(compressed) == 1 and len(compressed[0].name) <= 255
        assert compressed[0].name.startswith('h' * 50)
        log = daemon.daemon_log.read_text()
        assert 'cannot rotate' not in log and 'cannot compress' not in log
        assert daemon.stop() == 0

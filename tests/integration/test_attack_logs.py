"""Attacks on ``loghogd logs``: what an odd log folder or odd options do to it.

README ("Reading the logs") promises exit statuses 0, 64, 66, 77 and 78 with a sentence, and
the project's rules say bad input gives a clear error, never a traceback, never a hang. Each
test builds a log folder by hand (no daemon needed: the command only reads files) and runs the
real command in a subprocess, bounded by a timeout.
"""

import datetime
import gzip
import json
import lzma
import os
import re
import resource
import subprocess
import sys
import textwrap

import pytest

from loghog import wire
from tests.support import ROOT, Daemon, send_tcp, wait_for

DOCUMENTED_EXITS = (0, 64, 66, 77, 78)

FACILITIES = """
[js]
rotate = daily
backup_count = 3
format = json

[txt]
rotate = daily
backup_count = 3

[many]
rotate = daily
backup_count = 3
file_per_host = yes
"""


def text_line(moment, host, body):
    return '%s - %s - %s\n' % (moment.strftime('%Y-%m-%d %H:%M:%S.%f'), host, body)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / 'loghogd.conf').write_text(
        '[main]\nlogdir = log\nworkdir = lib\nrundir = run\nfacilities_config = facilities.conf\n')
    (tmp_path / 'facilities.conf').write_text(textwrap.dedent(FACILITIES))
    for app in ('js', 'txt', 'many'):
        (tmp_path / 'log' / app).mkdir(parents=True)
    return tmp_path


def logs(folder, *args, timeout=20, limit_files=None):
    def limit():
        if limit_files is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit_files, hard))
    return subprocess.run([sys.executable, '-m', 'loghogd', 'logs', '-c',
                           str(folder / 'loghogd.conf')] + list(args),
                          cwd=str(ROOT), capture_output=True, timeout=timeout, preexec_fn=limit)


def assert_clean(result):
    """A documented exit status and no traceback."""
    stderr = result.stderr.decode(errors='replace')
    assert 'Traceback' not in stderr, stderr
    assert result.returncode in DOCUMENTED_EXITS, (result.returncode, stderr)


def test_bad_options_are_refused_with_a_sentence(folder):
    """Held: --where on a text facility and a bad --grep are usage errors (64), said in one line."""
    (folder / 'log' / 'txt' / 'root.log').write_text(
        text_line(datetime.datetime.now(), 'web1', 'INFO - hello'))
    for args in (('txt', '--where', 'a=b'), ('txt', '--grep', '(')):
        result = logs(folder, *args)
        assert_clean(result)
        assert result.returncode == 64
        assert result.stderr.decode().startswith('loghogd logs: ')


def test_since_minus_one_hour_as_documented(folder):
    (folder / 'log' / 'txt' / 'root.log').write_text(
        text_line(datetime.datetime.now() - datetime.timedelta(minutes=10), 'web1',
                  'WARNING - recent'))
    result = logs(folder, 'txt', '--since', '-1h', '--level', 'WARNING')
    assert_clean(result)
    assert result.returncode == 0 and b'recent' in result.stdout, result.stderr


def test_json_line_cut_short_is_not_a_traceback(folder):
    good = ('{"time": "2026-12-05T03:14:15.926535+01:00", "host": "h", "app": "js", '
            '"module": "root", "logger": "root", "message": "%s"}\n')
    (folder / 'log' / 'js' / 'root.log').write_text(good % 'before' + '{"ti\n' + good % 'after')
    result = logs(folder, 'js')
    assert_clean(result)
    assert b'before' in result.stdout and b'after' in result.stdout


def test_corrupt_backups_are_named_not_tracebacks(folder):
    app = folder / 'log' / 'txt'
    (app / 'root.log').write_text(text_line(datetime.datetime.now(), 'web1', 'INFO - live'))
    for name, data in (('root.log.2026-12-03-00-00-00-000000.xz', b'not xz at all'),
                       ('root.log.2026-12-04-00-00-00-000000.gz',
                        gzip.compress(b'2026-12-04 00:00:01.000000 - w - x\n' * 100)[:20])):
        (app / name).write_bytes(data)
        result = logs(folder, 'txt')
        assert_clean(result)
        assert name.encode() in result.stderr, result.stderr
        (app / name).unlink()


def test_out_of_range_options_are_usage_errors(folder):
    (folder / 'log' / 'txt' / 'root.log').write_text(
        text_line(datetime.datetime.now(), 'web1', 'INFO - hello'))
    for args in (('--since=-99999999d',), ('--since=+99999999999999999999999d',),
                 ('-n', '99999999999999999999')):
        result = logs(folder, 'txt', *args)
        assert_clean(result)


def test_until_year_999_prints_nothing(folder):
    (folder / 'log' / 'txt' / 'root.log').write_text(
        text_line(datetime.datetime(2026, 12, 5, 3, 14), 'web1', 'INFO - from 2026'))
    result = logs(folder, 'txt', '--until', '0999-01-01')
    assert_clean(result)
    assert result.stdout == b''


def test_many_host_files_within_the_usual_fd_limit(folder):
    app = folder / 'log' / 'many'
    moment = datetime.datetime(2026, 12, 5, 3, 14)
    for n in range(1030):
        (app / ('h%04d-root.log' % n)).write_text(
            text_line(moment + datetime.timedelta(seconds=n), 'h%04d' % n, 'x'))
    result = logs(folder, 'many', limit_files=1024)
    assert_clean(result)
    assert result.stdout.count(b'\n') == 1030


def test_fifo_in_the_folder_does_not_hang(folder):
    app = folder / 'log' / 'txt'
    (app / 'root.log').write_text(text_line(datetime.datetime.now(), 'web1', 'INFO - live'))
    os.mkfifo(app / 'root.log.2026-12-04-00-00-00-000000')
    result = logs(folder, 'txt', timeout=5)
    assert_clean(result)
    assert b'live' in result.stdout


# -- JSON lines written by a real daemon -----------------------------------------------------

JSON_FACILITY = """
[js]
rotate = daily
backup_count = 3
format = json
"""


@pytest.fixture
def json_daemon(tmp_path):
    daemon = Daemon(tmp_path, JSON_FACILITY).start()
    yield daemon
    assert daemon.stop() == 0


def send_and_wait(daemon, frames):
    """Send ``frames`` then a sentinel on one connection; return the file's raw lines."""
    frames += wire.MessageEncoder('js', 'web1').encode('root', 1, 0, 'sentinel')
    send_tcp(daemon.tcp_port, frames)
    path = daemon.log_file('js')
    wait_for(lambda: b'"sentinel"' in (path.read_bytes() if path.exists() else b''),
             message='the sentinel')
    return path.read_bytes().split(b'\n')[:-1]


def test_every_json_line_parses_and_ours_are_never_overwritten(json_daemon):
    """Held: hostile bodies and fields (lone surrogates, NUL, U+2028, NaN, keys named like
    ours) give one ASCII line per record that json.loads reads, our keys intact."""
    encoder = wire.MessageEncoder('js', 'web1')
    body = 'b \u2028 \x00 \ud800 line\n{"time": "x"}\r\n'
    fields = ['{"time": 1, "host": "h", "message": "m", "field_host": 2}',
              '{"\\ud800": "\\udfff", "\\u2028": "\\u0000\\n{\\"time\\": 1}"}',
              '{"a": NaN, "b": -Infinity, "c": [1e400]}', '[1]']
    lines = send_and_wait(json_daemon, b''.join(encoder.encode('root', 1, 0, body, f)
                                                for f in fields))
    assert len(lines) == len(fields) + 1
    for raw in lines:
        assert raw.isascii()
        record = json.loads(raw)
        assert record['host'] == 'web1' and record['app'] == 'js'
    first = json.loads(lines[0])
    assert first['message'] == body.rstrip('\r\n')
    assert (first['field_time'], first['field_host'], first['field_field_host']) == (1, 'h', 2)


def test_deep_or_huge_fields_cost_only_the_fields(json_daemon):
    encoder = wire.MessageEncoder('js', 'web1')
    fields = ['{"a": ' + '[' * 10000 + ']' * 10000 + '}', '{"a": ' + '9' * 4400 + '}']
    lines = send_and_wait(json_daemon, b''.join(
        encoder.encode('root', 1, 0, 'kept %d' % n, f) for n, f in enumerate(fields)))
    messages = [json.loads(raw)['message'] for raw in lines]
    assert messages == ['kept 0', 'kept 1', 'sentinel']


def test_json_records_printed_as_text_cannot_forge_records(json_daemon):
    forged = '2026-12-05 00:00:00.000000 - trusted - INFO - forged'
    encoder = wire.MessageEncoder('js', 'evil\n' + forged)
    send_and_wait(json_daemon, encoder.encode(
        'root', 1, 0, 'body \x1b[31mred\x1b[0m cr\rX \u202eevil',
        '{"levelname": "INFO\\n%s"}' % forged))
    result = subprocess.run([sys.executable, '-m', 'loghogd', 'logs', '-c',
                             str(json_daemon.config_path), 'js'],
                            cwd=str(ROOT), capture_output=True, timeout=20)
    assert_clean(result)
    lines = result.stdout.split(b'\n')[:-1]
    assert len(lines) == 2, lines          # one record sent, then the sentinel
    assert not re.search(rb'[\x00-\x08\x0b-\x1f\x7f]', result.stdout)
    assert '\u202e'.encode() not in result.stdout


def peak_rss_kb(folder, *args):
    """Run ``loghogd logs`` under a fresh parent (so that the peak RSS of its children is the
    command's alone); return (exit status, peak RSS in KB)."""
    measure = ('import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], '
               'stdout=subprocess.DEVNULL); print(r.returncode, '
               'resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)')
    result = subprocess.run([sys.executable, '-c', measure, sys.executable, '-m', 'loghogd',
                             'logs', '-c', str(folder / 'loghogd.conf')] + list(args),
                            cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    code, peak_kb = map(int, result.stdout.split())
    return code, peak_kb


def test_memory_does_not_grow_with_the_number_of_hosts(folder):
    app = folder / 'log' / 'many'
    body = b''.join(b'2026-12-04 00:%02d:%02d.000000 - h - %s\n' % (n // 60, n % 60, b'x' * 10000)
                    for n in range(350))
    backup = gzip.compress(body, 1)
    for host in range(50):
        (app / ('h%03d-root.log.2026-12-04-00-00-00-000000.gz' % host)).write_bytes(backup)
        (app / ('h%03d-root.log' % host)).write_bytes(
            b'2026-12-05 00:00:00.000000 - h%03d - live\n' % host)
    code, peak_kb = peak_rss_kb(folder, 'many', '-n', '1')
    print('\n50 hosts: peak RSS %d MB' % (peak_kb // 1024))
    assert code == 0
    assert peak_kb < 150 * 1024


def test_host_option_finds_hosts_whose_file_names_were_made_safe(folder):
    moment = datetime.datetime(2026, 12, 5, 3, 14)
    (folder / 'log' / 'many' / 'a_b-root.log').write_text(text_line(moment, 'a/b', 'slash'))
    result = logs(folder, 'many', '--host', 'a/b')
    assert_clean(result)
    assert b'slash' in result.stdout


def test_orjson_takes_what_the_standard_library_takes(tmp_path):
    pytest.importorskip('orjson')
    daemon = Daemon(tmp_path, JSON_FACILITY, {'json_decoder': 'orjson'}).start()
    try:
        encoder = wire.MessageEncoder('js', 'web1')
        lines = send_and_wait(daemon, encoder.encode('root', 1, 0, 'file report-\udcff.csv')
                              + encoder.encode('root', 1, 0, 'huge', '{"x": 1e400}'))
        assert [json.loads(raw)['message'] for raw in lines] == [
            'file report-\udcff.csv', 'huge', 'sentinel']
    finally:
        assert daemon.stop() == 0


def test_a_backup_without_line_breaks_is_not_held_whole(folder):
    app = folder / 'log' / 'txt'
    (app / 'root.log.2026-12-04-00-00-00-000000.xz').write_bytes(
        lzma.compress(b'\0' * (60 << 20), preset=1))
    (app / 'root.log').write_text(text_line(datetime.datetime.now(), 'web1', 'INFO - live'))
    code, peak_kb = peak_rss_kb(folder, 'txt', '-o', 'raw')
    print('\n60 MB without a line break: peak RSS %d MB' % (peak_kb // 1024))
    assert code in DOCUMENTED_EXITS
    assert peak_kb < 100 * 1024


def test_host_option_finds_a_long_host_whose_file_name_was_shortened(folder):
    from loghogd.converters import safe_host
    host = 'y' * 200
    moment = datetime.datetime(2026, 12, 5, 3, 14)
    (folder / 'log' / 'many' / ('%s-root.log' % safe_host(host))).write_text(
        text_line(moment, host, 'long one'))
    result = logs(folder, 'many', '--host', host)
    assert_clean(result)
    assert b'long one' in result.stdout

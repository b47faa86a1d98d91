"""The benchmark harness works: a tiny run against loghogd, and a checker that can fail.

Not a timed test: the numbers of a 2,000-message run mean nothing; what matters is that
every message is accounted for and that the checker would notice if one were not.
"""

import os
import shutil

import pytest

from benchmarks import checker, loadgen, run

TAG = 'cafe0123'


def test_tiny_run_against_loghogd_loses_nothing(tmp_path, capsys):
    status = run.main(['--messages', '2000', '--runs', '1', '--systems', 'loghogd',
                       '--workloads', 'tcp1,udp-paced-10k', '--tmpdir', str(tmp_path),
                       '--json', str(tmp_path / 'results.json')])
    out = capsys.readouterr().out
    assert status == 0, out
    for workload in ('tcp1', 'udp-paced-10k'):
        row = next(line for line in out.splitlines() if line.startswith('| %s | loghogd' % workload))
        cells = [cell.strip() for cell in row.strip('|').split('|')]
        assert cells[5] == '0', row                 # loss
        assert cells[6] == '0', row                 # order violations
        assert cells[-1] == 'ok', row
    assert 'p99' in out
    # Run folders are removed after a clean run: only the JSON report is left.
    assert os.listdir(tmp_path) == ['results.json']


@pytest.mark.skipif(not shutil.which('openssl'), reason='needs openssl for test certificates')
def test_tls_load_reaches_loghogd(tmp_path):
    certs = run.systems.make_certs(str(tmp_path / 'certs'))
    system = run.systems.Loghogd()
    result = run.run_one(system, run.WORKLOADS['tls8'], 800, str(tmp_path), certs, 0, keep=False)
    assert result['ok'], result
    assert result['received'] == 800


def _good_lines(counts, tag=TAG):
    return [b'2024-01-01 00:00:00.000000 - %s - %s\n'
            % (loadgen.HOSTNAME.encode(), loadgen.make_body(tag, conn, seq).encode())
            for conn, count in enumerate(counts) for seq in range(count)]


def _check(lines, counts=(3, 3)):
    feed = checker.Checker(TAG, counts, loadgen.HOSTNAME)
    for line in lines:
        feed.feed(line)
    return feed.result()


def test_checker_accepts_a_complete_run_in_any_interleaving():
    lines = _good_lines((3, 3))
    interleaved = [lines[0], lines[3], lines[1], lines[4], lines[2], lines[5]]
    result = _check(interleaved)
    assert result.ok() and result.received == 6 and result.problems() == ''


def test_checker_reports_a_missing_line():
    lines = _good_lines((3, 3))
    del lines[4]
    result = _check(lines)
    assert (result.missing, result.duplicated, result.garbled) == (1, 0, 0)
    assert not result.ok() and result.ok(allow_loss=True)
    assert 'missing: connection 1 message 1' in result.examples[0]


def test_checker_reports_a_duplicated_line():
    lines = _good_lines((3, 3))
    result = _check(lines + [lines[2]])
    assert (result.missing, result.duplicated, result.garbled) == (0, 1, 0)
    assert not result.ok(allow_loss=True, allow_reorder=True)


@pytest.mark.parametrize('garble', [
    lambda line: line.replace(b'xxx', b'xyx', 1),              # a changed padding byte
    lambda line: line.replace(b' s=0000001', b' s=0000002'),    # a changed number: checksum
    lambda line: line[:60] + line[61:],                         # a lost byte
    lambda line: line[:40] + b'\n',                             # a cut line
    lambda line: line.replace(b' - benchhost - ', b' - otherhost - '),
    lambda line: line.replace(TAG.encode(), b'deadbeef'),       # another run's message
])
def test_checker_reports_a_garbled_line(garble):
    lines = _good_lines((3, 3))
    lines[1] = garble(lines[1])
    result = _check(lines)
    assert result.garbled == 1 and result.missing == 1, result
    assert not result.ok(allow_loss=True, allow_reorder=True)


def test_checker_counts_reordering_without_calling_it_loss():
    lines = _good_lines((3, 3))
    lines[0], lines[2] = lines[2], lines[0]
    result = _check(lines)
    assert (result.missing, result.duplicated, result.garbled) == (0, 0, 0)
    assert result.order_violations == 2          # messages 0 and 1 came after message 2
    assert not result.ok() and result.ok(allow_reorder=True)


def test_checker_reads_rotated_and_compressed_files(tmp_path):
    import gzip
    lines = _good_lines((4,))
    current = tmp_path / 'root.log'
    with gzip.open(str(current) + '.2024-01-01-00-00-00-000000.gz', 'wb') as handle:
        handle.writelines(lines[:2])
    current.write_bytes(b''.join(lines[2:]))
    os.utime(str(current) + '.2024-01-01-00-00-00-000000.gz', (1, 1))
    result = checker.check_files(checker.output_files(str(current)), TAG, [4], loadgen.HOSTNAME)
    assert result.ok() and result.received == 4, result

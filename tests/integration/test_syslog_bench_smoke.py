"""The syslog benchmarks work: loghogd's syslog listeners take the stream rsyslog is fed
(RFC 5424 octet-counted on TCP, RFC 3164 datagrams) and lose nothing; the in-process
comparison runs.  Not timed: a tiny run's numbers mean nothing."""

from benchmarks import bench_syslog_ingest, run


def test_tiny_syslog_run_against_loghogd_loses_nothing(tmp_path, capsys):
    status = run.main(['--messages', '2000', '--runs', '1', '--systems', 'loghogd-syslog',
                       '--workloads', 'tcp1,udp3164-paced-10k', '--tmpdir', str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out
    for workload in ('tcp1', 'udp3164-paced-10k'):
        row = next(line for line in out.splitlines()
                   if line.startswith('| %s | loghogd-syslog' % workload))
        cells = [cell.strip() for cell in row.strip('|').split('|')]
        assert (cells[2] != '-', cells[5], cells[6], cells[-1]) == (True, '0', '0', 'ok'), row


def test_the_in_process_comparison_runs(capsys):
    bench_syslog_ingest.main(['--messages', '200', '--repeat', '1'])
    out = capsys.readouterr().out
    assert 'syslog ' in out and 'loghog ' in out

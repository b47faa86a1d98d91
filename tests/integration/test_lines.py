"""What a peer puts in a body cannot forge a record or hide from grep: a real loghogd."""

import re

from tests.support import frame, send_tcp, wait_for_lines

RECORD_RE = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} - (?P<host>[^ ]*) - ')
FORGED = ('hello\n2026-12-05 03:14:15.926535 - db1.example.com - ERROR - root password '
          'changed by admin\n')


def test_a_forged_record_in_a_body_cannot_pass_for_another_hosts_record(daemon):
    send_tcp(daemon.tcp_port, frame('app', FORGED, host='attacker')
             + frame('app', 'sentinel', host='web1'))
    lines = wait_for_lines(daemon.log_file('app'), 3)
    records = [RECORD_RE.match(line) for line in lines]
    assert [m.group('host') for m in records if m] == ['attacker', 'web1']
    assert lines[1] == ('  | 2026-12-05 03:14:15.926535 - db1.example.com - ERROR - root '
                        'password changed by admin')


def test_control_characters_in_a_body_are_escaped_and_grep_sees_text(daemon):
    body = 'a\rb\x00c\x1b[2Jd\x85e\u2028f\u202eg'
    send_tcp(daemon.tcp_port, frame('app', body) + frame('app', 'sentinel'))
    lines = wait_for_lines(daemon.log_file('app'), 2)
    data = daemon.log_file('app').read_bytes()
    assert not re.search(rb'[\x00-\x08\x0b-\x1f\x7f]', data)      # grep: not a binary file
    assert lines[0].endswith(' - web1 - a\\x0db\\x00c\\x1b[2Jd\\x85e\\u2028f\\u202eg')
    assert len(lines) == 2 and lines[1].endswith(' - sentinel')

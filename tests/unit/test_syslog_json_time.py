"""A JSON facility's syslog lines carry the sender's timestamp as ``syslog_time`` (UTC,
RFC 3339, microseconds); a text line does not show it (its time is the receive time)."""

import json
import os

from loghogd.binding import BoundSockets
from loghogd.config import load_config
from loghogd.facilities import load_facilities
from loghogd.server import Server, format_receive_time
from loghogd.stats import Counters
from loghogd.syslog_listeners import SyslogReceiver
from loghogd.writer import Writer

NOW = 1796479200.0   # 2026-12-05 12:00 UTC


class Peer:
    peer, peer_host, listener, kind, has_client_cert = '10.0.0.1:1', '10.0.0.1', 'udp', \
        'syslog_udp', False


def json_lines(tmp_path, datas):
    path = tmp_path / 'facilities.conf'
    path.write_text('[web]\nrotate = daily\nbackup_count = 3\nformat = json\n'
                    'syslog_programs = nginx\n')
    counters = Counters()
    writer = Writer(str(tmp_path / 'log'), counters)
    server = Server(load_config(None), load_facilities(str(path)), writer, counters, None,
                    BoundSockets())
    server.now = NOW
    server.line_prefix = format_receive_time(NOW)
    SyslogReceiver(server, '').ingest([(data, False) for data in datas], Peer())
    [log_file] = writer.dirty
    assert os.path.basename(log_file.path) == 'root.log'
    return [json.loads(line) for line in log_file.pending]


def test_the_senders_time_is_a_field_of_json_lines(tmp_path, zone):
    zone('Europe/Paris')
    lines = json_lines(tmp_path, [
        b'<187>1 2026-12-05T03:14:15.926+01:00 web1 nginx 4242 ID47 - with an offset',
        b'<14>1 2026-12-05T11:59:59.000001Z web1 nginx - - - in UTC',
        b'<14>1 2026-12-05T11:59:59Z web1 nginx - - - no fraction',
        b'<13>Dec  5 03:14:15 web2 nginx: BSD, Paris time',
        b'<14>1 - web1 nginx - - - no timestamp',
        b'<14>nginx: no timestamp either'])
    assert [line.get('syslog_time') for line in lines] == [
        '2026-12-05T02:14:15.926000Z', '2026-12-05T11:59:59.000001Z',
        '2026-12-05T11:59:59.000000Z', '2026-12-05T02:14:15.000000Z', None, None]
    assert [line['message'] for line in lines][0] == 'with an offset'

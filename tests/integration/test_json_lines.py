"""format = json facilities with real loghogd processes and the real client: an ``extra=``
field arrives in the line, and rotation, compression, file_per_host and acknowledgements
work as for text."""

import json
import re

import pytest

from loghog import LoghogHandler, wire
from tests.support import Loggers, file_history, frame, read_lines, send_tcp, wait_for

FACILITIES = """
[shop]
rotate = daily
backup_count = 1000
max_size = 4K
file_per_host = yes
format = json

[shop:plain]
rotate = daily
backup_count = 3
format = text
"""

TEXT_LINE_RE = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} - web1 - (?P<body>.*)$')
TIME_RE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d$')


@pytest.fixture
def loggers():
    made = Loggers('jsonlines')
    yield made
    made.close()


def test_an_extra_field_arrives_and_rotation_compression_file_per_host_and_acks_hold(
        daemon_factory, loggers):
    daemon = daemon_factory(FACILITIES, sections={'compressor': {'format': 'xz', 'level': '0'}})
    handler = LoghogHandler('shop', '127.0.0.1', daemon.tcp_port, hostname='web1')
    assert handler.acknowledged
    logger = loggers(handler)   # 'jsonlines.0': the app's root facility
    total = 300
    for n in range(total):
        logger.info('order %05d placed', n, extra={'request_id': 'r-%d' % n, 'cart': [n, 'x']})
    try:
        1 / 0
    except ZeroDivisionError:
        logger.exception('checkout failed\nsecond line')
    assert handler.flush()
    folder = daemon.logdir / 'shop'
    base = 'web1-root.log'
    wait_for(lambda: len(file_history(folder, base)) >= total + 1, 20, message='every line')
    compressed = lambda: [n for n, _ in file_history(folder, base) if n.endswith('.xz')]
    wait_for(compressed, 20, message='a compressed backup')
    assert daemon.stop() == 0
    history = file_history(folder, base)
    records = [json.loads(line) for _, line in history]
    assert [r['message'] for r in records[:total]] == ['order %05d placed' % n
                                                     for n in range(total)], history
    assert len(records) == total + 1
    assert len({name for name, _ in history}) >= 3   # rotated at least twice
    for n, record in enumerate(records[:total]):
        assert record['message'] == 'order %05d placed' % n
        assert record['request_id'] == 'r-%d' % n and record['cart'] == [n, 'x']
        assert record['level'] == 'INFO' and record['logger'] == logger.name
        assert record['host'] == 'web1' and record['app'] == 'shop'
        assert record['module'] == logger.name and TIME_RE.match(record['time'])
        assert record['funcName'] == (
            'test_an_extra_field_arrives_and_rotation_compression_file_per_host_and_acks_hold')
    last = records[-1]
    assert last['level'] == 'ERROR' and last['message'].startswith('checkout failed\nsecond line')
    assert 'ZeroDivisionError' in last['exc_text'] and 'ZeroDivisionError' in last['message']
    assert all(line.isascii() for _, line in history)


def test_a_text_facility_ignores_fields_and_an_old_frame_reaches_a_json_facility(
        daemon_factory):
    """Text lines are unchanged by fields; a frame without fields (the 0.7 client, the
    loghog command) becomes a JSON line without a level; bad fields are dropped, said so."""
    daemon = daemon_factory(FACILITIES)
    encoder = wire.MessageEncoder('shop', 'web1')
    send_tcp(daemon.tcp_port, b''.join([
        encoder.encode('plain', 1, 0, 'a\nb', '{"request_id": "r-1", "levelname": "INFO"}'),
        frame('shop', 'from 0.7', module='root', host='web1'),
        encoder.encode('root', 1, 0, 'bad fields', '[1, 2]'),
        encoder.encode('root', 1, 0, 'sentinel', '{}')]))
    folder = daemon.logdir / 'shop'
    wait_for(lambda: len(read_lines(folder / 'web1-root.log')) == 3, 10, message='json lines')
    wait_for(lambda: read_lines(folder / 'web1-plain.log'), 10, message='the text line')
    text = (folder / 'web1-plain.log').read_text()
    assert TEXT_LINE_RE.match(text.splitlines()[0]).group('body') == 'a'
    assert text.endswith(' - web1 - a\n  | b\n')
    old, bad, sentinel = [json.loads(line) for line in read_lines(folder / 'web1-root.log')]
    assert old['message'] == 'from 0.7' and 'level' not in old and old['logger'] == 'root'
    assert bad['message'] == 'bad fields' and bad['fields_dropped']
    assert sentinel['message'] == 'sentinel'
    assert daemon.stop() == 0

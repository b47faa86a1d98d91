"""JSON lines (format = json): the line a record becomes, the sender's fields as the daemon
checks them, the facility option, and the client's side (record_fields)."""

import json
import logging
import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loghog import wire
from loghog.handler import record_fields
from loghogd import protocol
from loghogd.errors import ConfigError
from loghogd.facilities import load_facilities
from loghogd.jsonlines import format_json_line, rfc3339
from loghogd.lines import format_body

NOW = 1764904455.25   # 2025-12-05 03:14:15.25 UTC (exact in binary)


@pytest.fixture
def paris():
    """Local time is Europe/Paris (UTC+01:00 in December) for the test."""
    old = os.environ.get('TZ')
    os.environ['TZ'] = 'Europe/Paris'
    time.tzset()
    yield
    if old is None:
        del os.environ['TZ']
    else:
        os.environ['TZ'] = old
    time.tzset()


def test_time_is_rfc3339_local_with_microseconds_and_offset(paris):
    assert rfc3339(NOW) == '2025-12-05T04:14:15.250000+01:00'
    assert rfc3339(1751685255.5) == '2025-07-05T05:14:15.500000+02:00'


def test_a_record_with_the_python_clients_fields(paris):
    fields = {'levelname': 'ERROR', 'name': 'shop.orders', 'lineno': 17,
              'request_id': 'r-42', 'user': {'id': 7, 'roles': ['a']}}
    line = format_json_line(NOW, 'web1', 'shop', 'shop.orders', 'boom\nTraceback\n', fields)
    assert line.endswith('}\n') and line.count('\n') == 1
    assert json.loads(line) == {
        'time': '2025-12-05T04:14:15.250000+01:00', 'host': 'web1', 'app': 'shop',
        'module': 'shop.orders', 'level': 'ERROR', 'logger': 'shop.orders',
        'message': 'boom\nTraceback', 'lineno': 17, 'request_id': 'r-42',
        'user': {'id': 7, 'roles': ['a']}}
    assert list(json.loads(line))[:7] == ['time', 'host', 'app', 'module', 'level', 'logger',
                                          'message']


def test_without_fields_there_is_no_level_and_the_logger_is_the_module():
    record = json.loads(format_json_line(NOW, 'web1', 'app', 'web', 'hello'))
    assert 'level' not in record and record['logger'] == 'web' and record['message'] == 'hello'


def test_sender_fields_never_overwrite_ours_they_are_kept_under_a_prefix():
    fields = {'host': 'forged', 'time': 'then', 'message': 'other', 'field_host': 'x',
              'level': 'sent as level'}
    record = json.loads(format_json_line(NOW, 'web1', 'app', 'root', 'real', fields))
    assert record['host'] == 'web1' and record['message'] == 'real'
    assert {record['field_host'], record['field_field_host']} == {'x', 'forged'}
    assert record['field_time'] == 'then' and record['field_message'] == 'other'
    assert record['field_level'] == 'sent as level' and 'level' not in record


def test_dropped_fields_say_why_in_the_line():
    record = json.loads(format_json_line(NOW, 'h', 'app', 'root', 'x',
                                         'fields is not a JSON object'))
    assert record['fields_dropped'] == 'fields is not a JSON object'
    assert record['message'] == 'x'


@pytest.mark.parametrize('body', ['a\nb', 'a\rb', 'esc \x1b[31m', 'nel \x85', 'ls \u2028',
                                  'bidi \u202e', 'nul \x00', 'lone \ud800', 'é ü 日本'])
def test_one_record_is_one_ascii_line_whatever_the_body(body):
    line = format_json_line(NOW, 'h\nx', 'app', 'root', body, {'k\n': 'v\u2029'})
    assert line.isascii() and line.count('\n') == 1 and line.endswith('\n')
    assert json.loads(line)['message'] == body


def test_non_finite_numbers_are_written_as_text():
    record = json.loads(format_json_line(NOW, 'h', 'app', 'root', 'x',
                                         {'a': float('nan'), 'b': [float('inf')]}))
    assert record['a'] == 'nan' and record['b'] == ['inf']


# -- the daemon's check of ``fields`` --------------------------------------------------------

def payload(**extra):
    data = {'version': 1, 'app_id': 'app', 'module': 'root', 'stamp': 1, 'nsecs': 0,
            'hostname': 'h', 'body': 'hello'}
    data.update(extra)
    return json.dumps(data).encode()


def nested(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize('fields, kept', [
    ({'a': 1, 'b': {'c': [1, 2]}}, True),
    ({'deep': nested(protocol.MAX_FIELD_DEPTH)}, True),
    ({'deep': nested(protocol.MAX_FIELD_DEPTH + 1)}, False),
    ({str(n): n for n in range(protocol.MAX_FIELDS)}, True),
    ({str(n): n for n in range(protocol.MAX_FIELDS + 1)}, False),
    ({'k' * protocol.MAX_FIELD_NAME_CHARS: 1}, True),
    ({'k' * (protocol.MAX_FIELD_NAME_CHARS + 1): 1}, False),
    ([1, 2], False), ('text', False), (3, False),
])
def test_bad_fields_are_dropped_never_the_message(fields, kept):
    for loads in (protocol.fast_loads, json.loads):
        message = protocol.decode_message(0, payload(fields=fields), 65536, loads)
        assert isinstance(message, protocol.Message) and message.body == 'hello'
        if kept:
            assert message.fields == fields
        else:
            assert isinstance(message.fields, str) and message.fields


def test_absent_or_null_fields_are_none():
    assert protocol.decode_message(0, payload(), 65536).fields is None
    assert protocol.decode_message(0, payload(fields=None), 65536).fields is None


def test_the_signature_does_not_cover_fields():
    frame = wire.MessageEncoder('app', 'h', 'secret').encode('root', 1, 0, 'hello', '{"a": 1}')
    message = protocol.decode_message(0, frame[wire.HEADER_SIZE:], 65536)
    assert message.fields == {'a': 1}
    assert protocol.check_signature(message, 'secret') is None
    forged = frame[wire.HEADER_SIZE:].replace(b'{"a": 1}', b'{"a": 2}')
    message = protocol.decode_message(0, forged, 65536)
    assert message.fields == {'a': 2} and protocol.check_signature(message, 'secret') is None


# -- the facility option ---------------------------------------------------------------------

def test_format_is_text_by_default_json_when_asked_and_inherited(tmp_path):
    path = tmp_path / 'facilities.conf'
    path.write_text('[a]\nrotate = daily\nbackup_count = 1\n\n'
                    '[b]\nrotate = daily\nbackup_count = 1\nformat = JSON\n\n'
                    '[b:web]\nrotate = daily\nbackup_count = 1\n\n'
                    '[b:raw]\nrotate = daily\nbackup_count = 1\nformat = text\n')
    table = load_facilities(str(path))
    assert [table.lookup(app, module).format for app, module in
            [('a', 'x'), ('b', 'x'), ('b', 'web.y'), ('b', 'raw')]] == [
        'text', 'json', 'json', 'text']


def test_a_mistyped_format_is_a_config_error_with_file_and_line(tmp_path):
    path = tmp_path / 'facilities.conf'
    path.write_text('[a]\nrotate = daily\nbackup_count = 1\nformat = jsno\n')
    with pytest.raises(ConfigError) as info:
        load_facilities(str(path))
    message, = info.value.errors
    assert '%s:4' % path in message and 'format' in message and 'jsno' in message
    assert 'text, json' in message


# -- the client ------------------------------------------------------------------------------

def make_record(**extra):
    logger = logging.getLogger('shop.orders')
    try:
        raise ValueError('bad')
    except ValueError:
        record = logger.makeRecord('shop.orders', logging.ERROR, '/srv/shop.py', 17,
                                   'order %s failed', ('o-1',), __import__('sys').exc_info(),
                                   'place', extra)
    return record


def test_record_fields_hold_the_records_structure_and_its_extras():
    record = make_record(request_id='r-42', user={'id': 7}, when=object(), ratio=float('nan'))
    logging.Formatter().format(record)
    fields = json.loads(record_fields(record))
    assert fields['levelname'] == 'ERROR' and fields['name'] == 'shop.orders'
    assert fields['pathname'] == '/srv/shop.py' and fields['lineno'] == 17
    assert fields['funcName'] == 'place' and fields['process'] == os.getpid()
    assert {'processName', 'thread', 'threadName'} <= set(fields)
    assert 'ValueError: bad' in fields['exc_text']
    assert fields['request_id'] == 'r-42' and fields['user'] == {'id': 7}
    assert fields['when'].startswith('<object object') and fields['ratio'] == 'nan'
    assert 'msg' not in fields and 'args' not in fields and 'message' not in fields


def test_record_fields_of_a_plain_record_have_no_extras_and_survive_switched_off_values():
    record = logging.makeLogRecord({'msg': 'hi', 'levelname': 'INFO', 'name': 'x'})
    record.thread = record.threadName = None   # logging.logThreads = False
    fields = json.loads(record_fields(record))
    assert fields['thread'] is None and fields['name'] == 'x'
    assert set(fields) == {'levelname', 'name', 'pathname', 'lineno', 'funcName', 'process',
                           'processName', 'thread', 'threadName'}


def test_the_text_line_is_unchanged_by_fields():
    """A text facility writes the body as before: fields never reach it."""
    assert format_body('a\nb') == 'a\n  | b'


def test_record_fields_with_a_cache_are_the_same_text_and_the_cache_is_bounded():
    from loghog import handler
    cache = {}
    first = make_record(request_id='r-1')
    logging.Formatter().format(first)
    assert record_fields(first, cache) == record_fields(first)
    assert record_fields(first, cache) == record_fields(first) and len(cache) == 1
    second = make_record()
    second.thread = None   # switched off: not cached, still right
    assert json.loads(record_fields(second, cache))['thread'] is None and len(cache) == 1
    for n in range(handler.CACHE_ENTRIES + 5):
        other = make_record()
        other.lineno = n
        assert json.loads(record_fields(other, cache))['lineno'] == n
    assert len(cache) <= handler.CACHE_ENTRIES


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8)


@settings(max_examples=300)
@given(st.text(), st.text(), st.text(), st.dictionaries(
    st.sampled_from(['host', 'time', 'message', 'levelname', 'name', 'field_host', 'x']) |
    st.text(), json_values, max_size=6))
def test_any_record_is_one_ascii_json_line_that_keeps_ours(body, host, module, fields):
    line = format_json_line(NOW, host, 'app', module, body, fields)
    assert line.isascii() and line.endswith('\n') and line.count('\n') == 1
    record = json.loads(line)
    assert record['host'] == host and record['module'] == module and record['app'] == 'app'
    assert record['message'] == body.rstrip('\r\n')
    kept = {key: value for key, value in fields.items() if key not in ('levelname', 'name')}
    assert len(record) == len(kept) + 6 + ('level' in record)


def test_an_extra_value_whose_repr_fails_or_that_nests_too_deep_is_a_named_placeholder():
    """README: a value whose repr() raises, or nested deeper than Python can recurse, is
    sent as ``<unrepresentable TYPE: ERROR>`` (A7-1, A7-4), the other fields as they are."""
    class Detached:
        def __repr__(self):
            raise RuntimeError('instance is not bound to a session')
    deep = []
    for _ in range(5000):
        deep = [deep]
    record = logging.makeLogRecord({'msg': 'm', 'user': Detached(), 'tree': deep, 'n': 1})
    fields = json.loads(record_fields(record))
    assert fields['user'] == '<unrepresentable Detached: RuntimeError>'
    assert fields['tree'] == '<unrepresentable list: RecursionError>'
    assert fields['n'] == 1

"""A message whose ``fields`` the JSON decoder cannot take keeps its body (attack A3-12)."""

import json

import pytest
from hypothesis import given, strategies as st

from loghogd import protocol
from loghogd.salvage import without_fields


def payload(fields_text, body='kept', stamp='1700000000'):
    return ('{"version": 1, "app_id": "app", "module": "root", "stamp": %s, "nsecs": 0, '
            '"hostname": "web1", "body": %s, "fields": %s}' % (stamp, json.dumps(body),
                                                               fields_text)).encode()


@pytest.mark.parametrize('fields_text', [
    '{"a": ' + '[' * 10000 + ']' * 10000 + '}',
    '{"a": ' + '9' * 4400 + '}',
    '{"a": {"b": "x]}\\"" , "c": ' + '{"d":' * 5000 + '1' + '}' * 5000 + '}}',
    '9' * 4400,
])
def test_fields_the_decoder_cannot_take_cost_only_the_fields(fields_text):
    decoded = protocol.decode_fields(0, payload(fields_text), 1 << 20)
    assert decoded.__class__ is tuple, decoded
    assert decoded[5] == 'kept'
    # Python 3.13's C scanner takes 5,000 levels (no RecursionError): the fields are then
    # dropped for their depth, the body kept all the same.
    assert decoded[7].startswith(('fields the decoder cannot take', 'fields nested deeper'))


@pytest.mark.parametrize('text', [
    payload('{}', stamp='9' * 4400),              # a required field too big: still refused
    payload('{"a": ' + '[' * 10000 + ']' * 10000 + '}', body='x').replace(b'"body"', b'"bod'),
    b'{"fields": ' + b'[' * 10000,                 # never closed
])
def test_a_payload_that_is_bad_elsewhere_is_still_refused(text):
    decoded = protocol.decode_fields(0, text, 1 << 20)
    assert decoded.__class__ is protocol.Rejection
    assert decoded.reason == protocol.BAD_JSON


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=10)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=4), json_values)
def test_without_fields_sets_exactly_the_top_level_fields_to_none(others, fields):
    data = dict(others, fields=fields)
    expected = dict(data, fields=None)
    assert without_fields(json.dumps(data)) == expected
    assert without_fields(json.dumps(data, indent=2)) == expected


def test_a_string_value_with_json_punctuation_is_one_value():
    assert without_fields('{"fields": ",]}", "b": 1}') == {'fields': None, 'b': 1}


def test_no_top_level_fields_member_gives_none():
    assert without_fields('{"a": {"fields": 1}}') is None
    assert without_fields('{"body": "fields", "x": 1}') is None

"""Syslog counters in the Prometheus file: messages per listener, cut and replaced."""

import pytest

from loghogd.prometheus import render
from tests.unit.status_sample import sample

parser = pytest.importorskip('prometheus_client.parser')


def values_of(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in parser.text_string_to_metric_families(text) for s in family.samples}


def test_syslog_counters_per_listener_and_refusals_per_reason():
    snapshot = sample()
    snapshot['events'].update({'syslog_messages_udp': 7, 'syslog_messages_unix': 3,
                               'syslog_cut': 2, 'syslog_replaced_utf8': 1})
    snapshot['rejected'].append({'reason': 'syslog_unclaimed', 'messages': 4,
                                 'messages_last_minute': 4})
    values = values_of(render(snapshot))
    assert values[('loghogd_syslog_messages_total', (('listener', 'udp'),))] == 7
    assert values[('loghogd_syslog_messages_total', (('listener', 'unix'),))] == 3
    assert values[('loghogd_syslog_cut_total', ())] == 2
    assert values[('loghogd_syslog_replaced_utf8_total', ())] == 1
    assert values[('loghogd_rejected_total', (('reason', 'syslog_unclaimed'),))] == 4


def test_no_syslog_figures_without_syslog_listeners():
    values = values_of(render(sample()))
    assert not [key for key in values if key[0].startswith('loghogd_syslog')]


def test_loghogd_status_shows_syslog_per_listener():
    from loghogd.status_command import render_table
    from tests.unit.status_sample import NOW
    snapshot = sample()
    assert 'syslog ' not in render_table(snapshot, NOW)
    snapshot['events'].update({'syslog_messages_udp': 1234, 'syslog_messages_tcp': 5,
                               'syslog_cut': 2})
    assert ('syslog      tcp 5, udp 1,234 received; 2 cut at max_message_size, 0 with bytes '
            'that were not UTF-8 replaced') in render_table(snapshot, NOW).splitlines()


def test_the_unix_syslog_socket_is_not_reported_as_a_udp_socket(tmp_path):
    import socket
    from loghogd.status import read_udp_sockets
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        unix.bind(str(tmp_path / 'syslog.sock'))
        udp.bind(('127.0.0.1', 0))
        found = read_udp_sockets([unix, udp])
        assert found is None or [entry['address'] for entry in found] == [
            '127.0.0.1:%d' % udp.getsockname()[1]]

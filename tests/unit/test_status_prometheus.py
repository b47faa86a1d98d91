"""The Prometheus text file, read back with prometheus-client's own parser."""

import pytest

from loghogd.prometheus import escape_label, render
from tests.unit.status_sample import sample

parser = pytest.importorskip('prometheus_client.parser')


def parse(text):
    """{(sample name, sorted label items): value}, and {family name: type}."""
    values, types = {}, {}
    for family in parser.text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values, types


def test_counters_parse_with_conventional_names_and_labels():
    values, types = parse(render(sample()))
    assert values[('loghogd_messages_total', (('app', 'shop'), ('facility', 'root')))] == 1_000_000
    assert values[('loghogd_message_bytes_total', (('app', 'shop'), ('facility', 'payments')))] \
        == 50 * 1024 * 1024
    assert values[('loghogd_rejected_total', (('reason', 'bad_signature'),))] == 5
    assert values[('loghogd_connections_open', (('transport', 'tls'),))] == 3
    assert values[('loghogd_connections_accepted_total', (('transport', 'tcp'),))] == 40
    assert values[('loghogd_tls_handshake_failures_total', ())] == 2
    assert values[('loghogd_udp_kernel_drops_total', ())] == 37
    assert values[('loghogd_file_size_bytes', (('app', 'shop'), ('facility', 'root'),
                                               ('path', '/var/log/loghogd/shop/root.log')))] \
        == 120 * 1024 * 1024
    assert values[('loghogd_resident_memory_bytes', ())] == 31 * 1024 * 1024
    assert values[('loghogd_config_last_reload_successful', ())] == 1
    assert values[('loghogd_info', (('version', '0.8.0'),))] == 1
    assert types['loghogd_messages'] == 'counter'
    assert types['loghogd_connections_open'] == 'gauge'
    # Every counter ends in _total, every name is loghogd_ and snake_case.
    for (name, _), _ in values.items():
        assert name.startswith('loghogd_') and name == name.lower()


def test_unknown_figures_are_left_out_not_zero():
    snapshot = sample()
    snapshot['udp']['kernel_drops'] = None
    snapshot['udp']['sockets'] = None
    values, types = parse(render(snapshot))
    assert 'loghogd_udp_kernel_drops' not in types
    assert 'loghogd_file_last_rotation_timestamp_seconds' not in types   # not tracked here


def test_rotation_figures_appear_when_the_daemon_tracks_them():
    snapshot = sample()
    snapshot['files'][0].update(last_rotation=1_700_000_000.0, next_rotation=1_700_086_400.0,
                                backups=['a.1.xz', 'a.2.xz', 'a.3.xz'])
    values, _ = parse(render(snapshot))
    labels = (('app', 'shop'), ('facility', 'payments'),
              ('path', '/var/log/loghogd/shop/payments.log'))
    assert values[('loghogd_file_last_rotation_timestamp_seconds', labels)] == 1_700_000_000.0
    assert values[('loghogd_file_backups', labels)] == 3


def test_a_failed_reload_reads_0():
    snapshot = sample()
    snapshot['config']['last_reload'] = {'at': 1.0, 'ok': False}
    snapshot['config']['reloads_failed'] = 1
    values, _ = parse(render(snapshot))
    assert values[('loghogd_config_last_reload_successful', ())] == 0
    assert values[('loghogd_config_reloads_total', (('result', 'failure'),))] == 1


def test_label_values_cannot_break_the_format():
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    snapshot = sample()
    snapshot['files'][0]['path'] = '/var/log/odd "name"\\\n.log'
    values, _ = parse(render(snapshot))
    assert ('loghogd_file_size_bytes', (('app', 'shop'), ('facility', 'payments'),
                                        ('path', '/var/log/odd "name"\\\n.log'))) in values


def test_the_compressor_queue_when_the_daemon_has_one():
    snapshot = sample()
    snapshot['tasks'] = {'compressor': {'waiting': 2, 'compressed': 1200, 'failed': 1}}
    values, types = parse(render(snapshot))
    assert values[('loghogd_compressor_waiting', ())] == 2
    assert values[('loghogd_compressed_files_total', ())] == 1200
    assert values[('loghogd_compression_failures_total', ())] == 1
    assert 'loghogd_compressor_waiting' not in parse(render(sample()))[1]

"""The latest seal of each sealed file in `loghogd status` and the Prometheus file."""

import pytest

from loghogd.prometheus import render
from loghogd.status_command import render_brief, render_table
from tests.unit.status_sample import NOW, sample

parser = pytest.importorskip('prometheus_client.parser')

CHAIN = '3f2a9c0d11e4b7a5'


def sealed_sample(seal_errors=0):
    snapshot = sample()
    snapshot['tasks']['sealing'] = {
        'files': 2, 'key_epoch': 1042, 'next_seal_at': NOW + 30,
        'seals': [{'path': '/var/log/loghogd/shop/root.log', 'epoch': 1041, 'time': NOW - 30,
                   'lines': 1234, 'chain': CHAIN},
                  {'path': '/var/log/loghogd/shop/new.log', 'epoch': None, 'time': None,
                   'lines': None, 'chain': None}]}
    snapshot['events']['seal_errors'] = seal_errors
    return snapshot


def test_status_shows_each_sealed_file_s_latest_seal_to_anchor_it():
    text = render_table(sealed_sample(), NOW)
    row = next(line for line in text.splitlines()
               if line.startswith('/var/log/loghogd/shop/root.log') and CHAIN in line)
    assert '1041' in row and '1,234' in row
    assert 'SEALED FILE' in text and 'key epoch 1,042' in text
    assert "'path'" not in text          # the list is a table, not a Python repr


def test_sealing_errors_are_losses():
    assert 'sealing errors 2' in render_brief(sealed_sample(seal_errors=2), NOW)


def test_prometheus_has_the_latest_seal_per_file_without_a_series_per_seal():
    values = {}
    for family in parser.text_string_to_metric_families(render(sealed_sample())):
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    labels = (('path', '/var/log/loghogd/shop/root.log'),)
    assert values[('loghogd_seal_epoch', labels)] == 1041
    assert values[('loghogd_seal_timestamp_seconds', labels)] == NOW - 30
    assert values[('loghogd_seal_chain_prefix', labels)] == int(CHAIN[:12], 16)
    assert values[('loghogd_seal_errors_total', ())] == 0
    assert ('loghogd_seal_epoch', (('path', '/var/log/loghogd/shop/new.log'),)) not in values


def test_no_sealing_no_seal_metrics():
    assert 'loghogd_seal' not in render(sample())

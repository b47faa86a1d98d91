"""allowed_clients (identity.py): parsing, matching, inheritance, and bounded counting."""

import pytest

from loghogd.errors import ConfigError
from loghogd.facilities import load_facilities
from loghogd.identity import CLIENT_NOT_ALLOWED, ClientCheck, client_globs, common_name
from loghogd.stats import Counters

SUBJECT = ((('countryName', 'XX'),), (('organizationName', 'LogHog'),),
           (('commonName', 'shop-1'),))


class Peer:
    def __init__(self, subject=None):
        self.identity = ('10.0.0.1', subject)


class UdpPeer:   # no identity at all
    peer_host = '10.0.0.2'


def load(tmp_path, text):
    path = tmp_path / 'facilities.conf'
    path.write_text(text)
    return load_facilities(str(path))


@pytest.mark.parametrize('text, globs', [
    ('', None),
    ('shop-*', ('shop-*',)),
    (' shop-*, api.example.org ,', ('shop-*', 'api.example.org')),
    ('web[0-9], ops@example', ('web[0-9]', 'ops@example')),
])
def test_client_globs_parse(text, globs):
    assert client_globs(text) == globs


@pytest.mark.parametrize('text', ['shop 1', 'a"b', 'x/y', 'x' * 256])
def test_client_globs_refuse_what_no_certificate_name_holds(text):
    with pytest.raises(ValueError, match='certificate name glob'):
        client_globs(text)


def test_common_name_of_a_subject():
    assert common_name(SUBJECT) == 'shop-1'
    assert common_name(((('organizationName', 'LogHog'),),)) is None
    assert common_name(None) is None


class Facility:
    section = 'shop'

    def __init__(self, allowed):
        self.allowed_clients = allowed


def test_matching_certificates_pass_others_are_refused_with_their_name():
    check = ClientCheck()
    shop = Facility(('shop-*', 'ops'))
    assert check.refusal(shop, Peer(SUBJECT)) is None
    assert check.refusal(Facility(None), Peer(None)) is None   # unset: anyone, as before
    refusal = check.refusal(shop, Peer(((('commonName', 'shopper'),),)))
    assert (refusal.reason, refusal.client) == (CLIENT_NOT_ALLOWED, 'shopper')
    assert "certificate 'shopper' may not log to [shop]" in refusal.detail
    # Globs are case-sensitive, whole-name matches.
    assert check.refusal(shop, Peer(((('commonName', 'SHOP-1'),),))) is not None
    assert check.refusal(shop, Peer(((('commonName', 'ops2'),),))) is not None


@pytest.mark.parametrize('peer', [Peer(None), UdpPeer()])
def test_a_peer_without_a_certificate_has_no_identity_and_is_refused(peer):
    refusal = ClientCheck().refusal(Facility(('*',)), peer)
    assert refusal.client is None
    assert 'no client certificate' in refusal.detail


def test_the_match_cache_stays_bounded():
    check = ClientCheck()
    shop = Facility(('shop-*',))
    for n in range(ClientCheck.CACHE_LIMIT * 2 + 5):
        check.refusal(shop, Peer(((('commonName', 'name-%d' % n),),)))
    assert len(check._cache) <= ClientCheck.CACHE_LIMIT


def test_sub_facilities_inherit_allowed_clients_unless_they_set_their_own(tmp_path):
    table = load(tmp_path, """
[shop]
rotate = daily
backup_count = 3
allowed_clients = shop-*
[shop:payments]
rotate = daily
backup_count = 3
[shop:ops]
rotate = daily
backup_count = 3
allowed_clients = ops-*
[open]
rotate = daily
backup_count = 3
""")
    assert table.lookup('shop', 'root').allowed_clients == ('shop-*',)
    assert table.lookup('shop', 'payments.card').allowed_clients == ('shop-*',)
    assert table.lookup('shop', 'ops').allowed_clients == ('ops-*',)
    assert table.lookup('open', 'root').allowed_clients is None


def test_a_bad_glob_is_a_config_error_naming_file_and_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "[shop]\nrotate = daily\nbackup_count = 3\nallowed_clients = a b\n")
    (error,) = info.value.errors
    assert 'facilities.conf:4' in error and 'allowed_clients' in error


def test_refusals_are_counted_per_certificate_name_within_a_bound():
    counters = Counters()
    for n in range(Counters.MAX_CLIENTS + 50):
        counters.refuse_client('cn-%d' % n)
    counters.refuse_client(None)
    counters.refuse_client('cn-1')
    assert len(counters.refused_clients) == Counters.MAX_CLIENTS + 1   # + '(other)'
    assert counters.refused_clients['cn-1'] == 2
    assert counters.refused_clients[Counters.OTHER_CLIENTS] == 51   # 50 names + '(none)'


def test_refusals_by_certificate_name_reach_prometheus_and_the_status_table():
    from loghogd import prometheus, status_command
    from tests.unit.status_sample import NOW, sample
    snapshot = sample()
    snapshot['rejected'].append({'reason': CLIENT_NOT_ALLOWED, 'messages': 3,
                                 'messages_last_minute': 3})
    snapshot['refused_clients'] = [{'client': 'intruder-1', 'messages': 2},
                                   {'client': '(none)', 'messages': 1}]
    text = prometheus.render(snapshot)
    assert 'loghogd_refused_clients_total{client="intruder-1"} 2' in text
    assert 'loghogd_rejected_total{reason="client_not_allowed"} 3' in text
    table = status_command.render_table(snapshot, NOW)
    assert 'CLIENT CERTIFICATE' in table and 'intruder-1' in table
    # A snapshot from before issue 19 (no such key) still renders.
    del snapshot['refused_clients']
    assert 'CLIENT CERTIFICATE' not in status_command.render_table(snapshot, NOW)
    assert 'loghogd_refused_clients_total{' not in prometheus.render(snapshot)

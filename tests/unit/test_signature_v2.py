"""Protocol v2 signatures (loghog/signing.py, loghogd/signature_v2.py): the test vectors,
checked against an independent construction and against the README; the checks; replays."""

import hashlib
import hmac
import json
import re
from pathlib import Path

import pytest

from loghog import wire
from loghog.signing import ENVELOPE_SIZE, V2Signer, split_envelope
from loghogd.signature_v2 import (CLOCK_SKEW, MAX_RANGES, REPLAYED, V2_REQUIRED, ReplayGuard,
                                  check_signature_v2)

ROOT = Path(__file__).resolve().parent.parent.parent
VECTORS = json.loads((ROOT / 'tests' / 'cases' / 'v2-signatures' / 'vectors.json').read_text())
SESSION = bytes(range(16))


def body_of(vector):
    if 'body_text' in vector:
        return vector['body_text'].encode('ascii')
    return bytes.fromhex(vector['body_hex'])


def by_hand(vector):
    """The MAC and frame from the README's description alone: hmac and struct-free bytes."""
    session = bytes.fromhex(vector['session'])
    head = (vector['flags'].to_bytes(4, 'big') + session + vector['seq'].to_bytes(8, 'big')
            + vector['time_ms'].to_bytes(8, 'big', signed=True))
    body = body_of(vector)
    mac = hmac.new(vector['secret'].encode('utf-8'), b'loghog-v2\n' + head + body,
                   hashlib.sha256).digest()
    payload = session + head[20:] + mac + body   # session, seq, time_ms, mac, body
    frame = len(payload).to_bytes(4, 'big') + vector['flags'].to_bytes(4, 'big') + payload
    return mac.hex(), frame.hex()


@pytest.mark.parametrize('vector', VECTORS['vectors'], ids=lambda v: v['about'][:40])
def test_vectors_match_an_independent_construction_and_the_implementation(vector):
    assert by_hand(vector) == (vector['mac'], vector['frame_hex'])
    signer = V2Signer(vector['secret'])
    body = body_of(vector)
    v1_flags = vector['flags'] & ~wire.FLAG_SIGNED_V2
    v1_frame = wire.HEADER.pack(len(body), v1_flags) + body
    signed = signer.sign_frame(v1_frame, bytes.fromhex(vector['session']), vector['seq'],
                               vector['time_ms'])
    assert signed.hex() == vector['frame_hex']
    envelope = split_envelope(signed[wire.HEADER_SIZE:])
    assert (envelope.session.hex(), envelope.seq, envelope.time_ms, envelope.mac.hex(),
            bytes(envelope.body)) == (vector['session'], vector['seq'], vector['time_ms'],
                                      vector['mac'], body)
    assert signer.is_valid(envelope, vector['flags'])
    assert not signer.is_valid(envelope, vector['flags'] ^ wire.FLAG_ACK)


def test_the_readme_shows_the_same_vectors():
    readme = (ROOT / 'README.md').read_text()
    section = readme[readme.index('### Protocol v2 signatures'):]
    section = section[:section.index('\n## ')]
    shown = re.findall(r'\b[0-9a-f]{64}\b', section)
    for vector in VECTORS['vectors']:
        assert vector['mac'] in shown, vector['about']
        assert vector['session'] in section and str(vector['time_ms']) in section


class Facility:
    section = 'shop'
    app = 'shop'
    name = 'root'

    def __init__(self, secret='s3cret'):
        self.signer_v2 = V2Signer(secret) if secret else None


def envelope_of(body=b'{"hostname": "web1"}', flags=wire.FLAG_SIGNED_V2, seq=1,
                time_ms=1_700_000_000_000, secret='s3cret', session=SESSION):
    frame = V2Signer(secret).sign_frame(wire.HEADER.pack(len(body), flags & ~wire.FLAG_SIGNED_V2)
                                        + body, session, seq, time_ms)
    return split_envelope(frame[wire.HEADER_SIZE:])


NOW = 1_700_000_000.0


def test_a_valid_v2_signature_within_the_clock_window_passes():
    assert check_signature_v2(Facility(), wire.FLAG_SIGNED_V2, envelope_of(), NOW, 300) is None
    # A facility without a secret has nothing to check against (as with v1).
    assert check_signature_v2(Facility(None), wire.FLAG_SIGNED_V2, envelope_of(), NOW, 300) is None


@pytest.mark.parametrize('change', ['body', 'flags', 'secret', 'seq', 'time'])
def test_any_change_is_a_bad_signature(change):
    envelope = envelope_of(secret='guess' if change == 'secret' else 's3cret')
    flags = wire.FLAG_SIGNED_V2
    if change == 'body':   # another host name in the same JSON
        envelope.body = b'{"hostname": "evil"}'
    elif change == 'flags':
        flags |= wire.FLAG_ACK
    elif change == 'seq':
        envelope.seq += 1
    elif change == 'time':
        envelope.time_ms += 1
    rejection = check_signature_v2(Facility(), flags, envelope, NOW, 300)
    assert rejection.reason == 'bad_signature'


@pytest.mark.parametrize('offset_s, accepted', [(-300, True), (300, True), (-300.001, False),
                                               (300.001, False), (-86400, False)])
def test_the_clock_window(offset_s, accepted):
    envelope = envelope_of(time_ms=int((NOW + offset_s) * 1000))
    rejection = check_signature_v2(Facility(), wire.FLAG_SIGNED_V2, envelope, NOW, 300)
    assert (rejection is None) == accepted
    if not accepted:
        assert rejection.reason == CLOCK_SKEW


def test_without_an_envelope_a_facility_that_requires_v2_refuses():
    rejection = check_signature_v2(Facility(), 0, None, NOW, 300)
    assert rejection.reason == V2_REQUIRED
    assert 'require_signature = v2' in rejection.detail


A = ('10.0.0.1', None)
B = ('10.0.0.2', None)


def test_a_replay_is_refused_from_any_peer_and_a_new_number_is_not():
    guard = ReplayGuard(300)
    assert guard.take(envelope_of(seq=1), A, False, NOW) is None
    assert guard.take(envelope_of(seq=1), A, False, NOW).reason == REPLAYED
    assert guard.take(envelope_of(seq=1), B, False, NOW).reason == REPLAYED
    assert guard.take(envelope_of(seq=1), B, True, NOW).reason == REPLAYED
    assert guard.take(envelope_of(seq=2), B, False, NOW) is None
    assert guard.take(envelope_of(seq=1, session=bytes(16)), A, False, NOW) is None


def test_the_first_peer_resending_at_its_acknowledged_number_is_for_the_acknowledger():
    # The acknowledger skipped it if it was written; here it was not (lost with its file
    # and rewound): written again, not refused.
    guard = ReplayGuard(300)
    assert guard.take(envelope_of(seq=5), A, True, NOW) is None
    assert guard.take(envelope_of(seq=5), A, True, NOW) is None
    assert guard.take(envelope_of(seq=5), A, False, NOW).reason == REPLAYED


def test_old_numbers_fold_into_a_floor_that_still_refuses_them():
    guard = ReplayGuard(300)
    for seq in range(1, 2 * MAX_RANGES + 10, 2):   # every other number: one range each
        assert guard.take(envelope_of(seq=seq), A, False, NOW) is None
    seen = guard.sessions[(None, SESSION)]
    assert len(seen.starts) == MAX_RANGES
    assert guard.take(envelope_of(seq=1), A, False, NOW).reason == REPLAYED
    assert guard.take(envelope_of(seq=3), B, False, NOW).reason == REPLAYED


def test_the_table_is_bounded_and_forgets_sessions_whose_window_has_passed():
    guard = ReplayGuard(300, limit=10)
    for n in range(10):
        guard.take(envelope_of(session=bytes([n]) * 16), A, False, NOW)
    # Still in their window: the oldest is evicted (and counted) to make room.
    guard.take(envelope_of(session=b'\xff' * 16), A, False, NOW)
    assert len(guard) == 10 and guard.evicted == 1
    # Ten minutes later every one of them is outside the window: forgotten, not evicted.
    later = NOW + 601
    for n in range(20, 25):
        guard.take(envelope_of(session=bytes([n]) * 16, time_ms=int(later * 1000)), A, False,
                   later)
    # (two expired ones go with each new one: the ten old ones are gone after five)
    assert guard.evicted == 1 and len(guard) == 5


def test_a_v2_frame_is_the_v1_frame_with_an_envelope():
    frame = wire.encode_message('shop', 'root', 1, 2, 'web1', 'hello')
    signed = V2Signer('k').sign_frame(frame, SESSION, 3, 4)
    size, flags = wire.HEADER.unpack_from(signed)
    assert flags == wire.FLAG_SIGNED_V2 and size == len(frame) - wire.HEADER_SIZE + ENVELOPE_SIZE
    assert signed.endswith(frame[wire.HEADER_SIZE:])


@pytest.mark.parametrize('secret', ['', 'k', 'x' * 64, 'y' * 65, 'ü' * 100, b'\x00\xff' * 40])
def test_the_spelled_out_hmac_equals_hmac_new_for_any_key_length(secret):
    key = secret.encode('utf-8') if isinstance(secret, str) else secret
    for body in (b'', b'{}', bytes(range(256)) * 5):
        head = (wire.FLAG_SIGNED_V2).to_bytes(4, 'big') + SESSION + (9).to_bytes(8, 'big') + \
            (-5).to_bytes(8, 'big', signed=True)
        expected = hmac.new(key, b'loghog-v2\n' + head + body, hashlib.sha256).digest()
        assert V2Signer(secret).mac(wire.FLAG_SIGNED_V2, SESSION, 9, -5, body) == expected


def test_every_new_rejection_reason_has_a_wire_case():
    from loghogd import signature_v2
    from loghogd.identity import CLIENT_NOT_ALLOWED
    reasons = set()
    for path in (ROOT / 'tests' / 'cases').glob('*.json'):
        case = json.loads(path.read_text())
        for key in ('expect', 'expect_datagram'):
            reasons |= {o['reject'] for o in case.get(key, []) if 'reject' in o}
    assert set(signature_v2.REASONS) | {CLIENT_NOT_ALLOWED} <= reasons


def test_a_sessions_numbers_are_remembered_per_secret():
    """A4-9: numbers signed with one secret do not use up another secret's: a client of
    another application cannot make a session it saw refuse its owner's messages."""
    guard = ReplayGuard(300)
    assert guard.take(envelope_of(seq=1), B, False, NOW, 'other-secret') is None
    assert guard.take(envelope_of(seq=1), A, False, NOW, 's3cret') is None
    assert guard.take(envelope_of(seq=1), B, False, NOW, 's3cret').reason == REPLAYED
    assert guard.take(envelope_of(seq=1), A, False, NOW, 'other-secret').reason == REPLAYED

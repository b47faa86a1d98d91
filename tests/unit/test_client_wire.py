"""MessageEncoder, the handler's fast encoder, must produce what encode_message produces."""

import hashlib
import hmac
import json
import zlib

from hypothesis import given, strategies as st

from loghog import wire

# Any text, including what JSON must escape: quotes, backslashes, control characters,
# non-ASCII, astral code points and lone surrogates (logging passes whatever it was given).
texts = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF))


def decoded(frame):
    size, flags = wire.HEADER.unpack_from(frame)
    payload = frame[wire.HEADER_SIZE:]
    assert size == len(payload)
    if flags & wire.FLAG_ZLIB:
        payload = zlib.decompress(payload)
    return flags, json.loads(payload)


@given(app_id=texts, hostname=texts, module=texts, body=texts,
       stamp=st.integers(0, 2**40), nsecs=st.integers(0, 10**9 - 1),
       secret=st.none() | st.text(min_size=1), compress=st.booleans())
def test_message_encoder_matches_encode_message(app_id, hostname, module, body, stamp, nsecs,
                                                secret, compress):
    def outcome(encode):
        # A lone surrogate cannot be signed (it has no UTF-8 form): both must say so.
        try:
            return decoded(encode())
        except UnicodeEncodeError:
            return 'cannot sign'

    fast = outcome(lambda: wire.MessageEncoder(app_id, hostname, secret, compress).encode(
        module, stamp, nsecs, body))
    reference = outcome(lambda: wire.encode_message(app_id, module, stamp, nsecs, hostname, body,
                                                    secret, compress))
    assert fast == reference
    if fast == 'cannot sign':
        assert secret and any('\ud800' <= c <= '\udfff' for c in app_id + module + body)


def test_message_encoder_output_is_plain_ascii_json():
    frame = wire.MessageEncoder('app', 'web1').encode('root', 1, 2, 'café "quoted"\n')
    assert frame[wire.HEADER_SIZE:].decode('ascii') == (
        '{"version": 1, "app_id": "app", "hostname": "web1", "module": "root", '
        '"stamp": 1, "nsecs": 2, "body": "caf\\u00e9 \\"quoted\\"\\n"}')


signable = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF,
                                 blacklist_categories=('Cs',)))


@given(secret=st.text() | st.binary(max_size=200), app_id=signable, module=signable,
       body=signable, stamp=st.integers(-2**63, 2**63 - 1), nsecs=st.integers(-2**63, 2**63))
def test_signer_is_hmac_md5_of_the_protocol_text(secret, app_id, module, body, stamp, nsecs):
    """The Signer spells HMAC out over CPython's MD5 (keys over 64 bytes hashed first):
    it must give exactly what hmac.new gives, the rule in PROTOCOL.md."""
    key = secret.encode('utf-8') if isinstance(secret, str) else secret
    text = (app_id + module + str(stamp) + str(nsecs) + body).encode('utf-8')
    expected = hmac.new(key, text, hashlib.md5).hexdigest()
    assert wire.Signer(secret).sign(app_id, module, stamp, nsecs, body) == expected
    assert wire.signature(secret, app_id, module, stamp, nsecs, body) == expected


@given(payload=st.binary(max_size=3 * wire.SMALL_PAYLOAD))
def test_compressed_payloads_of_any_size_are_plain_zlib_streams(payload):
    compressed = wire.compress_payload(payload)
    assert zlib.decompress(compressed) == payload                 # what loghogd 0.7 did
    inflater = zlib.decompressobj()                               # what loghogd does now
    assert inflater.decompress(compressed, len(payload) + 1) == payload and inflater.eof


def test_small_payloads_use_fixed_huffman_codes_and_large_ones_their_own():
    """Fixed codes inflate in half the daemon's time for a log record's size (see wire.py)."""
    record = json.dumps({'version': 1, 'app_id': 'my-app', 'module': 'django.request',
                         'stamp': 1764200000, 'nsecs': 1, 'hostname': 'web1',
                         'body': 'INFO - GET /api/v1/users/42?page=2 HTTP/1.1 200 took 31 ms'})
    small = wire.compress_payload(record.encode())
    large = wire.compress_payload((record * 40).encode())
    def block_type(stream):
        return (stream[2] >> 1) & 3                                # after the 2-byte header
    assert block_type(small) == 1                                  # fixed Huffman codes
    assert block_type(large) == 2                                  # dynamic codes
    assert len(large) < len(record * 40) / 10


def test_compress_frame_compresses_once_and_keeps_the_flags():
    plain = wire.encode_message('app', 'web', 1, 2, 'host', 'body ' * 20, flags=wire.FLAG_ACK)
    once = wire.compress_frame(plain)
    assert wire.compress_frame(once) is once          # taken twice (requeued): not twice
    assert decoded(once) == (wire.FLAG_ACK | wire.FLAG_ZLIB, decoded(plain)[1])

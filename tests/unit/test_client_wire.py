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

"""The pure parts of sealing: key evolution, epochs, the chain, the records."""

import hashlib
import hmac

import pytest
from hypothesis import given, settings, strategies as st

from loghogd import sealing

K0 = bytes(range(32))


def test_key_evolves_one_way_as_documented():
    k1 = sealing.evolve(K0)
    assert k1 == hashlib.sha256(b'loghog-seal-key-v1' + K0).digest()
    assert sealing.key_at(K0, 0, 3) == sealing.evolve(sealing.evolve(k1))
    assert sealing.key_at(k1, 1, 1) == k1
    with pytest.raises(ValueError):
        sealing.key_at(k1, 1, 0)


@given(st.integers(0, 10 ** 9), st.integers(1, 86400), st.floats(0, 10 ** 8))
def test_epochs_tile_time(t0, interval, offset):
    moment = t0 + offset
    epoch = sealing.epoch_of(moment, t0, interval)
    assert sealing.epoch_end(epoch - 1, t0, interval) <= moment < sealing.epoch_end(epoch, t0, interval)


def test_epoch_before_t0_is_negative():
    assert sealing.epoch_of(99.5, 100, 10) == -1


def test_verification_key_round_trip_and_errors():
    text = sealing.format_verification_key(K0, 1700000000, 60)
    assert text == 'loghog-seal-v1:%s:1700000000:60' % K0.hex()
    assert sealing.parse_verification_key(text + '\n') == (K0, 1700000000, 60)
    for bad in ('', 'x:%s:1:1' % K0.hex(), 'loghog-seal-v1:abcd:1:1',
                'loghog-seal-v1:%s:1:0' % K0.hex(), 'loghog-seal-v1:%s:1' % K0.hex(),
                'loghog-seal-v1:zz:1:1'):
        with pytest.raises(ValueError):
            sealing.parse_verification_key(bad)


def replay(prev, data, records):
    """Check ``records`` (parsed chunks) against the file bytes ``data`` from scratch;
    return the last hash."""
    last, offset, line = prev, 0, 1
    for record in records:
        assert record.first_line == line
        piece = data[offset:offset + record.n_bytes]
        assert piece.count(b'\n') == record.n_lines and piece.endswith(b'\n')
        last = sealing.link(last, piece, record.first_line, record.n_lines, record.n_bytes)
        assert last == record.digest
        offset += record.n_bytes
        line += record.n_lines
    return last, offset, line - 1


lines_strategy = st.lists(st.binary(max_size=3000).map(lambda b: b.replace(b'\n', b'') + b'\n'),
                          max_size=40)


@settings(max_examples=200, deadline=None)
@given(lines_strategy, st.data(), st.binary(min_size=32, max_size=32))
def test_chain_over_any_batching_matches_the_documented_formula(lines, data, prev):
    """However the writes are batched, the records describe whole-line chunks whose
    hashes follow the formula from ``prev``, and the chain counts every line and byte."""
    chain = sealing.Chain(prev)
    i = 0
    while i < len(lines):
        n = data.draw(st.integers(1, len(lines) - i))
        chain.add(b''.join(lines[i:i + n]))
        i += n
        if data.draw(st.booleans()):
            chain.close_chunk()
    chain.close_chunk()
    content = b''.join(lines)
    records = [sealing.parse_record(r, False) for r in chain.take_records()]
    last, size, count = replay(prev, content, records)
    assert (last, size, count) == (chain.last, chain.size, chain.lines)
    assert (size, count) == (len(content), len(lines))
    assert chain.take_records() == []


def test_a_chunk_closes_by_itself_once_big_enough_and_only_at_a_line_end():
    chain = sealing.Chain()
    chain.add(b'x' * sealing.CHUNK_MIN_BYTES)           # no newline yet: stays open
    assert chain.records == [] and chain.covered == sealing.CHUNK_MIN_BYTES
    chain.close_chunk()
    assert chain.records == []
    chain.add(b'y\n')
    assert len(chain.records) == 1 and chain.lines == 1 and chain.open_bytes == 0
    chain.add(b'small\n')
    assert len(chain.records) == 1 and chain.covered == sealing.CHUNK_MIN_BYTES + 8


def test_a_recovered_chunk_is_marked():
    chain = sealing.Chain()
    chain.add(b'lost before the restart\n', kind=b'r')
    chain.close_chunk(kind=b'r')
    record = sealing.parse_record(chain.take_records()[0], False)
    assert record.recovered and record.n_lines == 1


def test_seal_record_round_trip_and_mac():
    digest = hashlib.sha256(b'x').digest()
    line = sealing.make_seal(K0, 'root.log', 3, 5, 10, 200, 1234567, digest)
    seal = sealing.parse_record(line, False)
    assert (seal.first_epoch, seal.last_epoch, seal.lines, seal.size, seal.time_us,
            seal.chain_hash) == (3, 5, 10, 200, 1234567, digest)
    assert sealing.check_seal_mac(K0, 'root.log', seal)
    expected = hmac.new(K0, b'loghog-seal-v1\nroot.log\n3 5 10 200 1234567 ' +
                        digest.hex().encode(), hashlib.sha256).digest()
    assert seal.mac == expected
    assert not sealing.check_seal_mac(sealing.evolve(K0), 'root.log', seal)
    assert not sealing.check_seal_mac(K0, 'other.log', seal)
    seal.time_us += 1
    assert not sealing.check_seal_mac(K0, 'root.log', seal)


def test_start_record_round_trip():
    line = sealing.encode_start(K0, 42, 'host 1-root.log')
    start = sealing.parse_record(line, True)
    assert (start.prev, start.time_us, start.name) == (K0, 42, 'host 1-root.log')
    with pytest.raises(ValueError):
        sealing.parse_record(line, False)


@pytest.mark.parametrize('line', [
    b'', b'c 1 1 2 00\n', b'c 0 1 2 %s\n' % (b'0' * 64), b'c 1 0 0 %s\n' % (b'0' * 64),
    b'c 1 2 1 %s\n' % (b'0' * 64), b'c 1 1 2 %s' % (b'0' * 64), b's 2 1 0 0 0 %s %s\n' % (
        b'0' * 64, b'0' * 64), b'x 1\n', b'c -1 1 2 %s\n' % (b'0' * 64),
    b's 1 1 0 0 0 %s\n' % (b'0' * 64), b'c 1 1 2 %s\n' % (b'g' * 64)])
def test_malformed_records_are_refused(line):
    with pytest.raises(ValueError):
        sealing.parse_record(line, False)


def test_first_record_must_be_a_start():
    with pytest.raises(ValueError):
        sealing.parse_record(b'c 1 1 2 %s\n' % (b'0' * 64), True)
    with pytest.raises(ValueError):
        sealing.parse_record(b'loghog-seal 2 %s 1 a\n' % (b'0' * 64), True)


def test_sidecar_state_folds_records_and_stops_at_a_cut_line():
    chain = sealing.Chain(K0)
    chain.add(b'a\nb\n')
    chain.close_chunk()
    seal = sealing.make_seal(K0, 'f.log', 0, 0, 2, 4, 5, chain.last)
    lines = [sealing.encode_start(K0, 1, 'f.log')] + chain.take_records() + [seal, b'c 3 1']
    state = sealing.read_sidecar_state(lines)
    assert (state.name, state.prev, state.last, state.lines, state.size) == \
        ('f.log', K0, chain.last, 2, 4)
    assert state.seal.last_epoch == 0
    empty = sealing.read_sidecar_state([sealing.encode_start(K0, 1, 'f.log')])
    assert (empty.last, empty.lines, empty.size, empty.seal) == (K0, 0, 0, None)
    with pytest.raises(ValueError):
        sealing.read_sidecar_state([b'garbage\n'])

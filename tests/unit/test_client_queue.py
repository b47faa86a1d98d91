"""The pure parts of the client: the bounded frame queue and the frame accounting of writes."""

import pytest

from loghog.buffer import FrameQueue
from loghog.transport import _whole_frames, format_address


def test_queue_drops_the_oldest_when_full_and_counts():
    queue = FrameQueue(3)
    for frame in (b'a', b'b', b'c', b'd', b'e'):
        queue.append(frame)
    assert queue.take(100) == [b'c', b'd', b'e']
    assert queue.dropped == 2


def test_take_returns_at_least_one_frame_and_respects_the_byte_limit():
    queue = FrameQueue(10)
    for frame in (b'x' * 50, b'y' * 30, b'z' * 30, b'w'):
        queue.append(frame)
    assert queue.take(10) == [b'x' * 50]           # bigger than the limit, still sent
    assert queue.take(60) == [b'y' * 30, b'z' * 30]
    assert queue.take(60) == [b'w'] and len(queue) == 0


def test_requeued_frames_go_back_in_front_in_order():
    queue = FrameQueue(10)
    for frame in (b'1', b'2', b'3'):
        queue.append(frame)
    batch = queue.take(2)
    queue.append(b'4')
    queue.requeue(batch)
    assert queue.take(100) == [b'1', b'2', b'3', b'4']


def test_requeue_into_a_queue_that_filled_meanwhile_drops_the_requeued_oldest():
    queue = FrameQueue(3)
    for frame in (b'1', b'2'):
        queue.append(frame)
    batch = queue.take(100)
    for frame in (b'3', b'4', b'5'):
        queue.append(frame)
    queue.requeue(batch)
    assert queue.take(100) == [b'3', b'4', b'5'] and queue.dropped == 2


def test_discard_all_counts_as_dropped():
    queue = FrameQueue(5)
    queue.append(b'1')
    queue.append(b'2')
    queue.discard_all()
    assert (len(queue), queue.dropped) == (0, 2)


def test_queue_needs_room_for_one_frame():
    with pytest.raises(ValueError, match='max_buffer_size must be at least 1'):
        FrameQueue(0)


@pytest.mark.parametrize('written, whole', [(0, 0), (3, 0), (4, 1), (6, 1), (9, 3), (99, 3)])
def test_only_frames_written_entirely_count_as_sent(written, whole):
    assert _whole_frames([b'aaaa', b'bbb', b'cc'], written) == whole


def test_addresses_are_shown_with_brackets_for_ipv6():
    assert format_address(('127.0.0.1', 5566)) == '127.0.0.1:5566'
    assert format_address(('::1', 5566, 0, 0)) == '[::1]:5566'


def test_queue_is_bounded_in_bytes_too_but_takes_one_large_frame_when_empty():
    queue = FrameQueue(100, max_bytes=10)
    for frame in (b'aaaa', b'bbbb', b'cccc'):
        queue.append(frame)
    assert (queue.take(100), queue.dropped) == ([b'bbbb', b'cccc'], 1)
    assert queue.bytes == 0
    assert queue.append(b'x' * 50) == []             # alone: it fits
    assert queue.append(b'y') == [b'x' * 50]          # the oldest goes to make room
    assert not queue.has_room(4, held=1, held_bytes=8)  # frames held elsewhere count too


def test_gaps_are_counted_per_module_with_their_times_and_reasons():
    from loghog import wire
    from loghog.gaps import Gaps
    gaps = Gaps()
    frames = [wire.encode_message('app', module, stamp, 0, 'h', 'body')
              for module, stamp in (('web', 1764900000), ('db', 1764900001),
                                    ('web', 1764900060))]
    gaps.add(frames[:2], 'the daemon was unreachable')
    gaps.add(frames[2:], 'the daemon was unreachable')
    gaps.add([wire.compress_frame(frames[2])], 'the buffer was full')
    assert gaps.total == 4
    assert dict(gaps.take(pid=42)) == {
        'web': '[loghog] 3 records dropped by this process (pid 42) between 2025-12-05 '
               '02:00:00 and 2025-12-05 02:01:00 UTC: the daemon was unreachable; '
               'the buffer was full',
        'db': '[loghog] 1 records dropped by this process (pid 42) between 2025-12-05 '
              '02:00:01 and 2025-12-05 02:00:01 UTC: the daemon was unreachable'}
    assert not gaps and gaps.take(pid=42) == []


def test_gap_entries_taken_for_a_notice_that_was_not_written_are_counted_again():
    from loghog import wire
    from loghog.gaps import Gaps
    gaps = Gaps()
    gaps.add([wire.encode_message('app', 'web', 1764900000, 0, 'h', 'x')] * 3, 'down')
    entries = gaps.take_entries()
    assert not gaps and [(module, entry[0]) for module, entry in entries] == [('web', 3)]
    gaps.add([wire.encode_message('app', 'web', 1764900060, 0, 'h', 'x')], 'full')
    gaps.restore(entries)
    assert gaps.total == 4
    assert gaps.take(pid=1) == [('web', '[loghog] 4 records dropped by this process (pid 1) '
                                        'between 2025-12-05 02:00:00 and 2025-12-05 02:01:00 '
                                        'UTC: full; down')]


def test_a_body_too_long_for_the_daemon_is_cut_with_a_marker():
    from loghog import wire

    def encode(module, stamp, nsecs, body):
        return wire.encode_message('app', module, stamp, nsecs, 'h', body)

    short = encode('m', 1, 2, 'fits')
    assert wire.encode_within(encode, 'm', 1, 2, 'fits') == short
    for body in ('x' * 70_000, '\u2028' * 20_000, '"' * 40_000):
        frame = wire.encode_within(encode, 'm', 1, 2, body)
        assert len(frame) - wire.HEADER_SIZE <= wire.MAX_MESSAGE_BYTES
        import json
        cut = json.loads(frame[wire.HEADER_SIZE:])['body']
        assert cut.startswith(body[:100]) and cut.endswith(
            f' characters, the message was longer than {wire.MAX_MESSAGE_BYTES} bytes]')
        assert len(cut) > len(body) * 0.8 * wire.MAX_MESSAGE_BYTES / len(encode('m', 1, 2, body))


def test_over_udp_a_body_is_cut_so_that_its_whole_frame_fits_one_datagram():
    """A6-1: a frame of 65,508 to 65,544 bytes fit the daemon's 64 KiB but no datagram."""
    import json

    from loghog import signing, wire

    def encode(module, stamp, nsecs, body):
        return wire.encode_message('app', module, stamp, nsecs, 'h', body)

    assert wire.max_payload('tcp') == wire.max_payload('tls') == wire.MAX_MESSAGE_BYTES
    assert wire.max_payload('tcp', 64) == wire.MAX_MESSAGE_BYTES - 64
    overhead = len(encode('m', 1, 2, ''))
    for room in (0, signing.ENVELOPE_SIZE):
        limit = wire.max_payload('udp', room)
        assert limit + wire.HEADER_SIZE + room == wire.MAX_DATAGRAM_BYTES
        # Bodies whose frame is around the datagram's limit, on both sides of it.
        for size in range(wire.MAX_DATAGRAM_BYTES - overhead - 80 - room,
                          wire.MAX_MESSAGE_BYTES + 40, 13):
            body = 'x' * size
            frame = wire.encode_within(encode, 'm', 1, 2, body, limit)
            assert len(frame) + room <= wire.MAX_DATAGRAM_BYTES, (room, size)
            sent = json.loads(frame[wire.HEADER_SIZE:])['body']
            if len(encode('m', 1, 2, body)) + room <= wire.MAX_DATAGRAM_BYTES:
                assert sent == body
            else:
                assert sent.startswith('x' * 60_000) and sent.endswith(
                    f' characters, the message was longer than {limit} bytes]'), (room, size)


def gap_frames(modules, stamp=1764900000):
    from loghog import wire
    return [wire.encode_message('app', module, stamp + n, 0, 'h', 'x')
            for n, module in enumerate(modules)]


def announced(notices):
    """The number of records each announcement (text) counts."""
    return [int(text.split()[1]) for _, text in notices]


def test_past_100_modules_the_records_of_the_others_are_counted_in_one_announcement():
    """A8-6: a logger per job (job.0, job.1, ...) while the buffer drops made one entry per
    name, without bound (+118 MiB for 290,000 names), and as many [loghog] lines."""
    from loghog.gaps import MAX_MODULES, Gaps
    gaps = Gaps()
    names = [f'job.{n}' for n in range(250)]
    gaps.add(gap_frames(names + names[:10] + names[200:203]), 'the daemon was unreachable')
    assert gaps.total == 263
    notices = gaps.take(pid=42)
    assert len(notices) == MAX_MODULES + 1 == 101
    # The first 100 modules each in their own file; job.0 .. job.9 dropped twice.
    assert [module for module, _ in notices[:100]] == names[:100]
    assert announced(notices[:100]) == [2] * 10 + [1] * 90
    # All the others in one line, in the app's root file, exact about both counts.
    assert notices[100] == (
        'root', '[loghog] 153 records dropped by this process (pid 42) between 2025-12-05 '
                '02:01:40 and 2025-12-05 02:04:22 UTC: the daemon was unreachable (in 150 '
                'other modules: past 100 modules, one line counts the records of all the '
                'others)')
    assert sum(announced(notices)) == 263
    assert not gaps and gaps.take(pid=42) == []


def test_the_other_modules_are_counted_up_to_10000_names_then_more_than_that():
    from loghog.gaps import MAX_MODULES, MAX_OTHER_NAMES, Gaps
    gaps = Gaps()
    frames = gap_frames(f'job.{n}' for n in range(MAX_MODULES + MAX_OTHER_NAMES))
    gaps.add(frames, 'full')
    module, text = gaps.take(pid=1)[-1]
    assert module == 'root' and text.startswith('[loghog] 10000 records dropped')
    assert '(in 10000 other modules:' in text
    gaps.add(frames + gap_frames(['job.x', 'job.y']), 'full')
    module, text = gaps.take(pid=1)[-1]
    assert text.startswith('[loghog] 10002 records dropped')
    assert '(in more than 10000 other modules:' in text
    assert not gaps and gaps.take(pid=1) == []


def test_announcements_not_written_are_counted_again_the_others_included():
    """Entries taken for notices that were not written go back; meanwhile new drops may
    have filled the 100 modules: every record is still counted exactly once."""
    from loghog.gaps import MAX_MODULES, Gaps
    gaps = Gaps()
    gaps.add(gap_frames([f'a.{n}' for n in range(MAX_MODULES + 5)]), 'down')
    taken = gaps.take_entries(3)
    assert [module for module, _ in taken] == ['a.0', 'a.1', 'a.2'] and gaps.total == 102
    rest = gaps.take_entries()
    assert [module for module, _ in rest][-1] == 'root' and not gaps
    gaps.add(gap_frames([f'b.{n}' for n in range(MAX_MODULES)]), 'full')
    gaps.restore(taken + rest)
    notices = gaps.take(pid=7)
    assert sum(announced(notices)) == 2 * MAX_MODULES + 5
    assert len(notices) == MAX_MODULES + 1
    # b.0 .. b.99 have their lines; a.* (105 names) are counted together.
    assert notices[-1][0] == 'root'
    assert notices[-1][1].startswith('[loghog] 105 records dropped')
    assert 'UTC: down (in 105 other modules:' in notices[-1][1]

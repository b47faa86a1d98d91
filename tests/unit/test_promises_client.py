"""Smaller promises of docs/client.md and docs/status.md that no test held.

- client.md "Always": "a background thread (``loghog-sender``, a daemon thread started at
  the first record) sends the queue".
- security.md / status.md: a refusal is logged "at most five times a minute" per reason,
  and "the next warning for that reason says how many were left out".
"""

import logging
import threading
from types import SimpleNamespace

from loghog import LoghogHandler
from loghogd.server import Server
from loghogd.stats import RateLimiter
from tests.unit.test_client_fakes import FrameServer


def sender_threads():
    return {thread for thread in threading.enumerate() if thread.name == 'loghog-sender'}


def test_the_sender_thread_is_a_daemon_thread_named_loghog_sender_started_at_the_first_record(
        make_logger):
    with FrameServer() as server:
        before = sender_threads()
        handler = LoghogHandler('app', '127.0.0.1', server.port)
        logger = make_logger(handler)
        assert sender_threads() == before                  # nothing started by the constructor
        logger.info('the first record')
        started = sender_threads() - before
        assert len(started) == 1 and all(thread.daemon for thread in started)
        assert handler.flush()
        handler.close()


def test_a_refusal_is_logged_five_times_a_minute_then_says_how_many_were_left_out(caplog):
    # The daemon's own Server.warn, on a hand-made server holding only what it reads.
    server = SimpleNamespace(limiter=RateLimiter(), now=1000.0)
    caplog.set_level(logging.WARNING, logger='loghogd')
    for number in range(8):
        Server.warn(server, 'too_large', 'refused frame %d from %s', number, '10.0.0.9:4000')
    said = [record.getMessage() for record in caplog.records]
    assert said == ['refused frame %d from 10.0.0.9:4000' % n for n in range(5)]
    server.now += 59.0
    Server.warn(server, 'too_large', 'refused frame %d from %s', 8, '10.0.0.9:4000')
    assert len(caplog.records) == 5                        # still the same minute
    server.now += 1.0
    Server.warn(server, 'too_large', 'refused frame %d from %s', 9, '10.0.0.9:4000')
    assert caplog.records[-1].getMessage() == (
        'refused frame 9 from 10.0.0.9:4000 (4 more like it were not logged)')
    Server.warn(server, 'bad_json', 'another reason')      # each reason has its own five
    assert caplog.records[-1].getMessage() == 'another reason'

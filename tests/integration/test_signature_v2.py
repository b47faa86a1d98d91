"""Protocol v2 signatures (issue 19) against a real daemon and the real client.

What a sysadmin relies on: with ``require_signature = v2`` our client's messages are written
(it signs v2 because the daemon says it checks them), a v1 client is refused there with the
reason on its standard error while it keeps working with a v1 facility; a replayed v2
message, one whose host name or fields were changed, and one signed too long ago are refused
and counted.
"""

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time

from loghog import wire
from loghog.handler import LoghogHandler
from loghog.signing import V2Signer
from loghog.wire import encode_message
from tests.integration.test_client_acks import CuttableProxy, numbers, wait_for_count
from tests.support import ROOT, Loggers, Stream, line_body, read_lines, wait_for

FACILITIES = """
[strict]
rotate = daily
backup_count = 3
secret = s3cret
require_signature = v2
[strict:audit]
rotate = daily
backup_count = 3
[legacy]
rotate = daily
backup_count = 3
secret = s3cret
"""
SESSION = bytes.fromhex('00112233445566778899aabbccddeeff')


def bodies(path):
    return [line_body(line) for line in read_lines(path)] if path.exists() else []


def record(text):
    return logging.makeLogRecord({'msg': text})


def snapshot(daemon):
    try:
        return json.loads((daemon.rundir / 'status.json').read_text())
    except (FileNotFoundError, ValueError):
        return None


def rejected(daemon):
    status = snapshot(daemon)
    return {r['reason']: r['messages'] for r in status['rejected']} if status else {}


def test_our_client_signs_v2_where_required_and_a_v1_client_is_refused_there_visibly(
        daemon_factory, capsys):
    daemon = daemon_factory(FACILITIES)
    ours = LoghogHandler('strict', '127.0.0.1', daemon.tcp_port, secret='s3cret',
                         hostname='web1', compression=True)
    v1_client = LoghogHandler('strict', '127.0.0.1', daemon.tcp_port, secret='s3cret',
                              signature='v1')
    legacy = LoghogHandler('legacy', '127.0.0.1', daemon.tcp_port, secret='s3cret',
                           signature='v1')
    try:
        for n in range(3):
            ours.handle(record(f'v2 message {n}'))
        audit = logging.makeLogRecord({'msg': 'audited', 'name': 'audit'})
        ours.handle(audit)   # the sub-facility inherits require_signature
        v1_client.handle(record('v1 to strict'))
        legacy.handle(record('v1 to legacy'))
        assert ours.flush() and v1_client.flush() and legacy.flush()
        assert ours.rejected == 0 and v1_client.rejected == 1 and legacy.rejected == 0
    finally:
        for handler in (ours, v1_client, legacy):
            handler.close()
    assert bodies(daemon.log_file('strict')) == ['v2 message 0', 'v2 message 1', 'v2 message 2']
    assert bodies(daemon.log_file('strict', 'audit')) == ['audited']
    assert bodies(daemon.log_file('legacy')) == ['v1 to legacy']
    assert re.search(r'the daemon rejected 1 messages: v2_signature_required \(1\)',
                     capsys.readouterr().err)
    assert daemon.stop() == 0


def test_the_original_client_bytes_still_work_with_a_v1_facility(daemon_factory):
    daemon = daemon_factory(FACILITIES)
    with socket.create_connection(('127.0.0.1', daemon.tcp_port)) as sock:
        # What the 0.7 client sends: v1, no flags.
        sock.sendall(encode_message('legacy', 'root', 1700000000, 0, 'web1', 'from 0.7',
                                    secret='s3cret')
                     + encode_message('strict', 'root', 1700000000, 0, 'web1', '0.7 to strict',
                                      secret='s3cret')
                     + encode_message('legacy', 'root', 1700000000, 0, 'web1', 'sentinel',
                                      secret='s3cret'))
    wait_for(lambda: 'sentinel' in bodies(daemon.log_file('legacy')), message='sentinel')
    assert bodies(daemon.log_file('legacy')) == ['from 0.7', 'sentinel']
    assert not daemon.log_file('strict').exists()


def v2_frame(body, seq, host='web1', fields=None, time_ms=None, app='strict'):
    # With the fields key, as the client's encoder adds it.
    frame = wire.MessageEncoder(app, host).encode('root', 1700000000, 0, body,
                                                  None if fields is None else json.dumps(fields))
    time_ms = int(time.time() * 1000) if time_ms is None else time_ms
    return V2Signer('s3cret').sign_frame(frame, SESSION, seq, time_ms)


def tampered(frame, old, new):
    """``frame`` with ``old`` replaced by ``new`` (same length) in its payload: its MAC no
    longer matches."""
    assert len(old) == len(new) and frame.count(old) == 1
    return frame.replace(old, new)


def test_replayed_tampered_and_old_v2_messages_are_refused_and_counted(daemon_factory):
    daemon = daemon_factory(FACILITIES, sections={'stats': {'interval': '0.2'}})
    first = v2_frame('signed once', 1)
    with socket.create_connection(('127.0.0.1', daemon.tcp_port)) as sock:
        sock.sendall(first + v2_frame('with fields', 2, fields={'amount': 10}))
    # The replays: the same bytes from another address, and on another connection, the
    # host name changed, the fields changed, and a message signed six minutes ago
    # (max_clock_skew is five).
    with socket.create_connection(('127.0.0.1', daemon.tcp_port),
                                  source_address=('127.0.0.2', 0)) as sock:
        sock.sendall(first)
    with socket.create_connection(('127.0.0.1', daemon.tcp_port)) as sock:
        sock.sendall(first
                     + tampered(v2_frame('host', 3), b'"web1"', b'"evil"')
                     + tampered(v2_frame('fields', 4, fields={'amount': 10}),
                                b'"amount": 10}', b'"amount": 99}')
                     + v2_frame('too old', 5, time_ms=int((time.time() - 360) * 1000))
                     + v2_frame('sentinel', 6))
    wait_for(lambda: 'sentinel' in bodies(daemon.log_file('strict')), message='sentinel')
    assert bodies(daemon.log_file('strict')) == ['signed once', 'with fields', 'sentinel']
    wait_for(lambda: sum(rejected(daemon).values()) == 5, message='the refusals in status')
    assert rejected(daemon) == {'replayed': 2, 'bad_signature': 2, 'clock_skew': 1}
    assert daemon.stop() == 0


def test_resends_after_cut_connections_are_skipped_not_refused_as_replays(daemon_factory,
                                                                          request):
    """A v2 client whose connection is cut writes its unacknowledged messages again, signed
    afresh with their old numbers: those written are skipped silently (not refused as
    replays), the others written; each message once, in order, nothing lost."""
    daemon = daemon_factory(FACILITIES)
    proxy = CuttableProxy(daemon.tcp_port)
    path = daemon.log_file('strict')
    loggers = Loggers(f'signature-v2.{request.node.name}')
    try:
        handler = LoghogHandler('strict', '127.0.0.1', proxy.port, secret='s3cret')
        logger = loggers(handler, logging.INFO)
        stream = Stream(logger)
        try:
            for lines in (1000, 3000):
                wait_for_count(path, lines)
                assert proxy.cut() == 1
        finally:
            total = stream.stop()
        assert handler.flush(), 'not everything was acknowledged'
        assert (handler.dropped, handler.unconfirmed, handler.rejected) == (0, 0, 0)
    finally:
        loggers.close()
        proxy.stop()
    assert numbers(path) == list(range(total))  # each once, in order
    assert daemon.stop() == 0


def test_the_command_signs_v2_and_over_udp_when_told(daemon_factory):
    daemon = daemon_factory(FACILITIES, sections={'stats': {'interval': '0.2'}})
    env = dict(os.environ, LOGHOG_SECRET='s3cret')
    base = [sys.executable, '-m', 'loghog', '-a', 'strict']
    for extra, text in (([], 'command auto'), (['--compress'], 'command compressed'),
                        (['--udp', '--signature', 'v2'], 'command udp v2'),
                        (['--udp'], 'command udp v1')):
        port = daemon.udp_port if '--udp' in extra else daemon.tcp_port
        result = subprocess.run(base + ['-p', str(port)] + extra + [text], env=env,
                                cwd=str(ROOT), capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
    # The UDP message signed v1 (over UDP the daemon cannot say it checks v2) is refused.
    wait_for(lambda: rejected(daemon).get('v2_signature_required') == 1,
             message='the v1 datagram refused')
    wait_for(lambda: len(bodies(daemon.log_file('strict'))) == 3, message='three lines')
    assert sorted(bodies(daemon.log_file('strict'))) == [
        'command auto', 'command compressed', 'command udp v2']
    assert rejected(daemon) == {'v2_signature_required': 1}

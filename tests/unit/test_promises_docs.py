"""The numbers, names and exit statuses the README, docs/ and man pages state are the code's.

Each entry below is a sentence of the documentation (found by a pattern that quotes it)
and the declaration it describes.  When a number changes in the code, the sentence must
change with it; when the sentence is rewritten, the pattern here is updated with it
(the failure says which sentence is gone).  Behaviour behind these numbers is tested
elsewhere with the default settings; this file keeps the words and the declarations one.
"""

import os
import re
import signal

import pytest

from loghog import cli as client_cli
from loghogd import (acks, binding, connections, converters, daemon, errors, jsonlines, logfiles,
                     prometheus, protocol, rotation, server, stats, status, status_command,
                     writer)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORDS = {'a': 1, 'one': 1, 'two': 2, 'three': 3, 'five': 5, 'ten': 10, 'second': 1,
         'minute': 60, 'an hour': 3600, 'five minutes': 300}


def read(relative):
    with open(os.path.join(ROOT, relative), encoding='utf-8') as stream:
        return ' '.join(stream.read().split())   # sentences wrap anywhere


def number(written):
    written = written.strip()
    if written in WORDS:
        return WORDS[written]
    return float(written.replace(',', ''))


# (document, pattern with one group per number, the declared values in that order)
NUMBERS = [
    # README: signals, acknowledgements, files
    ('README.md', r'at most (\d+) MiB per connection, what it had sent when the signal came, '
                  r'(\d+) s in all', (server.DRAIN_LIMIT_BYTES / 2**20, server.DRAIN_TIME_S)),
    ('README.md', r'\(up to (\d+); beyond that `"more_rejected"`', (acks.MAX_REJECTED_LISTED,)),
    ('README.md', r'the table holds at most ([\d,]+) sessions per peer and ([\d,]+) in all',
     (acks.MAX_SESSIONS_PER_PEER, acks.MAX_SESSIONS)),
    ('README.md', r'makes room only from its own sessions idle for (five minutes)',
     (acks.SESSION_PROTECT_S,)),
    ('README.md', r'but never below (\d+)', (acks.SESSIONS_FAIR_SHARE,)),
    ('README.md', r'Sessions unused for (an hour) are forgotten', (acks.SESSION_IDLE_S,)),
    ('README.md', r'at most (\d+) s after the client\'s end of input',
     (connections.StreamConnection.HALF_CLOSED_ACK_TIMEOUT_S,)),
    ('README.md', r'logged at most (five) times a minute per reason', (stats.RateLimiter().burst,)),
    ('README.md', r'rotations run in slices of at most (\d+) ms', (rotation.TICK_BUDGET_S * 1000,)),
    ('README.md', r'clock set back by more than a (minute)', (rotation.CLOCK_BACK_S,)),
    ('README.md', r'fsynced within `flush_every` messages or about a (second)',
     (writer.SYNC_INTERVAL_S,)),
    ('README.md', r'A name longer than (\d+) characters', (converters.HOST_PART_MAX,)),
    ('README.md', r'then `-` and (\d+) hex digits of the SHA-256', (converters._HASH_DIGITS,)),
    ('README.md', r'the (\d+) bytes a file name may have', (converters.NAME_MAX,)),
    ('README.md', r'more than (\d+) keys, a key longer than (\d+) characters, nested deeper than (\d+)',
     (protocol.MAX_FIELDS, protocol.MAX_FIELD_NAME_CHARS, protocol.MAX_FIELD_DEPTH)),
    ('README.md', r'a declared size over (\d+) MiB', (protocol.SKIP_LIMIT / 2**20,)),
    # docs/security.md: the built-in limits
    ('docs/security.md', r'(\d+) MiB: a declared frame size above this', (protocol.SKIP_LIMIT / 2**20,)),
    ('docs/security.md', r'(\d+) characters for a host name, (\d+) for a module name',
     (protocol.MAX_HOSTNAME_CHARS, protocol.MAX_MODULE_CHARS)),
    ('docs/security.md', r'(\d+) MiB of unread acks per connection',
     (connections.MAX_OUTGOING_BYTES / 2**20,)),
    ('docs/security.md', r'cut off once (\d+) MiB of acks is waiting',
     (connections.MAX_OUTGOING_BYTES / 2**20,)),
    ('docs/security.md', r'(\d+) warnings per reason per (minute)',
     (stats.RateLimiter().burst, stats.RateLimiter().interval_s)),
    ('docs/security.md', r'Listen backlog of (\d+)', (binding.LISTEN_BACKLOG,)),
    ('docs/security.md', r'(\d+) accepts and (\d+) datagrams per wake-up',
     (connections.ACCEPT_BATCH, connections.UDP_BATCH)),
    ('docs/security.md', r'reads up to (\d+) datagrams per wake-up, and no more than a turn.s '
     r'time \(([\d.]+) ms', (connections.UDP_BATCH, connections.TURN_S * 1000)),
    ('docs/security.md', r'and (\d+) descriptors for listeners and the rest',
     (binding.RESERVED_DESCRIPTORS,)),
    ('docs/security.md', r'2 × `max_open_files` \+ (\d+)', (binding.RESERVED_DESCRIPTORS,)),
    ('docs/security.md', r'stops accepting for a (second)', (server.ACCEPT_PAUSE_S,)),
    ('docs/security.md', r'one read sized to take about ([\d.]+) ms, a pass reads for about (\d+) ms',
     (connections.TURN_S * 1000, server.PASS_BUDGET_S * 1000)),
    ('docs/security.md', r'at SIGTERM, each peer is read up to what it had sent, (\d+) s in all',
     (server.DRAIN_TIME_S,)),
    ('docs/security.md', r'up to (\d+) ranges of them per session', (acks.MAX_RANGES,)),
    ('docs/security.md', r'at most ([\d,]+) per peer and ([\d,]+) in all',
     (acks.MAX_SESSIONS_PER_PEER, acks.MAX_SESSIONS)),
    ('docs/security.md', r'if it holds more than (\d+) and at least (two) more',
     (acks.SESSIONS_FAIR_SHARE, 2)),
    ('docs/security.md', r'a session idle (five minutes) without a live connection is forgotten',
     (acks.SESSION_PROTECT_S,)),
    ('docs/security.md', r'sets its umask to `(\d+)`', (int(oct(daemon.UMASK)[2:]),)),
    # docs/rotation.md
    ('docs/rotation.md', r'slices of at most (\d+) ms per pass of the loop \(`TICK_BUDGET_S`',
     (rotation.TICK_BUDGET_S * 1000,)),
    ('docs/rotation.md', r'more lines than there are files \(at least ([\d,]+)\)',
     (rotation.JOURNAL_MIN_LINES,)),
    ('docs/rotation.md', r'go back by more than a (minute)', (rotation.CLOCK_BACK_S,)),
    ('docs/rotation.md', r'begins more than a (minute) after the new time takes the period.*'
                         r'\(the first (\d+), then how many in all\)',
     (rotation.CLOCK_BACK_S, rotation.RELOAD_LOG_FILES)),
    # docs/status.md
    ('docs/status.md', r'older than (three) intervals plus (\d+) s',
     (status_command.STALE_INTERVALS, status_command.STALE_MARGIN_S)),
    ('docs/status.md', r'\*\*PEER\*\* lists the (ten) addresses', (status.TOP_PEERS,)),
    ('docs/status.md', r'taken every (\d+) s \(a window of (\d+) to (\d+) s\)',
     (status.RATE_STEP_S, status.RATE_WINDOW_S, status.RATE_WINDOW_S + status.RATE_STEP_S)),
    ('docs/status.md', r'atomically \(a temporary file, then a rename\), mode (\d+)',
     (int(oct(status.SNAPSHOT_MODE)[2:]),)),
    ('docs/status.md', r'atomically, mode (\d+) so that node_exporter',
     (int(oct(status.PROMETHEUS_MODE)[2:]),)),
]


@pytest.mark.parametrize('relative, pattern, declared', NUMBERS,
                         ids=['%s:%s' % (r.split('/')[-1], p[:36]) for r, p, _ in NUMBERS])
def test_numbers_in_the_docs_are_the_declared_ones(relative, pattern, declared):
    match = re.search(pattern, read(relative))
    assert match, '%s no longer says %r: update the sentence and this test together' % (
        relative, pattern)
    assert [number(group) for group in match.groups()] == [float(value) for value in declared]


def test_folders_and_files_are_made_with_the_documented_modes():
    readme = read('README.md')
    assert 'Folders are created `0750` and files `0640`' in readme
    assert (writer.DIR_MODE, writer.FILE_MODE) == (0o750, 0o640)
    assert 'Log folders and files are `0750` and `0640` whatever the umask' in readme


# ------------------------------------------------------------------------- status and metrics

def table_first_column(relative, header):
    lines = open(os.path.join(ROOT, relative), encoding='utf-8').read().splitlines()
    start = lines.index(header)
    cells = []
    for line in lines[start + 2:]:
        if not line.startswith('|'):
            break
        cells.append(line.strip('|').split('|')[0])
    return cells


def test_every_prometheus_metric_is_in_status_md_and_no_other():
    documented = set()
    for cell in table_first_column('docs/status.md', '| metric | type | labels |'):
        documented |= set(re.findall(r'`(loghogd_\w+)`', cell))
    declared = {name for name, _, _ in prometheus.METRICS}
    assert declared - documented == set(), 'metrics the docs do not list'
    assert documented - declared == set(), 'metrics the docs list but the daemon does not write'


def test_status_md_lists_every_rejection_reason_and_no_other():
    text = read('docs/status.md')
    sentence = re.search(r'counted under one reason: (.*?)\. \*\*PEER\*\*', text).group(1)
    documented = set(re.findall(r'`(\w+)`', sentence))
    assert documented == set(protocol.REASONS) | {connections.BAD_DATAGRAM}


def test_readme_loss_counters_are_the_ones_status_shows():
    text = read('docs/status.md')
    block = re.search(r'lists them, the non-zero ones first: (.*?)\. The daemon\'s log', text).group(1)
    documented = set(re.findall(r'`([^`]+)`', block))
    shown = [label for _, label in status_command.LOSS_EVENTS]
    assert len(documented) == len(shown)
    # The docs may leave out a label's closing explanation: "sessions untracked (no ...)".
    for label in shown:
        assert any(label == said or label.startswith(said + ' (') for said in documented), label


# ------------------------------------------------------------------------- exit statuses

def exit_table(relative, header):
    codes = set()
    for cell in table_first_column(relative, header):
        codes |= {int(code) for code in re.findall(r'\d+', cell)}
    return codes


def test_loghogd_exit_statuses_in_the_readme_are_the_declared_ones():
    declared = {errors.EX_OK, errors.EX_USAGE, errors.EX_SOFTWARE, errors.EX_OSERR,
                errors.EX_TEMPFAIL, errors.EX_CONFIG}
    assert exit_table('README.md', '| exit status | meaning |') == declared
    man = open(os.path.join(ROOT, 'man/loghogd.8'), encoding='utf-8').read()
    section = man[man.index('.SH EXIT STATUS'):man.index('.SH FILES')]
    assert {int(code) for code in re.findall(r'^\.B (\d+)$', section, re.M)} == declared


def test_loghog_exit_statuses_in_the_docs_are_the_declared_ones():
    declared = {client_cli.EXIT_OK, client_cli.EXIT_USAGE, client_cli.EXIT_DATA,
                client_cli.EXIT_NO_INPUT, client_cli.EXIT_UNAVAILABLE,
                128 + signal.SIGINT, 128 + signal.SIGTERM}
    assert exit_table('docs/client.md', '| exit status | meaning |') == declared
    man = open(os.path.join(ROOT, 'man/loghog.1'), encoding='utf-8').read()
    section = man[man.index('.SH EXIT STATUS'):man.index('.SH ENVIRONMENT')]
    headings = re.findall(r'^\.TP\n(.*)$', section, re.M)
    assert {int(code) for heading in headings for code in re.findall(r'\d+', heading)} == declared
    readme = read('README.md')
    said = re.search(r'Exit status 0: all written; (\d+): bad options; (\d+): the daemon rejected '
                     r'a message .*?; (\d+): a TLS file cannot be read; (\d+): not delivered', readme)
    assert [int(code) for code in said.groups()] == [
        client_cli.EXIT_USAGE, client_cli.EXIT_DATA, client_cli.EXIT_NO_INPUT,
        client_cli.EXIT_UNAVAILABLE]
    assert re.search(r'exits 128 \+ the signal\'s number \((\d+), (\d+)\)', readme).groups() == (
        str(128 + signal.SIGTERM), str(128 + signal.SIGINT))


def test_loghogd_logs_and_status_exit_statuses_are_the_declared_ones():
    readme = read('README.md')
    said = re.search(r'Exit status: 0, (\d+) for a bad option or time, (\d+) for an unknown '
                     r'application or folder, (\d+) when a file cannot be read \(permission\), '
                     r'(\d+) for a bad loghogd.conf', readme)
    assert [int(code) for code in said.groups()] == [
        errors.EX_USAGE, logfiles.EX_NOINPUT, logfiles.EX_NOPERM, errors.EX_CONFIG]
    said = re.search(r'The exit status is (\d+) running, (\d+) not running .*?, (\d+) unknown',
                     readme)
    assert [int(code) for code in said.groups()] == [
        status_command.STATUS_RUNNING, status_command.STATUS_NOT_RUNNING,
        status_command.STATUS_UNKNOWN]


def test_json_lines_fields_of_ours_are_the_documented_ones():
    text = read('man/facilities.conf.5').replace('\\-', '-')
    assert jsonlines.OURS == {'time', 'host', 'app', 'module', 'level', 'logger', 'message'}
    for name in jsonlines.OURS:
        assert name in text


def test_the_client_cuts_records_at_the_daemons_default_max_message_size():
    # docs/client.md, Bounds: "a long record | cut to the daemon's default max_message_size
    # (64 KiB)"; the handler's docstring says the same.
    from loghog import wire
    from loghogd.config import load_config
    assert wire.MAX_MESSAGE_BYTES == load_config(None).server.max_message_size == 64 * 1024
    assert re.search(r"cut to the daemon's default `max_message_size` \((\d+) KiB\)",
                     read('docs/client.md')).group(1) == str(wire.MAX_MESSAGE_BYTES // 1024)
    # ... "over UDP, to what one datagram carries (65,507 bytes, the frame's header
    # included)"; README and man/loghog.1 say the same number (attack finding A6-1).
    assert wire.MAX_DATAGRAM_BYTES == 65_535 - 20 - 8
    assert f'{wire.MAX_DATAGRAM_BYTES:,} bytes' in read('docs/client.md') and \
        f'{wire.MAX_DATAGRAM_BYTES:,} bytes' in read('README.md') and \
        f'{wire.MAX_DATAGRAM_BYTES:,} bytes' in read('man/loghog.1')


def test_the_version_the_docs_name_is_the_packages():
    # README: `loghogd --version` prints `loghogd 0.8.0`, `make deb` makes
    # loghogd_0.8.0_all.deb; docs/packaging.md: "The package version is debian/changelog's
    # and must equal setup.py's"; the man pages' headers.
    from loghogd import __version__
    setup = read('setup.py')
    assert re.search(r"VERSION = '([^']+)'", setup).group(1) == __version__
    changelog = open(os.path.join(ROOT, 'debian', 'changelog'), encoding='utf-8').readline()
    assert re.match(r'loghog \(([^)]+)\) ', changelog).group(1) == __version__
    for relative in ('README.md', 'docs/packaging.md'):
        named = set(re.findall(r'loghogd_(\d+\.\d+\.\d+)_all\.deb', read(relative)))
        named |= set(re.findall(r'python3-loghog_(\d+\.\d+\.\d+)_all\.deb', read(relative)))
        assert named == {__version__}, relative
    assert set(re.findall(r'loghogd (\d+\.\d+\.\d+)', read('README.md'))) == {__version__}
    for name in sorted(os.listdir(os.path.join(ROOT, 'man'))):
        header = open(os.path.join(ROOT, 'man', name), encoding='utf-8').readline()
        assert re.search(r'"loghog (\d+\.\d+\.\d+)"', header).group(1) == __version__, name


def test_the_tls_server_context_is_what_security_md_says(tmp_path):
    # docs/security.md, "TLS, step by step": TLS 1.2 or newer; forward-secret AEAD suites
    # for TLS 1.2 (ECDHE/DHE with AES-GCM or ChaCha20-Poly1305); no TLS compression, no
    # client-initiated renegotiation; client certificates required.
    import ssl
    from loghogd.binding import make_tls_context
    from tests.support import make_certs
    folder = make_certs(tmp_path / 'pki')
    context = make_tls_context(str(folder / 'loghog-server.pem'), str(folder / 'loghog-ca.cert'))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    tls12 = [cipher for cipher in context.get_ciphers() if cipher['protocol'] == 'TLSv1.2']
    assert tls12 and all(c['kea'] in ('kx-ecdhe', 'kx-dhe') and c['aead'] for c in tls12), tls12


def test_the_systemd_unit_makes_the_run_folder_with_the_documented_mode():
    # docs/security.md, "Files and permissions": "log, work and run folders, app folders |
    # 0750"; the pidfile "sits in the 0750 run folder".  Under systemd the unit, not the
    # daemon, makes /run/loghogd (the daemon's makedirs leaves an existing folder alone).
    table = open(os.path.join(ROOT, 'docs', 'security.md'), encoding='utf-8').read()
    documented = re.search(r'^\| log, work and run folders, app folders \| `(\d+)` \|$', table, re.M)
    unit = open(os.path.join(ROOT, 'debian', 'loghogd.service'), encoding='utf-8').read()
    assert re.search(r'^RuntimeDirectoryMode=(\d+)$', unit, re.M).group(1) == documented.group(1)

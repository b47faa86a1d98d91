"""Every default the README, docs/ and the man pages state is the one the code declares.

The project's rule: every promise the documentation makes is a test with the default
configuration, or the sentence goes.  Defaults are the promises that drift most quietly
(a number changed in a declaration, a table nobody reread), so the tables themselves are
parsed here and compared with the declarations: loghogd/config.py (``SECTIONS``),
loghogd/facilities.py (``SETTINGS``), the handler's signature and the command's parser.
A key declared but not documented fails too.
"""

import ast
import inspect
import os
import re
import shlex

import pytest

from loghog import cli as client_cli
from loghog import sender
from loghog.acks import HANDSHAKE_TIMEOUT_S
from loghog.handler import LoghogHandler
from loghogd import config as daemon_config
from loghogd import facilities

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# How the documents write "no value".
EMPTY_WORDS = ('empty', 'none')


def read(relative):
    with open(os.path.join(ROOT, relative), encoding='utf-8') as stream:
        return stream.read()


def markdown_table(text, header):
    """Rows (lists of cells, backticks kept) of the table whose header row is ``header``."""
    lines = text.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith('|'):
            break
        rows.append([cell.strip() for cell in line.strip().strip('|').split('|')])
    return rows


def code_names(cell):
    """['a', 'b'] from '`a`, `b`'."""
    return re.findall(r'`([^`]+)`', cell)


def documented_value(cell):
    """The raw value a default cell states: '`64K`' -> '64K', 'empty: never' -> ''."""
    names = code_names(cell)
    if names and cell.startswith('`'):
        return names[0]
    word = cell.split(':')[0].split()[0].lower()
    assert word in EMPTY_WORDS, 'cannot read the default %r' % cell
    return ''


def roff_text(lines):
    """Plain text of roff lines: font macros joined as roff joins them, escapes removed."""
    words = []
    for line in lines:
        line = line.replace('\\-', '-').replace('\\(aq', "'")
        line = re.sub(r'\\f[BIRP]', '', line)
        if line.startswith(('.B ', '.I ')):
            words.append(' '.join(shlex.split(line[3:])))
        elif re.match(r'\.(BR|IR|RB|RI|BI|IB) ', line):
            words.append(''.join(shlex.split(line[4:])))
        elif line.startswith('.'):
            continue
        else:
            words.append(line)
    return ' '.join(words)


def man_entries(relative):
    """{(section, key): text} of a man page's ``.TP`` entries.

    The section is the ``.SH`` heading's name without brackets ('server' for '.SH [server]').
    An entry heading can name several keys ('listen_ipv4_ssl, listen_ipv6_ssl').
    """
    entries, section, key_line, body = {}, None, None, []

    def close():
        if key_line is not None:
            for key in key_line.split(', '):
                entries[(section, key.strip())] = roff_text(body)

    lines = read(relative).splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith('.SH '):
            close()
            key_line, body = None, []
            section = line[4:].strip().strip('"').strip('[]').lower()
        elif line == '.TP':
            close()
            key_line, body = roff_text([lines[index + 1]]), []
            index += 1
        elif line == '.PP':
            close()
            key_line, body = None, []
        elif key_line is not None:
            body.append(line)
        index += 1
    close()
    return entries


def man_default(text):
    """The value after 'Default:' in a man page entry, or None when it states none."""
    match = re.search(r'Default:\s*(\S+)', text)
    if not match:
        return None
    value = match.group(1).rstrip('.,;')
    return '' if value.lower() in EMPTY_WORDS else value


def same_default(setting, documented, effective=None):
    """Whether ``documented`` (a raw string) means the setting's declared default.

    Both go through the setting's converter, so '4M' and '4194304' agree.  ``effective`` is
    the value ``load_config`` makes of a default derived from another key ('<rundir>/...').
    """
    if effective is not None:
        return documented == effective
    declared = setting.default
    if declared is None:
        return False
    if documented == declared:
        return True
    try:
        return repr(setting.convert(documented)) == repr(setting.convert(declared))
    except ValueError:
        return False


def derived(documented, section_settings):
    """'<rundir>/loghogd.pid' or 'rundir/loghogd.pid' with the named key's declared default."""
    match = re.fullmatch(r'<?(\w+)>?(/.+)', documented)
    if match and match.group(1) in section_settings:
        return section_settings[match.group(1)].default + match.group(2)
    return None


DAEMON_SETTINGS = {section: {s.name: s for s in settings}
                   for section, settings in daemon_config.SECTIONS.items()}
DEFAULTS = daemon_config.load_config(None)


def effective(section, key):
    return getattr(getattr(DEFAULTS, section), key)


def check_daemon_default(section, key, documented):
    settings = DAEMON_SETTINGS[section]
    assert key in settings, '[%s] %s is documented but not declared' % (section, key)
    base = derived(documented, DAEMON_SETTINGS['main'])
    if base is not None:
        assert settings[key].default == '', (section, key)
        assert effective(section, key) == base, (section, key, documented)
    else:
        assert same_default(settings[key], documented), (
            '[%s] %s: documented default %r, declared %r'
            % (section, key, documented, settings[key].default))


# ---------------------------------------------------------------------------- loghogd.conf

def readme_daemon_rows():
    rows, section = [], None
    for cells in markdown_table(read('README.md'), '| section | key | default | meaning |'):
        section = code_names(cells[0])[0].strip('[]') if cells[0] else section
        for key in code_names(cells[1]):
            rows.append((section, key, cells[2]))
    return rows


@pytest.mark.parametrize('section, key, cell', readme_daemon_rows())
def test_readme_loghogd_conf_table_states_the_declared_defaults(section, key, cell):
    check_daemon_default(section, key, documented_value(cell))


def test_readme_loghogd_conf_table_lists_every_declared_key():
    documented = {(section, key) for section, key, _ in readme_daemon_rows()}
    # [syslog] is documented in "Receiving syslog", key by key, and in loghogd.conf(5).
    declared = {(section, key) for section, settings in DAEMON_SETTINGS.items()
                if section != 'syslog' for key in settings}
    assert declared - documented == set()


def test_readme_syslog_example_names_only_declared_keys_with_their_defaults():
    text = read('README.md')
    block = text[text.index('```ini\n[syslog]\n') + len('```ini\n[syslog]\n'):]
    block = block[:block.index('```')]
    keys = [line.split('=')[0].strip() for line in block.splitlines() if '=' in line]
    assert set(keys) == set(DAEMON_SETTINGS['syslog'])
    # "tls_client_certs = required ; required | optional": the first is the default.
    assert 'tls_client_certs = required ' in block
    assert DAEMON_SETTINGS['syslog']['tls_client_certs'].default == 'required'
    assert DAEMON_SETTINGS['syslog']['default_app'].default == ''


def man_daemon_entries():
    return {(section, key): text for (section, key), text in man_entries('man/loghogd.conf.5').items()
            if section in DAEMON_SETTINGS}


@pytest.mark.parametrize('section, key', sorted(man_daemon_entries()))
def test_man_loghogd_conf_states_the_declared_defaults(section, key):
    text = man_daemon_entries()[(section, key)]
    documented = man_default(text)
    setting = DAEMON_SETTINGS[section].get(key)
    assert setting is not None, '[%s] %s is in loghogd.conf(5) but not declared' % (section, key)
    if documented is None:
        # Only a key without a value by default may leave it unsaid.
        assert setting.default == '', '[%s] %s: loghogd.conf(5) states no default' % (section, key)
    else:
        check_daemon_default(section, key, documented)


def test_man_loghogd_conf_describes_every_declared_key():
    documented = set(man_daemon_entries())
    declared = {(section, key) for section, settings in DAEMON_SETTINGS.items() for key in settings}
    assert declared - documented == set()


def security_limit_rows():
    rows = markdown_table(read('docs/security.md'), '| setting | default | why |')
    return [(code_names(cells[0])[0], cells[1]) for cells in rows]


@pytest.mark.parametrize('key, cell', security_limit_rows())
def test_security_md_limits_state_the_declared_defaults(key, cell):
    check_daemon_default('server', key, documented_value(cell))


# ------------------------------------------------------------------------- facilities.conf

def readme_facility_rows():
    return [(code_names(cells[0])[0], cells[1])
            for cells in markdown_table(read('README.md'), '| key | default | meaning |')]


@pytest.mark.parametrize('key, cell', readme_facility_rows())
def test_readme_facilities_conf_table_states_the_declared_defaults(key, cell):
    setting = facilities.SETTINGS.get(key)
    assert setting is not None, '%s is documented but not declared' % key
    if cell == 'required':
        assert setting.is_required, key
    else:
        assert same_default(setting, documented_value(cell)), (key, cell, setting.default)


def test_readme_facilities_conf_table_lists_every_declared_key():
    documented = {key for key, _ in readme_facility_rows()}
    # syslog_programs is documented in "Receiving syslog", with its example.
    assert set(facilities.SETTINGS) - documented - {'syslog_programs'} == set()


def man_facility_entries():
    return {key: text for (section, key), text in man_entries('man/facilities.conf.5').items()
            if section == 'settings'}


@pytest.mark.parametrize('key', sorted(man_facility_entries()))
def test_man_facilities_conf_states_the_declared_defaults(key):
    setting = facilities.SETTINGS.get(key)
    assert setting is not None, '%s is in facilities.conf(5) but not declared' % key
    documented = man_default(man_facility_entries()[key])
    if documented is None:
        assert setting.default in ('', None), '%s: facilities.conf(5) states no default' % key
    else:
        assert same_default(setting, documented), (key, documented, setting.default)


def test_man_facilities_conf_describes_every_declared_key():
    assert set(facilities.SETTINGS) - set(man_facility_entries()) == set()


def test_the_inherited_keys_are_the_ones_the_docs_list():
    readme = read('README.md')
    sentence = re.search(r'A module\s+facility takes (.*?) from its\s+application', readme, re.S)
    assert sentence, 'README: the sentence on inherited keys is gone'
    assert set(code_names(sentence.group(1))) == set(facilities.INHERITED)
    man = roff_text(read('man/facilities.conf.5').splitlines())
    sentence = re.search(r'A module facility takes (.*?) from its', man, re.S)
    named = {word for word in re.split(r'[ ,]+', sentence.group(1)) if word and word != 'and'}
    assert named == set(facilities.INHERITED)


# ---------------------------------------------------------------------------- the client

def documented_signature(relative):
    """{name: default} of the ``LoghogHandler(...)`` signature written in a document."""
    text = read(relative)
    start = text.index('LoghogHandler(app_name')
    end = text.index(')', start)
    arguments = ' '.join(text[start + len('LoghogHandler('):end].split())
    arguments = arguments.replace(', ...', '')
    tree = ast.parse('def f(%s): pass' % arguments)
    args = tree.body[0].args
    result = {}
    positional = args.args[len(args.args) - len(args.defaults):]
    for arg, default in zip(positional, args.defaults):
        result[arg.arg] = ast.literal_eval(default)
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        result[arg.arg] = ast.literal_eval(default)
    return result


HANDLER_DEFAULTS = {name: parameter.default
                    for name, parameter in inspect.signature(LoghogHandler).parameters.items()
                    if parameter.default is not inspect.Parameter.empty}


@pytest.mark.parametrize('relative', ['README.md', 'docs/client.md'])
def test_the_documented_handler_signature_is_the_handlers(relative):
    documented = documented_signature(relative)
    assert documented, relative
    for name, value in documented.items():
        assert HANDLER_DEFAULTS.get(name, '<absent>') == value, (relative, name, value)
    positional = [name for name, parameter in inspect.signature(LoghogHandler).parameters.items()
                  if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    text = read(relative)
    written = text[text.index('LoghogHandler(app_name'):]
    written = written[:written.index(')')]
    # The original's constructor, in its order.
    assert re.findall(r'(\w+)=', written.split('*')[0]) == positional[1:]


def test_client_md_keyword_table_states_the_handlers_defaults():
    rows = markdown_table(read('docs/client.md'), '| option | meaning |')
    rows += markdown_table(read('docs/client.md').split('Keyword-only additions')[1],
                           '| option | meaning |')
    stated = {}
    for cells in rows:
        for item in code_names(cells[0]):
            if '=' in item:
                name, value = item.split('=', 1)
                stated[name] = ast.literal_eval(value)
    keyword_only = {name for name, parameter in inspect.signature(LoghogHandler).parameters.items()
                    if parameter.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(stated) == keyword_only
    for name, value in stated.items():
        assert HANDLER_DEFAULTS[name] == value, (name, value)


# Numbers the client's documents state in words, and the declaration each one is.
CLIENT_NUMBERS = [
    ('README.md', r'When the buffer \((\d+,\d+) records, (\d+) MiB\)',
     (sender.MAX_BUFFER_FRAMES, sender.MAX_BUFFER_BYTES // 2**20)),
    ('README.md', r'while the daemon takes messages \(at most (\d+) s\)', (sender.EMIT_WAIT_S,)),
    ('README.md', r'rejects are said on standard error \(at most every (\d+) s\)'
     .replace('rejects', 'daemon rejects'), (sender.REJECTION_REPORT_INTERVAL_S,)),
    ('README.md', r'\(at most (\d+) s for the whole exit', (sender.EXIT_TIMEOUT_S,)),
    ('README.md', r'a backoff up to a (second)', ('second',)),
    ('README.md', r'`-p PORT` \((\d+), or (\d+) with `--tls`\)',
     (client_cli.DEFAULT_PORT, client_cli.DEFAULT_TLS_PORT)),
    ('README.md', r'`--timeout` \((\d+) s;', (client_cli.ACK_TIMEOUT_S,)),
    ('README.md', r'it tries for (\d+) s more', (client_cli.STOP_TIMEOUT_S,)),
    ('README.md', r'no answer within (\d+) s, and\s+the client says so', (HANDSHAKE_TIMEOUT_S,)),
    ('docs/client.md', r'backoff starts at ([\d.]+) s and doubles up to (\d+) s',
     (sender.RETRY_MIN_S, sender.RETRY_MAX_S)),
    ('docs/client.md', r'if it had\s+lasted a second or more', ()),
    ('docs/client.md', r'\(exit priority (\d+)\)', (sender.MULTIPROCESSING_EXIT_PRIORITY,)),
    ('docs/client.md', r'\(it checks every ([\d.]+) s\)', (sender.MAIN_THREAD_WATCH_S,)),
    ('docs/client.md', r'\| the handshake \| (\d+) s for the daemon', (HANDSHAKE_TIMEOUT_S,)),
    ('docs/client.md', r'waits \(up to `--timeout`, (\d+) s\)', (client_cli.ACK_TIMEOUT_S,)),
    ('docs/client.md', r'the buffer \((\d+,\d+) lines\)', (sender.MAX_BUFFER_FRAMES,)),
    ('docs/client.md', r'tries for (\d+) s more to deliver', (client_cli.STOP_TIMEOUT_S,)),
    ('docs/client.md', r'summed up at most every (\d+) s', (sender.REJECTION_REPORT_INTERVAL_S,)),
    ('docs/recipes.md', r'`close_timeout_s`, (\d+) s\)', (sender.EXIT_TIMEOUT_S,)),
    ('docs/recipes.md', r'at most `emit_wait_s`, (\d+) s\)', (sender.EMIT_WAIT_S,)),
]


@pytest.mark.parametrize('relative, pattern, values', CLIENT_NUMBERS,
                         ids=[pattern[:40] for _, pattern, _ in CLIENT_NUMBERS])
def test_client_numbers_in_the_docs_are_the_declared_ones(relative, pattern, values):
    match = re.search(pattern, read(relative), re.S)
    assert match, '%s no longer says %r: update this test with the sentence' % (relative, pattern)
    for written, declared in zip(match.groups(), values):
        if isinstance(declared, str):
            continue
        assert float(written.replace(',', '')) == declared, (relative, pattern, written, declared)
    if relative == 'docs/client.md' and 'lasted a second' in pattern:
        assert sender.HEALTHY_CONNECTION_S == 1.0
    if 'backoff up to a' in pattern:
        assert sender.RETRY_MAX_S == 1.0


def test_man_loghog_states_the_commands_defaults():
    entries = man_entries('man/loghog.1')
    by_option = {}
    for (_, heading), text in entries.items():
        by_option[heading.split()[0]] = text
    defaults = {action.dest: action.default for action in client_cli.build_parser()._actions}
    assert man_default(by_option['-m']) == defaults['module'] == 'root'
    assert man_default(by_option['-H']) == defaults['host'] == 'localhost'
    port = re.search(r'Default: (\d+), or (\d+) with --tls', by_option['-p'])
    assert (int(port.group(1)), int(port.group(2))) == (client_cli.DEFAULT_PORT,
                                                        client_cli.DEFAULT_TLS_PORT)
    assert float(man_default(by_option['--timeout'])) == defaults['timeout']
    assert 'tries for %d seconds' % client_cli.STOP_TIMEOUT_S in roff_text(
        read('man/loghog.1').splitlines())


# --------------------------------------------------------------------- the packaged files

def packaged_entries(relative):
    """[(section, key, value, commented)] of a packaged configuration file, commented-out
    examples included ('; key = value ; why')."""
    entries, section = [], None
    for line in read(relative).splitlines():
        header = re.match(r'^(;\s*)?\[([\w.:-]+)\]\s*$', line)
        if header:
            section = header.group(2)
            continue
        entry = re.match(r'^(;\s*)?(\w+)\s*=\s*(.*?)\s*(?:\s;.*)?$', line)
        if entry and section:
            entries.append((section, entry.group(2), entry.group(3), bool(entry.group(1))))
    return entries


def test_the_packaged_loghogd_conf_shows_every_key_and_its_commented_defaults_are_the_defaults():
    # README: "The packaged /etc/loghogd/loghogd.conf shows the keys with their defaults,
    # most of them commented out, and sets user = loghog."
    entries = packaged_entries('conf/loghogd.conf')
    shown = {(section, key) for section, key, _, _ in entries}
    declared = {(section, key) for section, settings in DAEMON_SETTINGS.items() for key in settings}
    assert declared - shown == set(), 'keys the packaged loghogd.conf does not show'
    for section, key, value, commented in entries:
        if commented and section != 'syslog':        # [syslog]: examples, all off by default
            if DAEMON_SETTINGS[section][key].default == '' and value:
                assert effective(section, key) == value, (section, key, value)  # <rundir>/...
            else:
                check_daemon_default(section, key, value)
    assert ('main', 'user', 'loghog', False) in entries


def test_the_packaged_facilities_conf_has_a_commented_example_of_every_key():
    # README: "The packaged file holds a commented example of every key."
    entries = packaged_entries('conf/facilities.conf')
    assert all(commented for _, _, _, commented in entries)
    assert set(facilities.SETTINGS) - {key for _, key, _, _ in entries} == set()
    for _, key, value, _ in entries:
        setting = facilities.SETTINGS[key]
        if setting.default:                        # an example of a key with a default shows it
            assert same_default(setting, value), (key, value, setting.default)


def test_every_subcommand_reads_the_documented_default_config():
    # README: "`-c`, `--config FILE` | loghogd.conf (default /etc/loghogd/loghogd.conf)";
    # docs/status.md: "-c is loghogd.conf (default /etc/loghogd/loghogd.conf)"; loghogd(8).
    from loghogd import cli as daemon_cli
    from loghogd import logs, status_command
    readme = read('README.md')
    documented = re.search(r"\| `-c`, `--config FILE` \| `loghogd.conf` \(default `([^`]+)`\)",
                           readme).group(1)
    assert re.search(r'-c` is loghogd.conf \(default `([^`]+)`\)',
                     read('docs/status.md')).group(1) == documented
    assert daemon_cli.DEFAULT_CONFIG == logs.DEFAULT_CONFIG == status_command.DEFAULT_CONFIG \
        == documented

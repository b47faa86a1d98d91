"""README promises about values in the files and lines on disk that no test held.

"loghogd.conf": booleans are yes/no, true/false, on/off or 1/0; sizes take K, M and G,
powers of 1024.  "facilities.conf": names may contain letters, digits, ``_``, ``.`` and
``-``, at most 100 characters, not starting with ``.`` or ``-``; a line cut short by a
crash of the machine is ended with a newline before the next one is written; a TAB stays
a TAB and a backslash is not doubled.  (Control characters in a host name becoming ``?``:
tests/cases/accept-control-characters-in-host.json.)
"""

import pytest

from loghogd import converters
from loghogd.errors import ConfigError
from loghogd.facilities import load_facilities
from loghogd.lines import format_body
from loghogd.stats import Counters
from loghogd.writer import Writer


@pytest.mark.parametrize('text, value', [('yes', True), ('no', False), ('true', True),
                                         ('false', False), ('on', True), ('off', False),
                                         ('1', True), ('0', False)])
def test_every_documented_boolean_spelling(tmp_path, text, value):
    path = tmp_path / 'facilities.conf'
    path.write_text('[app]\nrotate = daily\nbackup_count = 1\nfile_per_host = %s\n' % text)
    assert load_facilities(str(path)).lookup('app', '').file_per_host is value


@pytest.mark.parametrize('text, value', [('512', 512), ('64K', 64 * 1024), ('4M', 4 * 1024 ** 2),
                                         ('1G', 1024 ** 3)])
def test_sizes_are_bytes_or_powers_of_1024(text, value):
    assert converters.size_bytes(text) == value


@pytest.mark.parametrize('name, good', [
    ('a' * 100, True), ('a' * 101, False), ('my_app-2.web', True), ('.app', False),
    ('-app', False), ('_app', True), ('9app', True), ('app/x', False), ('app x', False),
    ('app:x', False)])
def test_application_names_are_letters_digits_and_three_marks_at_most_100(tmp_path, name, good):
    path = tmp_path / 'facilities.conf'
    path.write_text('[%s]\nrotate = daily\nbackup_count = 1\n' % name)
    if good:
        assert load_facilities(str(path)).lookup(name, '') is not None
    else:
        with pytest.raises(ConfigError) as raised:
            load_facilities(str(path))
        assert ('%s:1:' % path) in raised.value.errors[0]


def test_a_line_cut_short_by_a_crash_is_ended_before_the_next_one(tmp_path):
    path = tmp_path / 'facilities.conf'
    path.write_text('[app]\nrotate = daily\nbackup_count = 1\n')
    facility = load_facilities(str(path)).lookup('app', '')
    folder = tmp_path / 'log' / 'app'
    folder.mkdir(parents=True)
    (folder / 'root.log').write_bytes(b'2026-12-05 03:14:15.926535 - web1 - whole\n'
                                      b'2026-12-05 03:14:15.926536 - web1 - cut sh')
    writer = Writer(str(tmp_path / 'log'), Counters())
    writer.add(facility, 'web1', 'the next line\n')
    writer.flush(0.0)
    writer.close(0.0)
    assert (folder / 'root.log').read_bytes().splitlines() == [
        b'2026-12-05 03:14:15.926535 - web1 - whole', b'2026-12-05 03:14:15.926536 - web1 - cut sh',
        b'the next line']


def test_a_tab_stays_and_a_backslash_is_not_doubled():
    assert format_body('a\tb \\x1b c\\') == 'a\tb \\x1b c\\'


def test_the_max_hosts_cap_is_logged_once_per_facility_with_the_default_cap(tmp_path, caplog):
    # README, facilities.conf: with file_per_host, the first max_hosts (default 1000) host
    # names get a file; "the daemon's log says once per facility that the cap was reached".
    import logging
    from loghogd.facilities import DEFAULT_MAX_HOSTS, HostCap
    path = tmp_path / 'facilities.conf'
    path.write_text('[fleet]\nrotate = daily\nbackup_count = 1\nfile_per_host = yes\n'
                    '[fleet:web]\nrotate = daily\nbackup_count = 1\n')
    table = load_facilities(str(path))
    root, web = table.lookup('fleet', ''), table.lookup('fleet', 'web')
    assert root.max_hosts == web.max_hosts == DEFAULT_MAX_HOSTS == 1000
    caplog.set_level(logging.WARNING, logger='loghogd')
    counters = Counters()
    cap = HostCap(counters)
    for facility in (root, web):
        routed = [cap.route(facility, 'host%04d' % n) for n in range(DEFAULT_MAX_HOSTS + 50)]
        assert routed[:DEFAULT_MAX_HOSTS] == ['host%04d' % n for n in range(DEFAULT_MAX_HOSTS)]
        assert routed[DEFAULT_MAX_HOSTS:] == [None] * 50
    said = [record.getMessage() for record in caplog.records]
    assert said == ['[fleet]: max_hosts = 1000 host names have a file; lines of further host '
                    'names go to root.log',
                    '[fleet:web]: max_hosts = 1000 host names have a file; lines of further '
                    'host names go to web.log']
    assert counters.events['hosts_over_max_hosts'] == 100

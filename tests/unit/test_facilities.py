import pytest

from loghogd.errors import ConfigError
from loghogd.facilities import load_facilities, module_path


def load(tmp_path, text):
    path = tmp_path / 'facilities.conf'
    path.write_text(text)
    return load_facilities(str(path))


def errors_of(tmp_path, text):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value.errors


TWO = """
[my-app]
rotate = daily
backup_count = 14
secret = s3cret
max_size = 10M
file_per_host = yes

[my-app:web]
rotate = 0 * * * *
backup_count = 3

[my-app:web.requests]
rotate = hourly
backup_count = 2
secret = other
flush_every = 10
"""


@pytest.mark.parametrize('module, path', [
    ('web.requests', ('web', 'requests')),
    ('root.web.requests', ('web', 'requests')),
    ('root.web.requests.', ('web', 'requests')),
    ('root', ()),
    ('', ()),
])
def test_module_names_that_name_the_same_facility(module, path):
    assert module_path(module) == path


def test_most_specific_facility_wins(tmp_path):
    table = load(tmp_path, TWO)
    assert table.lookup('my-app', 'web.requests.api').name == 'web.requests'
    assert table.lookup('my-app', 'web.static').name == 'web'
    assert table.lookup('my-app', 'cron').name == 'root'
    assert table.lookup('my-app', 'root.web').name == 'web'
    assert table.lookup('webby', 'web') is None


def test_sub_facilities_inherit_from_the_root(tmp_path):
    table = load(tmp_path, TWO)
    web = table.lookup('my-app', 'web')
    assert (web.secret, web.max_size, web.file_per_host, web.flush_every) == ('s3cret', 10 << 20, True, 1)
    requests = table.lookup('my-app', 'web.requests')
    assert (requests.secret, requests.flush_every) == ('other', 10)
    assert web.rotate.expression == '0 * * * *' and web.backup_count == 3


def test_file_names(tmp_path):
    table = load(tmp_path, TWO)
    assert table.lookup('my-app', 'x').file_name('athens') == 'athens-root.log'
    assert table.lookup('my-app', 'web.requests').file_name('sparta') == 'sparta-web.requests.log'


@pytest.mark.parametrize('text, expected', [
    ('[a]\nbackup_count = 1\n', 'required key "rotate" is missing'),
    ('[a]\nrotate = daily\n', 'required key "backup_count" is missing'),
    ('[a]\nrotate = daily\nbackup_count = x\n', "backup_count: 'x' is not a whole number"),
    ('[a]\nrotate = daily\nbackup_count = 1\nrotat = 1\n', 'rotat: unknown key'),
    ('[a]\nrotate = size\nbackup_count = 1\n', 'rotate = size needs max_size'),
    ('[a]\nrotate = @reboot\nbackup_count = 1\n', "'@reboot' is not supported"),
    ('[a]\nrotate = 61 * * * *\nbackup_count = 1\n', 'not a valid cron expression'),
    ('[a]\nrotate = 0 0 *\nbackup_count = 1\n', 'this one has 3 fields'),
    ('[a]\nrotate = 0 0 30 2 *\nbackup_count = 1\n', 'never happens'),
    ('[a]\nrotate = daily\nbackup_count = 1\nfile_per_host = sometimes\n', 'is not a boolean'),
    ('[a:web]\nrotate = daily\nbackup_count = 1\n', 'sub-facility without its application: add a [a] section'),
    ('[../etc]\nrotate = daily\nbackup_count = 1\n', 'cannot be used as a folder or file name'),
    ('[a/b]\nrotate = daily\nbackup_count = 1\n', 'cannot be used as a folder or file name'),
    ('[a]\nrotate = daily\nbackup_count = 1\n[a:we/b]\nrotate = daily\nbackup_count = 1\n',
     'module name'),
    ('[a]\nrotate = daily\nbackup_count = 1\n[a:web]\nrotate = daily\nbackup_count = 1\n'
     '[a:root.web]\nrotate = daily\nbackup_count = 1\n', 'the same facility as [a:web]'),
])
def test_each_mistake_is_one_clear_message(tmp_path, text, expected):
    errors = errors_of(tmp_path, text)
    assert len(errors) == 1, errors
    assert expected in errors[0], errors
    assert errors[0].startswith(str(tmp_path / 'facilities.conf') + ':')


def test_error_names_the_line_of_the_key(tmp_path):
    errors = errors_of(tmp_path, '[a]\nrotate = daily\n\nbackup_count = -2\n')
    assert errors[0].startswith('%s:4: [a] backup_count:' % (tmp_path / 'facilities.conf'))


@pytest.mark.parametrize('rotate', ['hourly', 'daily', 'midnight', 'weekly', 'monthly', 'yearly',
                                    'annually', '55 22 * * *', '*/15 * * * *', '33 12 * * 1-5',
                                    '0 0 * * mon', '0,30 8-18 * * mon-fri'])
def test_rotate_values_accepted(tmp_path, rotate):
    table = load(tmp_path, '[a]\nrotate = %s ; comment\nbackup_count = 1\n' % rotate)
    assert table.lookup('a', 'x').rotate.expression


def test_lookup_cache_is_bounded(tmp_path):
    table = load(tmp_path, '[a]\nrotate = daily\nbackup_count = 1\n')
    for i in range(10000):
        assert table.lookup('a', 'm%d' % i).name == 'root'
    assert len(table._cache) <= 4096


class CountingDict(dict):
    """A facility map that counts the paths tried."""

    tried = 0

    def get(self, key, default=None):
        CountingDict.tried += 1
        return dict.get(self, key, default)


def test_lookup_tries_no_prefix_deeper_than_the_apps_deepest_facility(tmp_path):
    table = load(tmp_path, TWO)
    assert table.depth == {'my-app': 2}
    table.by_app['my-app'] = CountingDict(table.by_app['my-app'])
    deep = 'root.' + '.'.join(['web', 'requests'] + ['x'] * 500)
    CountingDict.tried = 0
    assert table.lookup('my-app', deep).name == 'web.requests'
    assert CountingDict.tried == 1                  # ('web', 'requests') at once
    CountingDict.tried = 0
    assert table.lookup('my-app', '.'.join(['y'] * 500)).name == 'root'
    assert CountingDict.tried == 3                  # (y, y), (y,), ()
    CountingDict.tried = 0
    assert table.lookup('my-app', deep).name == 'web.requests'
    assert CountingDict.tried == 0                  # cached per (app, module)
    assert table.lookup('my-app', 'web.x.requests').name == 'web'
    assert table.lookup('my-app', '.web..requests.').name == 'web.requests'

"""give_to_user walks by file descriptor: a folder swapped for a symbolic link during the
walk never makes root chown a file outside the daemon's folders (issue 15)."""

import os

import pytest

from loghogd import daemon

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason='chown to another user needs root')


@pytest.fixture
def tree(tmp_path):
    logdir = tmp_path / 'log'
    (logdir / 'app').mkdir(parents=True)
    (logdir / 'app' / 'root.log').write_text('a line\n')
    (logdir / 'loghogd.log').write_text('')
    outside = tmp_path / 'etc'
    outside.mkdir()
    (outside / 'root.log').write_text('root\'s file\n')
    (outside / 'shadow').write_text('root\'s file\n')
    for path in (outside, outside / 'root.log', outside / 'shadow'):
        os.chown(path, 0, 0)
    return logdir, outside


def owner(path):
    info = os.lstat(path)
    return info.st_uid, info.st_gid


def test_the_daemons_folders_and_files_are_given_to_the_user(tree):
    logdir, _ = tree
    daemon.give_to_user([str(logdir), str(logdir / 'loghogd.log')], NOBODY, NOBODY)
    for path in (logdir, logdir / 'app', logdir / 'app' / 'root.log', logdir / 'loghogd.log'):
        assert owner(path) == (NOBODY, NOBODY), path


def test_a_symbolic_link_planted_in_the_log_folder_is_not_followed(tree):
    logdir, outside = tree
    os.symlink(outside / 'shadow', logdir / 'app' / 'planted.log')
    os.symlink(outside, logdir / 'planted-folder')
    daemon.give_to_user([str(logdir)], NOBODY, NOBODY)
    assert owner(outside / 'shadow') == (0, 0)
    assert owner(outside) == (0, 0) and owner(outside / 'root.log') == (0, 0)
    assert owner(logdir / 'app' / 'root.log') == (NOBODY, NOBODY)


def test_a_folder_swapped_for_a_link_during_the_walk_never_gives_away_roots_file(tree,
                                                                              monkeypatch):
    """The race of a compromised daemon account: after the walk has listed ``app``, it
    renames ``app`` away and puts a symbolic link to root's folder in its place."""
    logdir, outside = tree
    real_stat, real_lstat = os.stat, os.lstat
    swapped = []

    def swap_once(name):
        if not swapped and os.fspath(name).endswith('root.log') and (logdir / 'app').is_dir():
            swapped.append(True)
            os.rename(logdir / 'app', logdir / 'app.old')
            os.symlink(outside, logdir / 'app')

    def stat(name, *args, **kwargs):
        swap_once(name)
        return real_stat(name, *args, **kwargs)

    def lstat(name, *args, **kwargs):
        swap_once(name)
        return real_lstat(name, *args, **kwargs)

    monkeypatch.setattr(os, 'stat', stat)
    monkeypatch.setattr(os, 'lstat', lstat)
    daemon.give_to_user([str(logdir)], NOBODY, NOBODY)
    monkeypatch.undo()
    assert swapped, 'the walk never looked at app/root.log'
    assert owner(outside / 'root.log') == (0, 0)
    assert owner(outside) == (0, 0)

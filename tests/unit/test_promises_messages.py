"""Messages the docs quote are the ones the daemon writes, with the default compressor.

docs/rotation.md, "Watching it": the daemon's log says ``rotated <file> to <backup>
(schedule daily)``, ``compressed <backup>.xz (N -> M bytes, T s)`` and ``deleted <backup>
(backup_count = 14)``; "When the clock is set back": ``the clock went back by N s``.
"""

import logging
import re

from loghogd import config as daemon_config
from tests.unit.rotation_harness import harness, local  # noqa: F401 (harness: a fixture)

DEFAULT_COMPRESSOR = daemon_config.load_config(None).compressor


def messages(caplog):
    return [record.getMessage() for record in caplog.records]


def test_rotation_compression_and_pruning_are_logged_as_the_docs_quote_them(harness, caplog):
    caplog.set_level(logging.INFO, logger='loghogd')
    h = harness('[app]\nrotate = daily\nbackup_count = 1\n',
                fmt=DEFAULT_COMPRESSOR.format, level=DEFAULT_COMPRESSOR.level)
    h.write(local(2024, 5, 14, 10), 'monday')
    h.run_tasks(local(2024, 5, 15, 0, 0, 1))
    h.settle(local(2024, 5, 15, 0, 0, 1))
    h.write(local(2024, 5, 15, 10), 'tuesday')
    h.run_tasks(local(2024, 5, 16, 0, 0, 1))
    h.settle(local(2024, 5, 16, 0, 0, 1))
    said = messages(caplog)
    live = str(h.logdir / 'app' / 'root.log')
    first = 'root.log.2024-05-14-00-00-00-000000'
    assert 'rotated %s to %s (schedule daily)' % (live, first) in said
    compressed = [m for m in said if m.startswith('compressed %s.xz (' % (live[:-len('root.log')] + first))]
    assert len(compressed) == 1, said
    sizes = re.fullmatch(r'compressed \S+ \((\d+) -> (\d+) bytes, [\d.]+s\)', compressed[0])
    assert sizes and int(sizes.group(1)) > 0 and int(sizes.group(2)) > 0, compressed
    assert 'deleted %s.xz (backup_count = 1)' % (h.logdir / 'app' / first) in said
    assert h.backups() == ['root.log.2024-05-15-00-00-00-000000.xz']


def test_a_clock_set_back_is_logged_as_the_docs_quote_it(harness, caplog):
    caplog.set_level(logging.INFO, logger='loghogd')
    h = harness('[app]\nrotate = * * * * *\nbackup_count = 1\n')
    h.write(local(2024, 5, 14, 10), 'line')
    h.rotator.tick(local(2024, 5, 14, 9))    # an hour back: the loop ticks every task then
    assert any(re.fullmatch(r'the clock went back by 3600 s: .*', m) for m in messages(caplog)), \
        messages(caplog)

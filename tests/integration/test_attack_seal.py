"""Attacks on sealed files (issue 19) that need a real loghogd: what the daemon does with
seal files an intruder (or a crash) left it at start."""

from loghogd import seal_keys, sealing
from tests.integration.test_sealing import make_daemon, send_lines, wait_sealed
from tests.support import read_lines, wait_for


def test_a_seal_from_the_far_future_in_a_seal_file_does_not_hang_the_start(tmp_path):
    """A4-20: one forged seal record at the end of a seal file, claiming epoch 10**12 (made
    with any key: the daemon does not check seals), with a time that fits that epoch.  At
    start the daemon took the file as sealed through it and moved its key on that far:
    10**12 SHA-256 rounds, so it never started listening (killed by the test after 15 s;
    every restart the same).  A seal of an epoch that has not ended is not taken now."""
    base = tmp_path / 'd'
    daemon = make_daemon(base, '[app]\nrotate = daily\nbackup_count = 3\nsealed = yes\n')
    daemon.start()
    folder = daemon.logdir / 'app'
    try:
        send_lines(daemon.tcp_port, 0, 3)
        last = wait_sealed(folder)
        assert daemon.stop() == 0
        key = seal_keys.load(str(base / 'lib' / 'seal.key'))
        epoch = 10 ** 12
        made = int(key.epoch_end(epoch) * 1e6) + 1
        with open(folder / 'root.log.seal', 'ab') as stream:
            stream.write(sealing.make_seal(bytes(32), 'app/root.log', last.last_epoch + 1, epoch,
                                           last.lines, last.size, made, last.chain_hash))
        daemon.start()
        send_lines(daemon.tcp_port, 3, 2)
        wait_for(lambda: len(read_lines(folder / 'root.log')) == 5, 10, message='the lines')
        wait_sealed(folder)
        assert daemon.stop() == 0
    finally:
        daemon.kill()

#!/usr/bin/env python3
"""How fast `loghogd verify` checks a sealed history, and that its memory stays flat
(issue 19).

Writes a sealed history of --size-mb megabytes (a live file and --backups backups, the
backups gzip-compressed if --compress) the way the daemon writes it: 64 KiB write batches
chained (sealing.Chain), a seal after every --per-epoch-mb megabytes, one epoch after
another.  Then runs `python -m loghogd verify` on the folder as a child process and
reports wall time, MB/s of log bytes (uncompressed) and the child's peak RSS.

    .venv/bin/python benchmarks/bench_verify.py --size-mb 1024
    .venv/bin/python benchmarks/bench_verify.py --size-mb 100 --backups 3 --compress
"""

import argparse
import gzip
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loghogd import sealing  # noqa: E402

LINE = b'2026-12-05 06:00:00.123456 web1 INFO shop.payments: order 00000000 paid by card, ' \
       b'amount 12.34 EUR, session 9f8e7d6c5b4a\n'
BATCH_BYTES = 64 * 1024
INTERVAL = 60


def write_history(folder, size_mb, backups, compress, per_epoch_mb):
    """Write the history; return (verification key text, uncompressed bytes)."""
    k0 = sealing.new_key()
    files = backups + 1
    per_file = size_mb * 1024 * 1024 // files
    epochs_needed = size_mb // per_epoch_mb + 2 * files + 2
    t0 = int(time.time()) - (epochs_needed + 2) * INTERVAL
    key, epoch = k0, 0
    batch = LINE * (BATCH_BYTES // len(LINE))
    prev = sealing.GENESIS
    total = 0
    for index in range(files):
        name = 'root.log' if index == files - 1 else 'root.log.2026-12-%02d-00-00-00-000000' % (
            index + 1)
        path = os.path.join(folder, name)
        chain = sealing.Chain(prev)
        since_seal = 0
        with open(path, 'wb') as log_file, open(path + sealing.SUFFIX, 'wb') as sidecar:
            sidecar.write(sealing.encode_start(prev, t0 * 1_000_000, 'root.log'))
            written = 0
            while written < per_file:
                log_file.write(batch)
                chain.add(batch)
                written += len(batch)
                since_seal += len(batch)
                if since_seal >= per_epoch_mb * 1024 * 1024 or written >= per_file:
                    chain.close_chunk()
                    time_us = int((sealing.epoch_end(epoch, t0, INTERVAL) + 1) * 1e6)
                    seal = sealing.make_seal(key, 'root.log', epoch, epoch, chain.lines,
                                             chain.size, time_us, chain.last)
                    sidecar.write(b''.join(chain.take_records()) + seal)
                    key, epoch = sealing.evolve(key), epoch + 1
                    since_seal = 0
            total += written
        prev = chain.last
        if compress and index < files - 1:
            with open(path, 'rb') as source, gzip.open(path + '.gz', 'wb', compresslevel=1) as out:
                shutil.copyfileobj(source, out, 1 << 20)
            os.unlink(path)
    return sealing.format_verification_key(k0, t0, INTERVAL), total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size-mb', type=int, default=1024)
    parser.add_argument('--backups', type=int, default=0)
    parser.add_argument('--compress', action='store_true', help='gzip the backups (level 1)')
    parser.add_argument('--per-epoch-mb', type=int, default=8,
                        help='log megabytes between two seals')
    parser.add_argument('--tmpdir', default=None)
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix='bench-verify-', dir=args.tmpdir)
    try:
        folder = os.path.join(root, 'app')
        os.mkdir(folder)
        began = time.perf_counter()
        text, total = write_history(folder, args.size_mb, args.backups, args.compress,
                                    args.per_epoch_mb)
        print('wrote %.0f MB in %d files in %.1fs' % (total / 1e6, args.backups + 1,
                                                      time.perf_counter() - began))
        key_file = os.path.join(root, 'verification.key')
        with open(key_file, 'w') as stream:
            stream.write(text + '\n')
        sidecars = sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)
                       if n.endswith(sealing.SUFFIX))
        began = time.perf_counter()
        result = subprocess.run([sys.executable, '-m', 'loghogd', 'verify', '--key', key_file,
                                 folder], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        elapsed = time.perf_counter() - began
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(result.stdout.strip())
        print('verify: exit %d, %.1fs, %.0f MB/s of log, peak RSS %.1f MiB; sidecars %.2f MB '
              '(%.3f%% of the log); load average %s'
              % (result.returncode, elapsed, total / 1e6 / elapsed, peak_kib / 1024,
                 sidecars / 1e6, 100.0 * sidecars / total,
                 ' '.join('%.2f' % x for x in os.getloadavg())))
        return 0 if result.returncode == 0 else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())

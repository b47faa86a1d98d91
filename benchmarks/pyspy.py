"""Profile a running loghogd with py-spy (``pip install py-spy``) and summarise by function.

``run.py --profile DIR`` attaches ``py-spy record --format raw`` to each loghogd it
starts and prints, per workload, where the samples fell: self time (the function on
top of the stack) and inclusive time, by function.  Sampling slows the daemon a little:
read the profile for where the time goes, and the table of an unprofiled run for how much.

    python benchmarks/pyspy.py DIR/tcp8-1.txt      # summarise a saved profile
"""

import collections
import os
import re
import shutil
import subprocess
import sys

RATE_HZ = 500
# Frames that mean "waiting", not working.
IDLE = ('select (selectors.py', 'poll (selectors.py')
_LINE = re.compile(r' \(([^:()]+):\d+\)$')


def find_pyspy():
    """The py-spy executable: beside this Python (a venv) or on PATH; None if absent."""
    beside = os.path.join(os.path.dirname(sys.executable), 'py-spy')
    return beside if os.access(beside, os.X_OK) else shutil.which('py-spy')


def start(pid, output):
    """Start sampling ``pid`` into ``output`` (collapsed stacks); returns the Popen.

    py-spy stops by itself when the process exits.
    """
    return subprocess.Popen(
        [find_pyspy(), 'record', '--pid', str(pid), '--rate', str(RATE_HZ), '--format', 'raw',
         '--nonblocking', '--output', output],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _function(frame):
    """'Server.ingest (loghogd/server.py:254)' -> 'Server.ingest (loghogd/server.py)'."""
    return _LINE.sub(lambda m: ' (%s)' % m.group(1), frame.strip())


def summarise(path, top=15):
    """Return a text summary of a raw py-spy profile: busy share of self and inclusive time."""
    own, inclusive = collections.Counter(), collections.Counter()
    total = idle = 0  # idle stays 0 unless py-spy ran with --idle
    with open(path) as handle:
        for line in handle:
            stack, _, count = line.rstrip('\n').rpartition(' ')
            if not stack or not count.isdigit():
                continue
            frames = [_function(f) for f in stack.split(';') if f.strip()]
            count = int(count)
            total += count
            if frames and frames[-1].startswith(IDLE):
                idle += count
                continue
            if frames:
                own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    busy = total - idle
    if not busy:
        return '%s: no busy samples' % path
    lines = ['%s: %d busy samples at %d Hz (py-spy leaves out idle waits); shares:'
             % (path, busy, RATE_HZ), '  self:']
    lines += ['    %5.1f%%  %s' % (100 * n / busy, f) for f, n in own.most_common(top)]
    lines.append('  inclusive (loghogd only):')
    lines += ['    %5.1f%%  %s' % (100 * n / busy, f) for f, n in inclusive.most_common()
              if 'loghogd/' in f][:top]
    return '\n'.join(lines)


if __name__ == '__main__':
    for name in sys.argv[1:]:
        print(summarise(name))

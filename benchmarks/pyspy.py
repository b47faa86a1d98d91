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
         '--subprocesses',
         '--nonblocking', '--output', output],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _function(frame):
    """'Server.ingest (loghogd/server.py:254)' -> 'Server.ingest (loghogd/server.py)'."""
    return _LINE.sub(lambda m: ' (%s)' % m.group(1), frame.strip())


def summarise(path, top=15):
    """Return a text summary of a raw py-spy profile: busy share of self and inclusive time,
    per process (py-spy follows the receivers with --subprocesses, issue 18)."""
    processes = collections.defaultdict(lambda: (collections.Counter(), collections.Counter(),
                                                 [0, 0]))
    roles = {}
    with open(path) as handle:
        for line in handle:
            stack, _, count = line.rstrip('\n').rpartition(' ')
            if not stack or not count.isdigit():
                continue
            parts = [f for f in stack.split(';') if f.strip()]
            names = [f for f in parts if f.startswith('process ')]
            process = names[-1].split(':', 1)[0] if names else 'process'
            frames = [_function(f) for f in parts if not f.startswith('process ')]
            if not frames:
                continue   # a thread with no Python frame (waiting in C): not our work
            if process not in roles or roles[process] == 'main':
                roles[process] = ('receiver' if any('ReceiverPool.spawn' in f for f in frames)
                                  else 'main')
            own, inclusive, totals = processes[process]
            count = int(count)
            totals[0] += count
            if frames and frames[-1].startswith(IDLE):
                totals[1] += count
                continue
            if frames:
                own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    lines = []
    everything = sum(t[0] - t[1] for _, _, t in processes.values())
    for process, (own, inclusive, (total, idle)) in sorted(processes.items()):
        busy = total - idle
        if not busy:
            continue
        lines += ['%s: %s (%s): %d busy samples at %d Hz, %.0f%% of all busy samples '
                  '(py-spy leaves out idle waits); shares:'
                  % (path, process, roles[process], busy, RATE_HZ, 100 * busy / everything),
                  '  self:']
        lines += ['    %5.1f%%  %s' % (100 * n / busy, f) for f, n in own.most_common(top)]
        lines.append('  inclusive (loghogd only):')
        lines += ['    %5.1f%%  %s' % (100 * n / busy, f) for f, n in inclusive.most_common()
                  if 'loghogd/' in f][:top]
    return '\n'.join(lines) or '%s: no busy samples' % path


if __name__ == '__main__':
    for name in sys.argv[1:]:
        print(summarise(name))

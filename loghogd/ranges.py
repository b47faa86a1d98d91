"""Sets of message numbers kept as sorted, disjoint, inclusive ranges ``starts[i]..ends[i]``:
the numbers of a session queued for writing (acks.py) and those of a signed session seen
(signature_v2.py).  Pure functions over the two lists, which their owners keep in slots.
"""

import bisect


def contains(starts, ends, seq):
    """True if ``seq`` is in one of the ranges."""
    i = bisect.bisect_right(starts, seq) - 1
    return i >= 0 and seq <= ends[i]


def add(starts, ends, seq, max_ranges):
    """Put ``seq`` in the ranges (joining its neighbours).  Beyond ``max_ranges`` ranges the
    lowest is dropped: returns its end (None when nothing was dropped), for the caller to
    decide what the numbers below it mean."""
    i = bisect.bisect_right(starts, seq) - 1
    if i >= 0 and seq <= ends[i]:
        return None
    if i >= 0 and ends[i] == seq - 1:
        ends[i] = seq
        if i + 1 < len(starts) and starts[i + 1] == seq + 1:
            ends[i] = ends[i + 1]
            del starts[i + 1], ends[i + 1]
    elif i + 1 < len(starts) and starts[i + 1] == seq + 1:
        starts[i + 1] = seq
    else:
        starts.insert(i + 1, seq)
        ends.insert(i + 1, seq)
        if len(starts) > max_ranges:
            dropped = ends[0]
            del starts[0], ends[0]
            return dropped
    return None

"""ranges.py: message numbers as sorted, disjoint ranges, checked against a plain set."""

from hypothesis import given, strategies as st

from loghogd import ranges


@given(st.lists(st.integers(0, 200), max_size=300), st.integers(1, 8))
def test_ranges_hold_exactly_the_numbers_added_but_the_dropped_lowest(numbers, max_ranges):
    starts, ends = [], []
    model = set()
    for seq in numbers:
        dropped = ranges.add(starts, ends, seq, max_ranges)
        model.add(seq)
        if dropped is not None:   # the lowest range: every number up to its end
            model = {n for n in model if n > dropped}
        assert len(starts) == len(ends) <= max_ranges
        assert all(s <= e for s, e in zip(starts, ends))
        assert all(ends[i] + 1 < starts[i + 1] for i in range(len(starts) - 1))  # apart
        assert sorted(model) == [n for s, e in zip(starts, ends) for n in range(s, e + 1)]
    for seq in range(-1, 202):
        assert ranges.contains(starts, ends, seq) == (seq in model)

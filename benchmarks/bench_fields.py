#!/usr/bin/env python3
"""What the record's structure costs (issue 17), per record, best of five repeats.

- client: ``loghog.handler.record_fields`` (the ``fields`` JSON that ``emit()`` adds) for a
  plain record and for one with two ``extra=`` keys; and ``json.dumps`` of the same dict;
- daemon: a JSON line (``jsonlines.format_json_line``) against a text line (``head +
  lines.format_body``) for the same message.

    .venv/bin/python benchmarks/bench_fields.py
"""

import json
import logging
import os
import sys
import time
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loghog.handler import record_fields  # noqa: E402
from loghogd.jsonlines import format_json_line  # noqa: E402
from loghogd.lines import format_body  # noqa: E402

NUMBER = 100000


def per_call_us(function):
    return min(timeit.repeat(function, number=NUMBER, repeat=5)) / NUMBER * 1e6


def record(**extra):
    made = logging.getLogger('shop.web').makeRecord(
        'shop.web', logging.INFO, '/srv/shop/app.py', 42, 'request %s took %d ms',
        ('/api/items', 7), None, 'handle', extra or None)
    logging.Formatter('%(levelname)s - %(message)s').format(made)
    return made


def main():
    plain = record()
    extras = record(request_id='r-42', user_id=7)
    as_dict = json.loads(record_fields(extras))
    fields = json.loads(record_fields(extras))
    head = '2026-12-05 03:14:15.926535 - web1 - '
    now = time.time()
    cache = {}
    rows = [
        ('client: record_fields, plain record', per_call_us(lambda: record_fields(plain))),
        ('client: record_fields, plain, as emit() (cache)', per_call_us(
            lambda: record_fields(plain, cache))),
        ('client: record_fields, 2 extra= keys (cache)', per_call_us(
            lambda: record_fields(extras, cache))),
        ('client: json.dumps of the same dict', per_call_us(lambda: json.dumps(as_dict))),
        ('daemon: text line', per_call_us(
            lambda: head + format_body('INFO - request /api/items took 7 ms') + '\n')),
        ('daemon: JSON line with those fields', per_call_us(
            lambda: format_json_line(now, 'web1', 'shop', 'shop.web',
                                     'INFO - request /api/items took 7 ms', fields))),
        ('daemon: JSON line without fields', per_call_us(
            lambda: format_json_line(now, 'web1', 'shop', 'shop.web',
                                     'INFO - request /api/items took 7 ms'))),
    ]
    print('per record, best of 5 x %d, Python %s' % (NUMBER, sys.version.split()[0]))
    for name, value in rows:
        print('%-50s %6.2f µs' % (name, value))


if __name__ == '__main__':
    main()

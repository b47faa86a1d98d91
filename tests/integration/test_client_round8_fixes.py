"""The client's fixes of attack round 8's findings A8-3 and A8-6: the attacker's tests of them
(strict xfails in test_attack_round8.py until fixed; each failed on the code before), and
tests of what the fixes promise besides (a daemon thread logging through the exit, a
handler opened again closed at exit).

- A8-3: a record logged to a handler after its ``close()`` (``dictConfig`` run again while a
  thread logs; an ``atexit`` hook that runs after ``logging.shutdown``) is delivered, as
  ``logging.FileHandler`` writes it.
- A8-6: while the buffer drops, the gap bookkeeping stays within bounds whatever the number
  of logger names.

Real loghogd processes on loopback (ports chosen at run time) and real Python programs, with
the DEFAULT daemon and the DEFAULT ``LoghogHandler('app', '127.0.0.1', port)``.
"""

import collections
import time

from tests.integration.test_attack_round8 import bodies, lines_within, run_file
from tests.support import free_port, read_lines


# -- A8-3: dictConfig run again while a thread logs -----------------------------------------

DICTCONFIG_SCRIPT = """\
    import logging, logging.config, sys, threading, time

    LOGGING = {'version': 1, 'disable_existing_loggers': False,
               'handlers': {'hog': {'class': 'loghog.LoghogHandler', 'app_name': 'app',
                                    'host': '127.0.0.1', 'port': int(sys.argv[1])}},
               'loggers': {'shop': {'handlers': ['hog'], 'level': 'INFO',
                                    'propagate': False}}}
    logging.config.dictConfig(LOGGING)
    log = logging.getLogger('shop')
    stop = threading.Event()
    count = 0

    def requests():                  # a web server's thread, logging all along
        global count
        while not stop.is_set():
            log.info('msg %d', count)
            count += 1
            time.sleep(0.0002)

    thread = threading.Thread(target=requests)
    thread.start()
    for _ in range(3):               # settings reloaded, a framework configuring again...
        time.sleep(0.2)
        logging.config.dictConfig(LOGGING)
    time.sleep(0.2)
    stop.set()
    thread.join()
    print(count)
    """


def test_dictconfig_run_again_while_a_thread_logs_loses_nothing(daemon, tmp_path):
    result = run_file(tmp_path, DICTCONFIG_SCRIPT, daemon.tcp_port)
    assert result.returncode == 0, result.stderr
    count = int(result.stdout)
    found = collections.Counter(bodies(daemon.log_file('app')))
    missing = [n for n in range(count) if found[f'msg {n}'] != 1]
    # Each record once; the loss is at least said (that part holds today).
    assert missing == [], (len(missing), result.stderr)


LATE_ATEXIT_SCRIPT = """\
    import atexit


    def goodbye():                    # registered before logging is imported: atexit runs it
        import logging                # after logging.shutdown closed every handler
        logging.getLogger('late').info('goodbye from atexit')


    atexit.register(goodbye)
    import logging, sys
    from loghog import LoghogHandler
    logging.basicConfig(level=logging.INFO, format='%(message)s', handlers=[
        LoghogHandler('app', '127.0.0.1', int(sys.argv[1])), logging.FileHandler(sys.argv[2])])
    logging.info('hello')
    """


def test_a_record_logged_by_a_late_atexit_hook_is_delivered_as_a_file_handler_writes_it(
        daemon, tmp_path):
    result = run_file(tmp_path, LATE_ATEXIT_SCRIPT, daemon.tcp_port, tmp_path / 'file.log')
    assert result.returncode == 0, result.stderr
    assert read_lines(tmp_path / 'file.log') == ['hello', 'goodbye from atexit']
    found = lines_within(daemon.log_file('app'), ['hello', 'goodbye from atexit'], 2.0)
    assert found == ['hello', 'goodbye from atexit'], result.stderr


EXIT_SPIN_SCRIPT = """\
    import atexit, time


    def goodbye():                    # runs after logging.shutdown (see LATE_ATEXIT_SCRIPT)
        import logging
        logging.getLogger('late').info('goodbye from atexit')


    atexit.register(goodbye)
    import logging, sys, threading
    from loghog import LoghogHandler
    logging.basicConfig(level=logging.INFO, format='%(message)s',
                        handlers=[LoghogHandler('app', '127.0.0.1', int(sys.argv[1]))])


    def spin():                       # a daemon thread logging flat out, through the exit
        n = 0
        while True:
            logging.info('msg %d', n)
            n += 1


    threading.Thread(target=spin, daemon=True).start()
    time.sleep(0.3)
    """


def test_a_daemon_thread_logging_through_the_exit_neither_slows_it_nor_leaves_a_hole(
        daemon, tmp_path):
    """Records logged after logging.shutdown closed the handler are delivered one by one
    (one connection, the thread's emit() waiting for each): the exit does not wait for the
    thread, the file holds msg 0, 1, 2, ... each once with no hole (only the record being
    logged when the interpreter stopped the thread may be missing, at the end), and the
    late atexit hook's record is there too."""
    started = time.monotonic()
    result = run_file(tmp_path, EXIT_SPIN_SCRIPT, daemon.tcp_port)
    took_s = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert took_s < 8, took_s        # well within the exit's bound (10 s)
    found = lines_within(daemon.log_file('app'), ['goodbye from atexit'], 2.0)
    numbers = [int(body.split()[1]) for body in found if body.startswith('msg ')]
    assert numbers == list(range(len(numbers))) and len(numbers) > 100, found[-3:]
    assert found.count('goodbye from atexit') == 1
    assert result.stderr == ''


KEPT_OPEN_SCRIPT = """\
    import atexit, threading


    def last():                       # runs after logging.shutdown and loghog's exit hooks
        print(sorted(t.name for t in threading.enumerate() if t.name == 'loghog-sender'))


    atexit.register(last)
    import logging, logging.config, sys
    LOGGING = {'version': 1,
               'handlers': {'hog': {'class': 'loghog.LoghogHandler', 'app_name': 'app',
                                    'host': '127.0.0.1', 'port': int(sys.argv[1])}},
               'loggers': {'app': {'handlers': ['hog'], 'level': 'INFO'}}}
    logging.config.dictConfig(LOGGING)
    old = logging.getLogger('app').handlers[0]
    logging.config.dictConfig(LOGGING)   # closes the old handler; logging forgets it
    for n in range(5):                # a thread still in it, looping: it stays open ...
        old.handle(logging.makeLogRecord({'name': 'app', 'msg': f'after {n}'}))
    print(sorted(t.name for t in threading.enumerate() if t.name == 'loghog-sender'))
    """


def test_a_handler_opened_again_by_records_after_close_is_closed_again_at_exit(
        daemon, tmp_path):
    """... and loghog's exit hook closes it (logging.shutdown does not know it any more:
    dictConfig took it out of logging's list of handlers)."""
    result = run_file(tmp_path, KEPT_OPEN_SCRIPT, daemon.tcp_port)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split('\n')[:2] == ["['loghog-sender']", '[]'], result.stdout
    assert bodies(daemon.log_file('app')) == [f'after {n}' for n in range(5)]
    assert result.stderr == ''


# -- A8-6: gap bookkeeping, one entry per dropped module, outside the buffer's bounds -------

GAP_MEMORY_SCRIPT = """\
    import logging, resource, sys
    from loghog import LoghogHandler

    handler = LoghogHandler('app', '127.0.0.1', int(sys.argv[1]))   # nothing listens there
    distinct = sys.argv[2] == 'distinct'

    def log(count, first=0):
        for n in range(first, first + count):
            name = f'job.{n}' if distinct else 'job'
            handler.handle(logging.makeLogRecord({'name': name, 'msg': 'x %d' % n}))

    log(20_000)                         # the buffer is full, the oldest are being dropped
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    log(100_000, 20_000)                # dropping: the buffer holds its 10,000
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) // 1024, handler.dropped)
    """


def test_memory_stays_flat_while_dropping_records_of_many_logger_names(tmp_path):
    result = run_file(tmp_path, GAP_MEMORY_SCRIPT, free_port(), 'distinct')
    grown_mib, dropped = map(int, result.stdout.split())
    assert dropped >= 100_000
    assert grown_mib < 8, f'{grown_mib} MiB more for 100,000 dropped records'


def test_memory_stays_flat_while_dropping_records_of_one_logger_name(tmp_path):
    """The guard beside A8-6: with one logger name the drop costs no memory."""
    result = run_file(tmp_path, GAP_MEMORY_SCRIPT, free_port(), 'same')
    grown_mib, dropped = map(int, result.stdout.split())
    assert dropped >= 100_000
    assert grown_mib < 8, f'{grown_mib} MiB more for 100,000 dropped records'

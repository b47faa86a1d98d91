"""SIGHUP's reload of facilities.conf: parsed on a thread, applied on the loop.

Parsing is pure (a file in, a FacilityTable or every error out) and takes seconds for
20,000 facilities (issue 15: 1.45 s idle, about 3 s loaded, during which no line of any
application was written).  So a SIGHUP starts a thread that reads and parses the file;
the thread hands its result to the loop with ``wake`` (the loop's coalesced thread
wake-up) and the loop, in its next pass, swaps the table in and applies what changed:
the writer points its files at the new facilities, the rotator takes the new settings
and does what they ask (rotate, prune) in its own 5 ms slices.

Order: a SIGHUP while a parse runs asks for one more reload after it (however many came),
so the last reload always starts, and reads the file, after the last SIGHUP.  A file byte
for byte as the last one loaded is not parsed again (a SIGHUP storm costs nothing then).
A bad file (errors of the parse, an application whose folder is or holds the daemon's
own log, a [syslog] default_app that is gone) logs every error and keeps the running
table.  Either way, the files are reopened and the reload hooks run once the parse is
done, as before this module (an outside tool may have moved the files).
"""

import gc
import logging
import threading

from .errors import ConfigError
from .facilities import load_facilities, own_log_clashes
from .syslog_settings import check_default_app
from .writer import OPEN_BUDGET_S

log = logging.getLogger('loghogd.server')


def parse(config, last_content):
    """Read and check ``config.main.facilities_config``: the thread's work.

    Returns (content, table, errors): ``table`` is None when the file holds exactly
    ``last_content`` (nothing to change) or has errors (``errors``, sentences naming
    file and line).  Never raises for a bad or missing file.
    """
    path = config.main.facilities_config
    try:
        with open(path, 'rb') as stream:
            content = stream.read()
    except OSError as exc:
        return None, None, ['%s: cannot read: %s' % (path, exc.strerror or exc)]
    if content == last_content:
        return content, None, []
    return parse_content(config, content)


def parse_content(config, content):
    """(content, table, errors) for the bytes ``content`` of facilities.conf (None: the
    file could not be read; load_facilities says why).  The table is exactly what
    ``content`` says: receivers parse the very bytes the main process loaded (attack
    finding A4-w14: each process read the file at its own time)."""
    path = config.main.facilities_config
    try:
        table = load_facilities(path, content)
    except ConfigError as exc:
        return content, None, list(exc.errors)
    errors = own_log_clashes(table, config.main.logdir, config.log.filename)
    errors += check_default_app(config, table)
    return content, (None if errors else table), errors


class Reloader:
    """Runs reloads for ``server`` (its ``config``, ``table``, ``writer``, ``counters``,
    ``reload_hooks``, ``clock``).

    ``request()`` on SIGHUP.  A task of the server's loop: ``next_deadline()`` is 0 when
    a parse has finished, and ``tick(now)`` then applies it (and starts the next one if
    a SIGHUP came meanwhile).  The thread wakes the server's loop when it is done.
    ``parse`` is the thread's work (``parse`` above; tests give a slow or failing one).
    """

    def __init__(self, server, parse=parse):
        self.server = server
        self.parse = parse
        self.last_content = None    # the bytes of the file last loaded
        self._thread = None
        self._result = None         # set by the thread, taken by tick()
        self._again = False         # a SIGHUP came while the thread ran

    @property
    def running(self):
        """A reload was asked for and is not applied yet."""
        return self._thread is not None

    def request(self):
        """SIGHUP: start a parse now, or one more after the running one."""
        if self._thread is not None:
            self._again = True
            return
        self._thread = threading.Thread(target=self._run, args=(self.last_content,),
                                        name='loghogd-reload', daemon=True)
        self._thread.start()

    def _run(self, last_content):
        # Python's cyclic garbage collector holds every thread while it runs, and a parse
        # of 20,000 facilities made it run a full collection after every quarter of
        # growth: stalls of 0.2-0.6 s for the loop (issue 15).  So no collection during
        # the parse, and what the parse made (the new table; its garbage is freed by
        # reference counting, inifile.py) is moved out of the collector's generations
        # with gc.freeze(), so that no collection on the loop scans it afterwards.  The
        # cost: a reference cycle among objects alive at a reload that becomes garbage
        # later is never collected (the table and connections have none).
        collecting = gc.isenabled()
        gc.disable()
        try:
            result = self.parse(self.server.config, last_content)
        except Exception as exc:   # a bug: the loop logs it and keeps the table
            result = (None, None, ['internal error while reading the file: %r' % exc])
        finally:
            if collecting:
                gc.freeze()
                gc.enable()
        self._result = result
        self.server.loop.wake()

    def next_deadline(self):
        return 0.0 if self._result is not None else None

    def tick(self, now):
        """Apply the finished parse; start the next one if a SIGHUP came meanwhile."""
        if self._result is None:
            return
        content, table, errors = self._result
        self._result = None
        self._thread.join()   # it has set its result: it ends at once
        self._thread = None
        self._apply(content, table, errors)
        if self._again:
            self._again = False
            self.request()

    def _apply(self, content, table, errors):
        server = self.server
        path = server.config.main.facilities_config
        if table is not None and not errors:
            # The daemon's own refusals of a new table (a sealed facility without a
            # sealing key: seal_keys.py), on the loop: they may look at its state.
            errors = [error for check in server.table_checks for error in check(table)]
        if errors:
            server.counters.count('reloads_failed')
            server.last_reload = (server.clock(), False)
            for error in errors:
                log.error('reload: %s', error)
            log.error('reload: %s has errors; still using the facilities loaded before', path)
        else:
            if table is not None:
                # Lines queued under the old table first, with the loop's bound on new
                # files (those not opened yet keep their lines: retarget keeps them).
                server.writer.flush(server.clock(), OPEN_BUDGET_S)
                server.table = table
                server.writer.retarget(table)
                self.last_content = content
            server.counters.count('reloads')
            server.loaded_at = server.clock()
            server.last_reload = (server.loaded_at, True)
            self.announce('reloaded %s: %d facilities' % (path, len(server.table)),
                          content if table is not None else None)
        server.writer.reopen()
        for hook in server.reload_hooks:
            hook()

    def announce(self, sentence, content):
        """Log a reload that worked (``content``: the bytes of a new table, or None when
        the file had not changed).  With receivers the pool logs it once they all route
        with that table (receivers.py)."""
        log.info('%s', sentence)

    def close(self):
        """Wait for a running parse (tests; the daemon's stop does not wait for one)."""
        if self._thread is not None:
            self._thread.join()

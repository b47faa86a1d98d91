"""Issue 13: the handler survives fork, whatever its thread was doing, and fork children
deliver on their way out.

- No module is imported on the sender thread (an audit hook watches), so that a fork in
  the middle of its work never leaves a child with a half-imported module.
- ``multiprocessing.Pool(maxtasksperchild=1)`` with fork: children leave through
  ``os._exit``; their lines are delivered anyway.
- ``gunicorn --preload``, the fork forced while the parent's sender thread is inside its
  first connect: every worker delivers.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.support import ROOT, line_body, make_certs, read_lines, terminate, wait_for

FACILITIES = """
[app]
rotate = daily
backup_count = 3
"""


def run_python(code, *args, cwd=None, env=None, timeout=120):
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code), *map(str, args)],
                          cwd=str(cwd or ROOT), capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    if shutil.which('openssl') is None:
        pytest.skip('needs the openssl command')
    return make_certs(tmp_path_factory.mktemp('pki'), 'web1')


AUDIT_SCRIPT = """\
    import json, logging, sys, threading

    imported = []

    def watch(event, args):
        if event == 'import' and threading.current_thread().name == 'loghog-sender':
            imported.append(args[0])

    sys.addaudithook(watch)
    from loghog import LoghogHandler
    tcp_port, tls_port, down_port, pki = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

    def log(handler, count, text='msg'):
        for n in range(count):
            handler.handle(logging.makeLogRecord({'msg': f'{text} {n}', 'name': 'audit'}))

    handlers = [
        LoghogHandler('app', 'localhost', tcp_port),                     # connect, send, ack
        LoghogHandler('app', '127.0.0.1', tcp_port, compression=True, secret='s3cret'),
        LoghogHandler('app', '127.0.0.1', tls_port, ssl_info={
            'pemfile': f'{pki}/web1.pem', 'cacert': f'{pki}/loghog-ca.cert'}),
        LoghogHandler('app', '127.0.0.1', tcp_port, acknowledged=False),
        LoghogHandler('app', '127.0.0.1', tcp_port, stream=False),
    ]
    for handler in handlers:
        log(handler, 50)
        handler.flush()
    print('ready', flush=True)
    sys.stdin.readline()            # the daemon restarts meanwhile: reconnect, resend
    for handler in handlers:
        log(handler, 50, 'again')
        handler.flush()
    lost = LoghogHandler('app', '127.0.0.1', down_port, max_buffer_size=2, compression=True)
    log(lost, 5)                    # refused, dropped (and counted), reported at close
    lost.close()
    for handler in handlers:
        handler.close()
    print(json.dumps(imported))
    """


def test_the_sender_thread_imports_nothing(daemon_factory, pki, tmp_path):
    """Whatever the sender thread would import lazily is imported with loghog, on the
    application's thread: connect (getaddrinfo imports encodings.idna), send, acks,
    reconnect, compression, signatures, TLS, UDP, dropping, reporting."""
    from tests.support import free_port
    port, tls_port = free_port(), free_port()
    server = {'listen_ipv4': f'127.0.0.1:{port}', 'listen_ipv4_ssl': f'127.0.0.1:{tls_port}',
              'listen_ipv6_ssl': '', 'pemfile': str(pki / 'loghog-server.pem'),
              'cacert': str(pki / 'loghog-ca.cert')}
    daemon = daemon_factory(FACILITIES, server=server)
    script = tmp_path / 'audit.py'
    script.write_text(textwrap.dedent(AUDIT_SCRIPT))
    child = subprocess.Popen([sys.executable, str(script), str(port), str(tls_port),
                              str(free_port()), str(pki)], cwd=str(ROOT), text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        assert child.stdout.readline() == 'ready\n'
        assert daemon.stop() == 0
        daemon.start()
        child.stdin.write('go\n')
        child.stdin.flush()
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert json.loads(out) == [], 'imported on the sender thread'
    assert '5 messages not delivered' in err


POOL_SCRIPT = """\
    import logging, multiprocessing, sys
    from loghog import LoghogHandler

    logging.getLogger().addHandler(LoghogHandler('app', '127.0.0.1', int(sys.argv[1])))
    logging.getLogger().setLevel(logging.INFO)

    def task(n):
        logging.info('task %d', n)
        return n

    if __name__ == '__main__':
        pool = multiprocessing.get_context('fork').Pool(4, maxtasksperchild=1)
        assert pool.map(task, range(1000), chunksize=10) == list(range(1000))
        # close() and join(): the last workers finish their way out.  (The with statement's
        # terminate() would SIGTERM workers still delivering: a kill, which nothing survives.)
        pool.close()
        pool.join()
    """


def test_multiprocessing_pool_children_deliver_their_lines_on_the_way_out(daemon, tmp_path):
    """A fork child of multiprocessing leaves through os._exit, skipping atexit (0.7 lost
    799 of 1,000 task lines with maxtasksperchild=1, as Celery's max-tasks-per-child)."""
    script = tmp_path / 'pool.py'
    script.write_text(textwrap.dedent(POOL_SCRIPT))
    result = subprocess.run([sys.executable, str(script), str(daemon.tcp_port)], cwd=str(ROOT),
                            capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stderr) == (0, '')
    # Each child waited for its acks before leaving: the lines are in the file already.
    bodies = sorted(line_body(line) for line in read_lines(daemon.log_file('app')))
    assert bodies == sorted(f'task {n}' for n in range(1000))
    assert daemon.stop() == 0


GUNICORN_APP = """\
    import importlib.abc, logging, os, socket, sys, threading, time

    MARKS = os.environ['HOG_MARKS']
    WORKERS = int(os.environ['HOG_WORKERS'])
    PARENT = os.getpid()

    def in_parent_sender_thread():
        return os.getpid() == PARENT and threading.current_thread().name == 'loghog-sender'

    def until_every_worker_forked():
        deadline = time.monotonic() + 60
        while len(os.listdir(MARKS)) < WORKERS and time.monotonic() < deadline:
            time.sleep(0.01)

    class HoldTheIdnaImport(importlib.abc.MetaPathFinder):
        # A client that imports encodings.idna lazily does it inside getaddrinfo, on its
        # thread: hold that import (its module lock taken) until the workers have forked.
        def find_spec(self, name, path, target=None):
            if name == 'encodings.idna' and in_parent_sender_thread():
                until_every_worker_forked()
            return None

    sys.meta_path.insert(0, HoldTheIdnaImport())
    real_getaddrinfo = socket.getaddrinfo

    def held_getaddrinfo(*args, **kwargs):
        # A client that imported it already: hold its thread in getaddrinfo instead.
        if 'encodings.idna' in sys.modules and in_parent_sender_thread():
            until_every_worker_forked()
        return real_getaddrinfo(*args, **kwargs)

    socket.getaddrinfo = held_getaddrinfo

    from loghog import LoghogHandler

    logging.getLogger().addHandler(LoghogHandler('app', '127.0.0.1', int(os.environ['HOG_PORT'])))
    logging.getLogger().setLevel(logging.INFO)
    logging.info('parent %d', os.getpid())  # the parent's sender thread starts connecting

    def app(environ, start_response):
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'ok']
    """

GUNICORN_CONFIG = """\
    import logging, os

    workers = int(os.environ['HOG_WORKERS'])
    preload_app = True
    bind = 'unix:' + os.path.join(os.environ['HOG_MARKS'], '..', 'gunicorn.sock')

    def post_fork(server, worker):
        open(os.path.join(os.environ['HOG_MARKS'], str(os.getpid())), 'w').close()

    def post_worker_init(worker):
        for n in range(50):
            logging.getLogger('worker').info('worker %d line %d', os.getpid(), n)
    """


def test_gunicorn_preload_forked_during_the_parents_first_connect(daemon, tmp_path):
    """0.7: about one start in six, a worker inherited a half-done import of encodings.idna
    from the parent's sender thread and never delivered a line.  Here the fork happens
    during that connect every time."""
    pytest.importorskip('gunicorn')
    workers = 4
    (tmp_path / 'marks').mkdir()
    (tmp_path / 'hogapp.py').write_text(textwrap.dedent(GUNICORN_APP))
    (tmp_path / 'gunicorn_conf.py').write_text(textwrap.dedent(GUNICORN_CONFIG))
    env = dict(os.environ, HOG_MARKS=str(tmp_path / 'marks'), HOG_WORKERS=str(workers),
               HOG_PORT=str(daemon.tcp_port),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]))
    with open(tmp_path / 'gunicorn.out', 'wb') as output:
        arbiter = subprocess.Popen([sys.executable, '-m', 'gunicorn', '-c', 'gunicorn_conf.py',
                                    'hogapp:app'], cwd=str(tmp_path), env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
    path = daemon.log_file('app')
    try:
        wait_for(lambda: len(read_lines(path)) >= 1 + workers * 50, timeout=60,
                 message='every worker\'s lines')
    finally:
        status = terminate(arbiter, 30)
    assert status == 0, (tmp_path / 'gunicorn.out').read_text()
    bodies = [line_body(line) for line in read_lines(path)]
    assert bodies.count(f'parent {arbiter.pid}') == 1
    pids = sorted(int(name) for name in os.listdir(tmp_path / 'marks'))
    assert len(pids) == workers
    assert sorted(b for b in bodies if b.startswith('worker ')) == \
        sorted(f'worker {pid} line {n}' for pid in pids for n in range(50))
    assert daemon.stop() == 0

"""docs/recipes.md, run for real: the code blocks as written there (only the daemon's port
changes), gunicorn with several sync workers (with and without --preload; Django behind
gunicorn), uvicorn with several workers, Celery's prefork workers with a real redis-server, a few hundred requests, the daemon restarted in the middle, and every request's
line found exactly once in a format = json facility with its extra= fields."""

import json
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import urllib.request

import pytest

from tests.support import ROOT, free_port, read_lines, terminate, wait_for


RECIPES = (ROOT / 'docs' / 'recipes.md').read_text()
REQUESTS = 300
WORKERS = 3


def block(first_line):
    """The fenced block of docs/recipes.md whose first line is ``first_line``."""
    for found in re.findall(r'```(?:python|ini)\n(.*?)```', RECIPES, re.S):
        if found.startswith(first_line):
            return found
    raise AssertionError('no block starting with %r in docs/recipes.md' % first_line)


def with_port(code, port):
    assert code.count('5566') == 1
    return code.replace('5566', str(port))


@pytest.fixture
def shop_daemon(daemon_factory):
    facilities = block('[shop]')
    return daemon_factory(facilities, server={'listen_ipv4': '127.0.0.1:%d' % free_port()})


def get(port, path, request_id):
    request = urllib.request.Request('http://127.0.0.1:%d%s' % (port, path),
                                     headers={'X-Request-Id': request_id})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def serve(folder, args, requests_path, daemon, server='gunicorn', restart=True):
    """Run gunicorn in ``folder``, make REQUESTS requests (the daemon stopped for the second
    third of them, then started again), stop gunicorn; return the JSON records.  Without
    ``restart`` the daemon stays stopped: the records of the first third are returned."""
    port = free_port()
    if server == 'gunicorn':
        command = [sys.executable, '-m', 'gunicorn', '-w', str(WORKERS),
                   '-b', '127.0.0.1:%d' % port, '--chdir', str(folder)] + args
    else:
        command = [sys.executable, '-m', 'uvicorn', '--workers', str(WORKERS), '--host',
                   '127.0.0.1', '--port', str(port), '--app-dir', str(folder)] + args
    process = subprocess.Popen(command, cwd=str(folder), stdout=subprocess.DEVNULL,
                              stderr=open(folder / 'gunicorn.txt', 'wb'))
    try:
        def listening():
            assert process.poll() is None, (folder / 'gunicorn.txt').read_text()
            try:
                socket.create_connection(('127.0.0.1', port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(listening, 20, message='gunicorn to listen')
        third = REQUESTS // 3
        for n in range(REQUESTS):
            if n == third:
                assert daemon.stop() == 0
            if n == 2 * third and restart:
                daemon.start()
            get(port, requests_path % n, 'r-%d' % n)
    finally:
        code = terminate(process, 40)
    assert code == 0, (folder / 'gunicorn.txt').read_text()
    log_file = daemon.log_file('shop')

    def all_there():
        return sum('"request_id"' in line for line in read_lines(log_file)) >= REQUESTS
    if restart:
        wait_for(all_there, 20, message='every request line')
    return [json.loads(line) for line in read_lines(log_file)]


def check(records, logger):
    ids = sorted(int(r['request_id'][2:]) for r in records if 'request_id' in r)
    assert ids == list(range(REQUESTS))     # every request once: none lost, none twice
    mine = [r for r in records if 'request_id' in r]
    assert all(r['level'] == 'INFO' and r['logger'] == logger for r in mine)
    assert len({r['process'] for r in mine}) >= 2   # several workers did the work


@pytest.mark.parametrize('preload', [False, True], ids=['workers', 'preload'])
def test_gunicorn_recipe(tmp_path, shop_daemon, preload):
    (tmp_path / 'app.py').write_text(with_port(block('# app.py'), shop_daemon.tcp_port))
    records = serve(tmp_path, ['--preload'] * preload + ['app:application'], '/orders/%d',
                    shop_daemon)
    check(records, 'shop.web')
    assert all(r['path'].startswith('/orders/') for r in records if 'request_id' in r)


def test_uvicorn_recipe(tmp_path, shop_daemon):
    pytest.importorskip('uvicorn')
    (tmp_path / 'asgi_app.py').write_text(with_port(block('# asgi_app.py'), shop_daemon.tcp_port))
    records = serve(tmp_path, ['asgi_app:app'], '/orders/%d', shop_daemon, server='uvicorn')
    check(records, 'shop.asgi')


def test_uvicorn_workers_stopped_while_the_daemon_is_down_say_what_they_could_not_deliver(
        tmp_path, shop_daemon):
    """A uvicorn worker dies of the SIGTERM it raises again after shutting down: no atexit,
    no logging.shutdown().  With the recipe's lifespan shutdown the handler is closed first,
    and says what it could not deliver; without it, the records a worker still held were
    lost without a word (the restart test above lost one worker's third about one run in
    eight)."""
    pytest.importorskip('uvicorn')
    (tmp_path / 'asgi_app.py').write_text(with_port(block('# asgi_app.py'), shop_daemon.tcp_port))
    records = serve(tmp_path, ['asgi_app:app'], '/orders/%d', shop_daemon, server='uvicorn',
                    restart=False)
    written = sum('request_id' in r for r in records)
    said = [int(n) for n in re.findall(r'loghog \(shop\): (\d+) messages not delivered',
                                       (tmp_path / 'gunicorn.txt').read_text())]
    assert written + sum(said) == REQUESTS, ((tmp_path / 'gunicorn.txt').read_text(), written)


def test_django_recipe(tmp_path, shop_daemon):
    pytest.importorskip('django')
    logging_settings = with_port(block('# settings.py (LOGGING)'), shop_daemon.tcp_port)
    (tmp_path / 'settings.py').write_text(logging_settings + textwrap.dedent('''
        SECRET_KEY = 'test'
        DEBUG = False
        ALLOWED_HOSTS = ['*']
        ROOT_URLCONF = 'urls'
        INSTALLED_APPS = []
        MIDDLEWARE = []
        '''))
    (tmp_path / 'views.py').write_text(block('# views.py'))
    (tmp_path / 'urls.py').write_text(
        'from django.urls import path\nimport views\n'
        "urlpatterns = [path('orders/<int:number>', views.order)]\n")
    records = serve(tmp_path, ['--env', 'DJANGO_SETTINGS_MODULE=settings',
                               'django.core.wsgi:get_wsgi_application()'], '/orders/%d',
                    shop_daemon)
    check(records, 'shop.views')


@pytest.fixture
def redis_port(tmp_path):
    """A redis-server of the test's own on 127.0.0.1 (Debian's package), stopped after."""
    if shutil.which('redis-server') is None:
        pytest.skip('redis-server is not installed (apt-get install redis-server)')
    port = free_port()
    server = subprocess.Popen(['redis-server', '--port', str(port), '--bind', '127.0.0.1',
                               '--save', '', '--appendonly', 'no', '--dir', str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listening():
            assert server.poll() is None, 'redis-server exited'
            try:
                socket.create_connection(('127.0.0.1', port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(listening, 10, message='redis-server to listen')
        yield port
    finally:
        server.terminate()
        server.wait(10)


def test_celery_recipe(tmp_path, shop_daemon, redis_port):
    pytest.importorskip('celery')
    code = with_port(block('# tasks.py'), shop_daemon.tcp_port)
    assert code.count('6379') == 1
    (tmp_path / 'tasks.py').write_text(code.replace('6379', str(redis_port)))
    worker = subprocess.Popen(
        [sys.executable, '-m', 'celery', '-A', 'tasks', 'worker', '-c', str(WORKERS),
         '-P', 'prefork', '--without-heartbeat', '--without-gossip', '--without-mingle'],
        cwd=str(tmp_path), stdout=subprocess.DEVNULL, stderr=open(tmp_path / 'celery.txt', 'wb'))
    log_file = shop_daemon.log_file('shop')

    def send(first, count):
        subprocess.run([sys.executable, '-c', 'import tasks\nfor n in range(%d, %d): '
                        'tasks.place_order.delay(n, "r-%%d" %% n)' % (first, first + count)],
                       cwd=str(tmp_path), check=True, timeout=60)

    def done(count):
        return lambda: sum('"request_id"' in line for line in read_lines(log_file)) >= count
    try:
        third = REQUESTS // 3
        send(0, third)
        wait_for(done(third), 60, message='the first third (the worker started)')
        assert shop_daemon.stop() == 0
        send(third, third)
        shop_daemon.start()
        send(2 * third, REQUESTS - 2 * third)
        wait_for(done(REQUESTS), 30, message='every task line')
    finally:
        exit_code = terminate(worker, 40)
    assert exit_code == 0, (tmp_path / 'celery.txt').read_text()
    assert shop_daemon.stop() == 0
    records = [json.loads(line) for line in read_lines(log_file)]
    check(records, 'shop.tasks')
    assert all(r['order'] == int(r['request_id'][2:]) for r in records if 'request_id' in r)

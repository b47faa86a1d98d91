"""The daemons under test: loghogd from this checkout, rsyslog from Debian, and our sink.

Each system starts a fresh daemon for one measured run, in its own folder, on loopback
ports chosen at run time, and returns an ``Instance``: its PID, the addresses it listens
on, and the file it writes.  Nothing here touches the system's rsyslog configuration or
service: rsyslog runs as ``rsyslogd -n -f <our conf> -i <our pidfile>`` with its own
work directory.  Every process is stopped by its PID.
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from benchmarks import loadgen

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RSYSLOGD = '/usr/sbin/rsyslogd'
POLICY_RC_D = '/usr/sbin/policy-rc.d'
# Same receive buffer for both daemons' UDP sockets (loghogd's default), so that udp-flood
# compares the programs, not the buffers.
UDP_RECEIVE_BUFFER = '4M'
START_TIMEOUT_S = 20
STOP_TIMEOUT_S = 30


class Instance:
    """A running daemon: ``pid``, ``ports`` {'tcp'|'udp'|'tls': (host, port)}, ``output``."""

    def __init__(self, process, ports, output, folder):
        self.process = process
        self.pid = process.pid
        self.ports = ports
        self.output = output
        self.folder = folder

    def stop(self):
        """SIGTERM the daemon and wait; SIGKILL after STOP_TIMEOUT_S.  Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()
        return self.process.returncode

    def stderr_tail(self):
        try:
            with open(os.path.join(self.folder, 'stderr.txt'), errors='replace') as handle:
                return handle.read()[-2000:]
        except OSError:
            return ''


def _spawn(argv, folder, env=None):
    with open(os.path.join(folder, 'stderr.txt'), 'wb') as err:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                cwd=folder, env=env)


def _wait_for(predicate, process, what, folder, timeout_s=START_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process.poll() is not None:
            raise RuntimeError('%s exited with %s before it was ready:\n%s'
                               % (what, process.returncode, _tail(folder)))
        time.sleep(0.02)
    process.kill()
    process.wait(10)
    raise RuntimeError('%s was not ready within %d s:\n%s' % (what, timeout_s, _tail(folder)))


def _tail(folder):
    try:
        with open(os.path.join(folder, 'stderr.txt'), errors='replace') as handle:
            return handle.read()[-2000:]
    except OSError:
        return ''


def _read_listen_file(path):
    try:
        with open(path, encoding='utf-8') as handle:
            listen = json.load(handle)
    except (OSError, ValueError):
        return None
    return {kind: tuple(pairs[0]) for kind, pairs in listen.items() if pairs}


# --- TLS test certificates ---------------------------------------------------------------

def make_certs(folder):
    """Create a CA, a server and a client certificate with openssl; return their paths.

    Python 3.11's ssl (OpenSSL 3) wants real v3 extensions: CA basic constraints and key
    usage on the CA, subjectAltName and extended key usage on the leaves.
    """
    os.makedirs(folder, exist_ok=True)
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']

    def run(*argv):
        subprocess.run(['openssl'] + list(argv), check=True, cwd=folder,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    run('req', '-x509', *ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '7',
        '-subj', '/CN=LogHog benchmark CA',
        '-addext', 'basicConstraints=critical,CA:TRUE',
        '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
    for name, usage in (('server', 'serverAuth'), ('client', 'clientAuth')):
        with open(path(name + '.ext'), 'w') as handle:
            handle.write('basicConstraints=CA:FALSE\n'
                         'keyUsage=critical,digitalSignature,keyEncipherment\n'
                         'extendedKeyUsage=%s\n'
                         'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n'
                         'authorityKeyIdentifier=keyid\n'
                         'subjectKeyIdentifier=hash\n' % usage)
        run('req', *ec, '-keyout', name + '.key', '-out', name + '.csr',
            '-subj', '/CN=localhost' if name == 'server' else '/CN=benchclient')
        run('x509', '-req', '-in', name + '.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
            '-CAcreateserial', '-out', name + '.pem', '-days', '7', '-extfile', name + '.ext')
    with open(path('server-combined.pem'), 'w') as out:
        for name in ('server.key', 'server.pem'):
            with open(path(name)) as handle:
                out.write(handle.read())
    return {'ca': path('ca.pem'), 'server_cert': path('server.pem'),
            'server_key': path('server.key'), 'server_pem': path('server-combined.pem'),
            'client': loadgen.TlsFiles(path('ca.pem'), path('client.pem'), path('client.key'))}


# --- loghogd --------------------------------------------------------------------------

class Loghogd:
    """loghogd from this checkout, run as ``<this python> -m loghogd --config <conf>``."""

    name = 'loghogd'
    fmt = 'loghog'
    workers = 1       # [server] workers: receiver processes (issue 18)

    def __init__(self, python=None):
        self.python = python or sys.executable

    def problem(self):
        """Why this system cannot run here (None if it can)."""
        if not os.path.exists(os.path.join(REPO, 'loghogd', '__main__.py')):
            return 'loghogd/__main__.py is not in this checkout yet'
        result = subprocess.run([self.python, '-m', 'loghogd', '--version'], cwd=REPO,
                                capture_output=True, text=True, env=self._env())
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines() or ['no output']
            return '%s -m loghogd --version failed: %s (use the venv: make bench)' % (
                self.python, lines[-1])
        return None

    def version(self):
        result = subprocess.run([self.python, '-m', 'loghogd', '--version'], cwd=REPO,
                                capture_output=True, text=True, env=self._env())
        return result.stdout.strip() if result.returncode == 0 else 'unknown'

    def _env(self):
        env = dict(os.environ)
        env['PYTHONPATH'] = REPO + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
        return env

    def write_config(self, folder, workload, certs):
        """Write loghogd.conf and facilities.conf for one run; return the conf's path."""
        secret = 'secret = %s\n' % loadgen.SECRET if workload.signed else ''
        if getattr(workload, 'sealed', False):
            secret += 'sealed = yes\n'    # with the default [seal] interval (60 s)
        with open(os.path.join(folder, 'facilities.conf'), 'w') as handle:
            handle.write('[%s]\nrotate = daily\nbackup_count = 3\nflush_every = 1000\n%s'
                         % (loadgen.APP_ID, secret))
        tls = ''
        if workload.transport == 'tls':
            tls = ('listen_ipv4_ssl = 127.0.0.1:0\npemfile = %s\ncacert = %s\n'
                   % (certs['server_pem'], certs['ca']))
        extra = ''
        if workload.idle_connections:
            extra = 'max_connections = %d\n' % (workload.idle_connections + 100)
        if self.workers != 1:
            extra += 'workers = %d\n' % self.workers
        conf = os.path.join(folder, 'loghogd.conf')
        with open(conf, 'w') as handle:
            handle.write('[main]\nlogdir = log\nworkdir = work\nrundir = run\n'
                         'facilities_config = facilities.conf\n\n'
                         '[log]\nfilename = own/loghogd.log\nlevel = INFO\n\n'
                         '[server]\nlisten_ipv4 = 127.0.0.1:0\nlisten_ipv6 =\n'
                         'udp_receive_buffer = %s\n%s%s'
                         % (UDP_RECEIVE_BUFFER, tls, extra))
        return conf

    def start(self, folder, workload, certs=None):
        conf = self.write_config(folder, workload, certs)
        if getattr(workload, 'sealed', False):
            subprocess.run([self.python, '-m', 'loghogd', 'seal-init', '-c', conf], cwd=REPO,
                           env=self._env(), check=True, capture_output=True)
        listen = os.path.join(folder, 'run', 'listen.json')
        process = _spawn([self.python, '-m', 'loghogd', '--config', conf], folder, self._env())
        ports = _wait_for(lambda: _read_listen_file(listen), process, 'loghogd', folder)
        output = os.path.join(folder, 'log', loadgen.APP_ID, 'root.log')
        return Instance(process, ports, output, folder)


class LoghogdSyslog(Loghogd):
    """loghogd's syslog listeners ([syslog], issue 16), fed the very bytes rsyslog gets:
    RFC 5424 records, octet-counted on TCP and TLS, one per datagram on UDP."""

    name = 'loghogd-syslog'
    fmt = 'syslog'
    KINDS = {'syslog_tcp': 'tcp', 'syslog_udp': 'udp', 'syslog_tls': 'tls'}

    def write_config(self, folder, workload, certs):
        conf = super().write_config(folder, workload, certs)
        with open(os.path.join(folder, 'facilities.conf'), 'a') as handle:
            handle.write('syslog_programs = %s\n' % loadgen.APP_ID)
        with open(conf, 'a') as handle:
            handle.write('\n[syslog]\nlisten_tcp = 127.0.0.1:0\nlisten_udp = 127.0.0.1:0\n%s'
                         % ('listen_tls = 127.0.0.1:0\n' if workload.transport == 'tls' else ''))
        return conf

    def start(self, folder, workload, certs=None):
        instance = super().start(folder, workload, certs)
        instance.ports = {self.KINDS[kind]: address for kind, address in instance.ports.items()
                          if kind in self.KINDS}
        return instance


class LoghogdWorkers(Loghogd):
    """loghogd with two receiver processes ([server] workers = 2, issue 18); CPU and
    memory are summed over the main process and the receivers."""

    name = 'loghogd-w2'
    workers = 2


# --- the sink --------------------------------------------------------------------------

class Sink(Loghogd):
    """benchmarks/sink.py: the bare frame-to-line path (no TLS, no signatures checked)."""

    name = 'sink'

    def problem(self):
        return None

    def version(self):
        return 'benchmarks/sink.py'

    def start(self, folder, workload, certs=None):
        if workload.transport == 'tls':
            raise RuntimeError('the sink speaks no TLS')
        listen = os.path.join(folder, 'run', 'listen.json')
        os.makedirs(os.path.dirname(listen), exist_ok=True)
        process = _spawn([self.python, os.path.join(REPO, 'benchmarks', 'sink.py'),
                          '--logdir', os.path.join(folder, 'log'),
                          '--rundir', os.path.dirname(listen)], folder, self._env())
        ports = _wait_for(lambda: _read_listen_file(listen), process, 'sink', folder)
        output = os.path.join(folder, 'log', loadgen.APP_ID, 'root.log')
        return Instance(process, ports, output, folder)


# --- rsyslog ---------------------------------------------------------------------------

def _rsyslog_pids():
    pids = {}
    for stat in glob.glob('/proc/[0-9]*/cmdline'):
        try:
            with open(stat, 'rb') as handle:
                argv = handle.read().split(b'\0')
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b'rsyslogd':
            pids[int(stat.split('/')[2])] = argv
    return pids


def _ossl_module():
    return glob.glob('/usr/lib/*/rsyslog/lmnsd_ossl.so')


def ensure_rsyslog(log=print):
    """Install rsyslog (and its OpenSSL driver, for tls8) with apt if they are missing.

    Services must not start: a temporary policy-rc.d says so when none exists, and any
    rsyslogd that appears during the install without our ``-f`` is stopped by its PID.
    Returns None, or why rsyslog cannot be had.
    """
    missing = [name for name, there in (('rsyslog', os.path.exists(RSYSLOGD)),
                                        ('rsyslog-openssl', _ossl_module())) if not there]
    if not missing:
        return None
    if os.geteuid() != 0 or not shutil.which('apt-get'):
        return 'needs %s: run as root on Debian, or apt-get install %s' % (
            ' '.join(missing), ' '.join(missing))
    log('installing %s with apt-get (services will not be started)' % ' '.join(missing))
    before = set(_rsyslog_pids())
    made_policy = not os.path.exists(POLICY_RC_D)
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    try:
        if made_policy:
            with open(POLICY_RC_D, 'w') as handle:
                handle.write('#!/bin/sh\n# loghog benchmarks: no services during install\nexit 101\n')
            os.chmod(POLICY_RC_D, 0o755)
        subprocess.run(['apt-get', 'update', '-qq'], env=env, check=False)
        result = subprocess.run(['apt-get', 'install', '-y', '-qq', '--no-install-recommends']
                                + missing, env=env, capture_output=True, text=True)
    finally:
        if made_policy:
            os.unlink(POLICY_RC_D)
    for pid, argv in _rsyslog_pids().items():
        if pid not in before and b'-f' not in argv:
            log('stopping rsyslogd %d that the install started' % pid)
            os.kill(pid, signal.SIGTERM)
    if result.returncode != 0:
        return 'apt-get install %s failed: %s' % (' '.join(missing), result.stderr[-500:])
    return None


def free_port():
    """A port that is free on 127.0.0.1 for both TCP and UDP right now."""
    for _ in range(100):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(('127.0.0.1', 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(('127.0.0.1', port))
            except OSError:
                continue
            return port
    raise RuntimeError('no free port for TCP and UDP')


def _is_listening(port, proto):
    """True when something is bound to 127.0.0.1:port in /proc/net/{tcp,udp}."""
    wanted = '0100007F:%04X' % port
    with open('/proc/net/%s' % proto) as handle:
        next(handle)
        for line in handle:
            fields = line.split()
            if fields[1] == wanted and (proto == 'udp' or fields[3] == '0A'):
                return True
    return False


class Rsyslog:
    """Debian's rsyslogd, fed RFC 6587 octet-counted RFC 5424 syslog."""

    name = 'rsyslog'
    fmt = 'syslog'
    # Same shape as loghogd's lines: receive time, host, message.
    TEMPLATE = '%timegenerated:::date-rfc3339% - %HOSTNAME% - %msg%\\n'

    def problem(self):
        return ensure_rsyslog()

    def version(self):
        result = subprocess.run([RSYSLOGD, '-v'], capture_output=True, text=True)
        first = result.stdout.splitlines()[0] if result.stdout else 'unknown'
        return ' '.join(first.split(' compiled')[0].split())

    def write_config(self, folder, workload, port, certs):
        work = os.path.join(folder, 'work')
        os.makedirs(work, exist_ok=True)
        output = os.path.join(folder, 'log', loadgen.APP_ID, 'root.log')
        os.makedirs(os.path.dirname(output), exist_ok=True)
        tls_global = tls_module = ''
        if workload.transport == 'tls':
            tls_global = ('\n       defaultNetstreamDriver="ossl"'
                          '\n       defaultNetstreamDriverCAFile="%s"'
                          '\n       defaultNetstreamDriverCertFile="%s"'
                          '\n       defaultNetstreamDriverKeyFile="%s"'
                          % (certs['ca'], certs['server_cert'], certs['server_key']))
            tls_module = (' streamDriver.name="ossl" streamDriver.mode="1"'
                          ' streamDriver.authMode="x509/certvalid"')
        sessions = max(1000, workload.idle_connections + 100)
        conf = os.path.join(folder, 'rsyslog.conf')
        with open(conf, 'w') as handle:
            handle.write(
                'global(workDirectory="%s" maxMessageSize="64k" net.enableDNS="off"%s)\n'
                'module(load="imtcp" maxSessions="%d"%s)\n'
                'module(load="imudp")\n'
                'template(name="bench" type="string" string="%s")\n'
                'ruleset(name="bench") {\n'
                '    action(type="omfile" file="%s" template="bench")\n'
                '}\n'
                'input(type="imtcp" address="127.0.0.1" port="%d" ruleset="bench")\n'
                'input(type="imudp" address="127.0.0.1" port="%d" ruleset="bench"'
                ' rcvbufSize="%s")\n'
                % (work, tls_global, sessions, tls_module, self.TEMPLATE, output, port, port,
                   UDP_RECEIVE_BUFFER.lower()))
        return conf, output

    def start(self, folder, workload, certs=None):
        port = free_port()
        conf, output = self.write_config(folder, workload, port, certs)
        pidfile = os.path.join(folder, 'rsyslogd.pid')
        process = _spawn([RSYSLOGD, '-n', '-f', conf, '-i', pidfile], folder)
        _wait_for(lambda: _is_listening(port, 'tcp') and _is_listening(port, 'udp'),
                  process, 'rsyslogd', folder)
        kind = 'tls' if workload.transport == 'tls' else 'tcp'
        ports = {kind: ('127.0.0.1', port), 'udp': ('127.0.0.1', port)}
        return Instance(process, ports, output, folder)


SYSTEMS = {'loghogd': Loghogd, 'loghogd-w2': LoghogdWorkers, 'loghogd-syslog': LoghogdSyslog, 'rsyslog': Rsyslog, 'sink': Sink}

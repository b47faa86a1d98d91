#!/bin/bash
# The Debian packaging test (issue 5): build the packages, lint them, serve them from a local
# apt repository, install the client alone (it must not need the daemon), then the daemon alone
# as a user does (`apt-get install loghogd`: it must bring what it imports, and start), follow
# the README quick start literally, then status, restart, stop, remove and purge, and check that
# nothing is left running or behind.
#
# Usage, as root on Debian bookworm:  bash tests/packaging/debian-package.sh [SOURCE_DIR]
#
# The machine is left as it was: the daemon is stopped, the packages purged, the apt source
# removed, the loghog user deleted if this script's install created it, and the packages this
# script installed (build tools, lintian) purged again, unless LOGHOG_PACKAGING_KEEP_TOOLS=1.
# Exit status: 0 passed, 1 failed, 77 cannot run here (not root, not Debian, no apt-get).
#
# Facts and pitfalls behind the steps: shared/notes/debian-packaging.md. In short: policy-rc.d
# forbids apt from starting services on these machines, so the init script is driven directly
# (and the daemon stopped before removal); Debian's /usr/bin/python3 is used, never a pyenv or
# venv python; the build runs in a copy so that nothing lands beside the source tree.
set -euo pipefail

SRC=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
export DEBIAN_FRONTEND=noninteractive
export PATH=/usr/sbin:/usr/bin:/sbin:/bin          # no pyenv/venv python for pybuild or the checks
export LC_ALL=C.UTF-8
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || [ ! -r /etc/debian_version ]; then
    echo "SKIP: needs root on Debian with apt-get" >&2
    exit 77
fi

LIST=/etc/apt/sources.list.d/loghog-packaging-test.list
PIDFILE=/run/loghogd/loghogd.pid
INIT=/etc/init.d/loghogd
APP_LOG=/var/log/loghogd/my-first-app/root.log
DAEMON_LOG=/var/log/loghogd/loghogd.log
# Wait for dpkg's lock rather than fail when another apt run holds it; never prompt on conffiles.
APT=(apt-get -y -q -o DPkg::Lock::Timeout=300
     -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
T0=$EPOCHREALTIME
WORK=""
TOOLS_ADDED=()
USER_EXISTED=no
GROUP_EXISTED=no
LISTENER=""
STEP=start

step() {
    STEP=$*
    printf '== [%5.1fs] %s\n' "$(awk -v a="$EPOCHREALTIME" -v b="$T0" 'BEGIN { print a - b }')" "$*"
}
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.1 s.
wait_until() {
    local limit=$(( $1 * 10 )) what=$2 i=0
    shift 2
    until "$@"; do
        i=$((i + 1))
        [ $i -lt $limit ] || fail "timed out waiting for $what"
        sleep 0.1
    done
}
daemon_pid() {
    [ -s "$PIDFILE" ] && cat "$PIDFILE"
}
# The PIDs of every process whose command name is loghogd (zombies included).
loghogd_pids() {
    # The packaged daemon only: a developer's loghogd from a checkout (make run) may be
    # running beside this test, under the same name.
    local comm pid
    for comm in /proc/[0-9]*/comm; do
        if [ "$(cat "$comm" 2>/dev/null)" = loghogd ]; then
            pid=${comm#/proc/}
            pid=${pid%/comm}
            if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q ' /usr/sbin/loghogd '; then
                echo "$pid"
            fi
        fi
    done
}
mode_of() { stat -c %a "$1"; }
owner_of() { stat -c %U:%G "$1"; }
expect() {   # expect WHAT ACTUAL WANTED
    [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
}

cleanup() {
    local rc=$? pid
    set +e
    trap - EXIT INT TERM
    [ -z "$LISTENER" ] || kill "$LISTENER" 2>/dev/null
    if [ $rc -ne 0 ] && [ -r "$DAEMON_LOG" ]; then
        echo "---- last lines of $DAEMON_LOG (failed at: $STEP)"
        tail -n 20 "$DAEMON_LOG"
    fi
    # Stop a daemon this test started: through the init script, else by its PID (the init script
    # can no longer do it once the package is removed).
    if [ -n "$(loghogd_pids)" ]; then
        [ -x "$INIT" ] && "$INIT" stop >/dev/null 2>&1
        for pid in $(loghogd_pids); do
            kill "$pid" 2>/dev/null
        done
    fi
    if dpkg -s loghogd >/dev/null 2>&1 || dpkg -s python3-loghog >/dev/null 2>&1; then
        "${APT[@]}" purge loghogd python3-loghog >/dev/null 2>&1
    fi
    rm -f "$LIST"
    if [ -n "$WORK" ]; then
        # apt keeps a copy of the local repository's index under a name made from its path.
        rm -f /var/lib/apt/lists/"$(tr / _ <<< "$WORK")"_repo_*
        rm -rf "$WORK"
    fi
    if [ $USER_EXISTED = no ] && getent passwd loghog >/dev/null; then
        userdel loghog
    fi
    if [ $GROUP_EXISTED = no ] && getent group loghog >/dev/null; then
        groupdel loghog
    fi
    if [ ${#TOOLS_ADDED[@]} -gt 0 ] && [ "${LOGHOG_PACKAGING_KEEP_TOOLS:-0}" != 1 ]; then
        # dpkg, not apt: it refuses to remove anything that a package installed since depends on.
        dpkg --purge "${TOOLS_ADDED[@]}" >/dev/null 2>&1 ||
            echo "warning: could not purge every build tool this test installed" >&2
    fi
    if [ $rc -eq 0 ]; then step "PASS"; else step "FAIL (exit $rc)"; fi
    exit $rc
}

# One run at a time on a machine: runs share port 5566, /etc/loghogd and the package names.
exec 9> /run/lock/loghog-packaging-test.lock
flock -w 600 9 || fail "another packaging test has held /run/lock/loghog-packaging-test.lock for 10 minutes"

for pkg in loghogd python3-loghog; do
    if dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install'; then
        fail "$pkg is already installed; this test installs and purges it, so it will not run here"
    fi
done
if [ -n "$(loghogd_pids)" ]; then
    fail "a loghogd is already running (PIDs $(loghogd_pids | xargs)); stop it first"
fi
if (exec 3<>/dev/tcp/127.0.0.1/5566) 2>/dev/null; then
    fail "something already listens on 127.0.0.1:5566, the packaged daemon's port"
fi
getent passwd loghog >/dev/null && USER_EXISTED=yes
getent group loghog >/dev/null && GROUP_EXISTED=yes
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
WORK=$(mktemp -d /tmp/loghog-packaging.XXXXXX)
chmod 0755 "$WORK"                       # apt's _apt user reads the file: repository in it

step "copy the source tree to $WORK/src"
mkdir "$WORK/src"
tar -C "$SRC" --exclude=.git --exclude='./.venv*' --exclude=./var --exclude=./build \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis \
    --exclude=.pybuild -cf - . | tar -C "$WORK/src" -xf -

step "install the build tools and build dependencies"
"${APT[@]}" update -qq
before=$(dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" { print $2 }')
if ! { "${APT[@]}" install --no-install-recommends build-essential lintian &&
         "${APT[@]}" build-dep --no-install-recommends "$WORK/src"; } > "$WORK/deps.log" 2>&1; then
    cat "$WORK/deps.log"
    fail "could not install the build dependencies"
fi
after=$(dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" { print $2 }')
mapfile -t TOOLS_ADDED < <(comm -13 <(sort <<< "$before") <(sort <<< "$after"))
echo "${#TOOLS_ADDED[@]} packages installed for the build (purged again at the end)"

step "build: dpkg-buildpackage -us -uc -b (unit tests included)"
if ! (cd "$WORK/src" && dpkg-buildpackage -us -uc -b) > "$WORK/build.log" 2>&1; then
    tail -n 60 "$WORK/build.log"
    fail "the package build failed (log above)"
fi
grep -E '^=+ .*(passed|failed).* =+$' "$WORK/build.log" || true

step "lintian --fail-on error,warning (informational tags shown)"
if ! lintian --fail-on error,warning -I -E --pedantic "$WORK"/loghog_*.changes > "$WORK/lintian.log" 2>&1; then
    cat "$WORK/lintian.log"
    fail "lintian reports errors or warnings"
fi
grep -v 'running with root privileges' "$WORK/lintian.log" || echo "(no tags)"
stat -c '%s bytes  %n' "$WORK"/*.deb

step "local apt repository"
mkdir "$WORK/repo"
mv "$WORK"/*.deb "$WORK/repo/"
(cd "$WORK/repo" && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null > Packages)
echo "deb [trusted=yes] file:$WORK/repo ./" > "$LIST"
# Only the new source is read; without a Release file apt prints "Method gave a blank
# filename" a few times, which is harmless.
"${APT[@]}" update -o Dir::Etc::sourcelist="$LIST" -o Dir::Etc::sourceparts=- \
    -o APT::Get::List-Cleanup=0 > "$WORK/update.log" 2>&1 || { cat "$WORK/update.log"; fail "apt-get update"; }

step "the client package needs none of the daemon's dependencies"
client_depends=$(dpkg-deb -f "$WORK"/repo/python3-loghog_*.deb Depends)
echo "python3-loghog Depends: $client_depends"
if grep -Eq 'loghogd|python3-(daemon|lockfile|dateutil|croniter)' <<< "$client_depends"; then
    fail "python3-loghog depends on the daemon or its dependencies: $client_depends"
fi

step "apt-get install python3-loghog (alone: the client must work without the daemon)"
"${APT[@]}" install python3-loghog > "$WORK/install.log" 2>&1 || { cat "$WORK/install.log"; fail "install python3-loghog"; }
/usr/bin/loghog --help | grep -q 'usage: loghog' || fail "/usr/bin/loghog --help"
/usr/bin/python3 -c 'from loghog import LoghogHandler' || fail "import loghog"
[ ! -e /usr/sbin/loghogd ] || fail "python3-loghog installed the daemon"
# Purged again: the next step installs the daemon as README's usage line says, alone.
"${APT[@]}" purge python3-loghog > "$WORK/purge.log" 2>&1 || { cat "$WORK/purge.log"; fail "purge python3-loghog"; }

step "apt-get install loghogd (alone, from the repository: what a user types)"
"${APT[@]}" install loghogd > "$WORK/install.log" 2>&1 || { cat "$WORK/install.log"; fail "install loghogd"; }
grep -E 'Setting up loghogd|invoke-rc.d|loghogd:' "$WORK/install.log" || true
getent passwd loghog | grep -q ':/var/lib/loghogd:/usr/sbin/nologin$' || fail "no loghog system user"
expect /var/log/loghogd "$(owner_of /var/log/loghogd) $(mode_of /var/log/loghogd)" "loghog:adm 750"
expect /var/lib/loghogd "$(owner_of /var/lib/loghogd) $(mode_of /var/lib/loghogd)" "loghog:loghog 750"
expect /etc/loghogd/certs "$(owner_of /etc/loghogd/certs) $(mode_of /etc/loghogd/certs)" "root:loghog 750"
expect "CA key" "$(owner_of /etc/loghogd/certs/loghog-ca.key) $(mode_of /etc/loghogd/certs/loghog-ca.key)" "root:root 600"
expect "server pem" "$(owner_of /etc/loghogd/certs/loghog-server.pem) $(mode_of /etc/loghogd/certs/loghog-server.pem)" "root:loghog 640"
expect "facilities.conf (secrets)" "$(owner_of /etc/loghogd/facilities.conf) $(mode_of /etc/loghogd/facilities.conf)" "root:loghog 640"
openssl verify -x509_strict -CAfile /etc/loghogd/certs/loghog-ca.cert /etc/loghogd/certs/loghog-server.pem
dpkg-query -W -f '${Conffiles}\n' loghogd | grep -q ' /etc/loghogd/facilities.conf ' || fail "facilities.conf is not a conffile"
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify /lib/systemd/system/loghogd.service || fail "systemd-analyze verify loghogd.service"
fi
[ -z "$(loghogd_pids)" ] || echo "note: apt started loghogd (no policy-rc.d on this machine)"

step "the daemon installed alone starts with its init script and passes --check-config"
/usr/sbin/loghogd --version || fail "/usr/sbin/loghogd --version, with only loghogd installed"
/usr/sbin/loghogd --check-config --config /etc/loghogd/loghogd.conf ||
    fail "the packaged configuration does not pass --check-config"
"$INIT" start || fail "$INIT start, with only loghogd installed"
"$INIT" status || fail "status after the start of the daemon installed alone"
"$INIT" stop || fail "$INIT stop"

step "start fails, with the daemon's reason, while another program holds port 5566"
/usr/bin/python3 -c 'import socket, time
s = socket.create_server(("127.0.0.1", 5566))
time.sleep(60)' &
LISTENER=$!
wait_until 5 "a listener on port 5566" bash -c '(exec 3<>/dev/tcp/127.0.0.1/5566) 2>/dev/null'
rc=0; "$INIT" start > "$WORK/start.log" 2>&1 || rc=$?
cat "$WORK/start.log"
expect "start with the port taken" "$rc" 1
grep -q 'Address already in use' "$WORK/start.log" || fail "start did not say why it failed"
[ -z "$(loghogd_pids)" ] || fail "a loghogd runs after a failed start"
kill "$LISTENER"; wait "$LISTENER" 2>/dev/null || true; LISTENER=""

step "start (on a real host apt has done this already; here policy-rc.d forbids it)"
"$INIT" start || fail "$INIT start"
pid=$(daemon_pid) || fail "no pidfile after start"
expect "daemon user" "$(stat -c %U "/proc/$pid")" loghog
"$INIT" start || fail "start when already running must succeed"
expect "pid after a second start" "$(daemon_pid)" "$pid"

step "quick start, step 2: add [my-first-app] to /etc/loghogd/facilities.conf and reload"
printf '\n[my-first-app]\nrotate = 0 0 * * *\nbackup_count = 14\n' >> /etc/loghogd/facilities.conf
"$INIT" reload || fail "$INIT reload"
wait_until 10 "the reload in $DAEMON_LOG" grep -q 'reloaded /etc/loghogd/facilities.conf' "$DAEMON_LOG"

step "quick start, step 4: apt-get install python3-loghog (loghogd brought it in already)"
dpkg-query -W -f '${db:Status-Abbrev}\n' python3-loghog 2>/dev/null | grep -q '^ii' ||
    fail "installing loghogd did not install python3-loghog, the library the daemon imports"
"${APT[@]}" install python3-loghog > "$WORK/install.log" 2>&1 || { cat "$WORK/install.log"; fail "install python3-loghog"; }

step "quick start, step 4: the Python snippet, run by /usr/bin/python3"
cat > "$WORK/app.py" <<'EOF'
import logging
from loghog import LoghogHandler

logger = logging.getLogger()

handler = LoghogHandler('my-first-app')

handler.setFormatter(logging.Formatter('%(levelname)s - %(message)s'))
logger.addHandler(handler)
logger.setLevel(logging.DEBUG)

logger.info('Hello world!')
EOF
(cd "$WORK" && /usr/bin/python3 app.py) || fail "the quick start snippet failed"
wait_until 10 "'Hello world!' in $APP_LOG" grep -qF 'Hello world!' "$APP_LOG"
grep -F 'Hello world!' "$APP_LOG"
expect "$APP_LOG owner" "$(stat -c %U "$APP_LOG")" loghog
[ $(( 0$(mode_of "$APP_LOG") & 7 )) -eq 0 ] || fail "$APP_LOG is readable by others: $(mode_of "$APP_LOG")"
[ $(( 0$(mode_of "$(dirname "$APP_LOG")") & 7 )) -eq 0 ] || fail "$(dirname "$APP_LOG") is open to others"

step "a reload with a broken facilities.conf is refused and the daemon keeps running"
cp /etc/loghogd/facilities.conf "$WORK/facilities.conf.good"
printf '\n[broken-app]\nrotate = whenever\n' >> /etc/loghogd/facilities.conf
if "$INIT" reload; then fail "reload accepted a broken facilities.conf"; fi
cp "$WORK/facilities.conf.good" /etc/loghogd/facilities.conf
"$INIT" status >/dev/null || fail "the daemon stopped after a refused reload"

step "status"
"$INIT" status || fail "status of a running daemon must exit 0"

step "restart"
"$INIT" restart || fail "$INIT restart"
new_pid=$(daemon_pid) || fail "no pidfile after restart"
[ "$new_pid" != "$pid" ] || fail "restart kept the same process $pid"
if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = loghogd ]; then
    fail "the old daemon $pid still runs after restart"
fi
expect "daemon user after restart" "$(stat -c %U "/proc/$new_pid")" loghog
sed -i 's/Hello world!/Hello again!/' "$WORK/app.py"
(cd "$WORK" && /usr/bin/python3 app.py) || fail "the snippet failed after restart"
wait_until 10 "'Hello again!' in $APP_LOG" grep -qF 'Hello again!' "$APP_LOG"

step "stop"
"$INIT" stop || fail "$INIT stop"
rc=0; "$INIT" status || rc=$?
expect "status after stop" "$rc" 3
[ -z "$(loghogd_pids)" ] || fail "loghogd still running after stop: $(loghogd_pids | xargs)"
[ ! -e "$PIDFILE" ] || fail "$PIDFILE left after stop"
"$INIT" stop || fail "stop when stopped must succeed"

step "apt-get remove loghogd: logs, configuration and certificates stay"
"${APT[@]}" remove loghogd > "$WORK/remove.log" 2>&1 || { cat "$WORK/remove.log"; fail "remove"; }
for path in "$APP_LOG" /etc/loghogd/facilities.conf /etc/loghogd/certs/loghog-ca.key; do
    [ -e "$path" ] || fail "$path was deleted by remove"
done
grep -q '^\[my-first-app\]' /etc/loghogd/facilities.conf || fail "remove lost the edited facilities.conf"

step "apt-get purge: everything goes"
"${APT[@]}" purge loghogd python3-loghog > "$WORK/purge.log" 2>&1 || { cat "$WORK/purge.log"; fail "purge"; }
left=()
for path in /etc/loghogd /var/log/loghogd /var/lib/loghogd /run/loghogd "$INIT" /etc/default/loghogd \
        /lib/systemd/system/loghogd.service /etc/systemd/system/multi-user.target.wants/loghogd.service \
        /usr/sbin/loghogd /usr/bin/loghog /usr/bin/loghog-server-cert /usr/bin/loghog-client-cert \
        /usr/lib/python3/dist-packages/loghog /usr/lib/python3/dist-packages/loghogd \
        /etc/rc?.d/[SK][0-9][0-9]loghogd; do
    if [ -e "$path" ] || [ -L "$path" ]; then left+=("$path"); fi
done
[ ${#left[@]} -eq 0 ] || fail "left after purge: ${left[*]}"
for pkg in loghogd python3-loghog; do
    if dpkg -s "$pkg" >/dev/null 2>&1; then fail "$pkg is still known to dpkg after purge"; fi
done
[ -z "$(loghogd_pids)" ] || fail "loghogd running after purge: $(loghogd_pids | xargs)"

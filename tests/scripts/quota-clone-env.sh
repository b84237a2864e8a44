#!/bin/bash
# A private Dovecot 2.3 instance whose quota_clone plugin writes to a dict
# server on a UNIX socket, for end-to-end tests with the real client.
#
#   conf=$(tests/scripts/quota-clone-env.sh start <dict socket> <dict name>)
#   doveadm -c "$conf" save -u qc-alice@example.test -m INBOX < message.eml
#   doveadm -c "$conf" expunge -u qc-alice@example.test mailbox INBOX uid 2
#   doveadm -c "$conf" copy -u qc-alice@example.test INBOX mailbox INBOX uid 1
#   doveadm -c "$conf" -f tab mailbox status -u qc-alice@example.test vsize messages INBOX
#   doveadm -c "$conf" -f flow dict get -u qc-alice@example.test proxy:<sock>:<name> priv/quota/storage
#   tests/scripts/quota-clone-env.sh stop
#
# start: stops an instance already running in the same dir, empties the
# mailboxes, writes <dir>/dovecot.conf from tests/fixtures/dovecot-mail.conf.in,
# checks it with doveconf, starts `dovecot -c` (auth only, no listeners) and
# waits for its auth-userdb socket. Prints ONLY the config path on stdout;
# messages go to stderr. The dict socket need not exist yet.
# After every doveadm save/expunge/copy returns, quota_clone has already sent
# its transaction (B, S priv/quota/storage <vsize>, S priv/quota/messages <n>, C)
# on a fresh connection: it flushes at user deinit and waits for the reply.
# stop: SIGTERM to the master (by PID file, checked to be dovecot) and wait.
# Extra arguments of stop are ignored, so `stop <sock> <name>` works too.
#
# Users: qc-alice@example.test, qc-bob@example.test (password "secret"),
# uid/gid nobody/nogroup, homes <dir>/home/<user>, maildir.
#
# Environment:
#   DICT_TEST_SCRATCH   /tmp/dict-rs-test
#   DICT_TEST_QC_DIR    instance dir, default $DICT_TEST_SCRATCH/quota-clone; use
#                       a different one per concurrently running test
#   QC_PLUGIN_EXTRA     extra lines for the plugin { } section (default none)
#   DICT_TEST_START_TIMEOUT  30
set -euo pipefail
umask 022

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FIXTURES="$(cd "$SCRIPT_DIR/../fixtures" && pwd)"
SCRATCH="${DICT_TEST_SCRATCH:-/tmp/dict-rs-test}"
DIR="${DICT_TEST_QC_DIR:-$SCRATCH/quota-clone}"
TIMEOUT="${DICT_TEST_START_TIMEOUT:-30}"
CONF="$DIR/dovecot.conf"
PIDFILE="$DIR/run/master.pid"
USERS=(qc-alice@example.test qc-bob@example.test)

log() { echo "quota-clone-env: $*" >&2; }
die() { echo "quota-clone-env: ERROR: $*" >&2; exit 1; }

read_pid() { head -1 "$1" 2>/dev/null | tr -dc '0-9' || true; }
# live (not zombie) process with this command name
pid_is() {
	local stat
	[ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
	[ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[ "${stat%% *}" != Z ]
}

stop_instance() {
	local pid
	pid=$(read_pid "$PIDFILE")
	if ! pid_is "$pid" dovecot; then
		rm -f "$PIDFILE"
		[ "${1:-}" = quiet ] || log "not running ($DIR)"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true   # the master stops its children
	for _ in $(seq 1 300); do pid_is "$pid" dovecot || { log "stopped (master pid $pid)"; return 0; }; sleep 0.1; done
	log "master pid $pid still alive after 30 s, SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
}

start_instance() {
	local sock=$1 name=$2 u nobody_uid nogroup_gid deadline
	[ "$(id -u)" = 0 ] || die "must run as root"
	command -v dovecot >/dev/null || die "dovecot not found (install: dovecot-core)"
	[ -e /usr/lib/dovecot/modules/lib20_quota_clone_plugin.so ] ||
		die "quota_clone plugin missing (/usr/lib/dovecot/modules/lib20_quota_clone_plugin.so, dovecot-core)"
	case "$sock" in /*) ;; *) sock="$PWD/$sock" ;; esac
	case "$sock$name" in *'|'*|*:*|*[[:space:]]*) die "socket path / dict name must not contain '|', ':' or spaces" ;; esac
	[ -S "$sock" ] || log "note: $sock is not a socket (yet); quota_clone writes will fail until the dict server listens there"

	stop_instance quiet
	nobody_uid=$(id -u nobody); nogroup_gid=$(getent group nogroup | cut -d: -f3)
	rm -rf "${DIR:?}/home" "${DIR:?}/run"
	mkdir -p "$DIR/log" "$DIR/state" "$DIR/run" "$DIR/home"
	# nobody must reach its home: every parent directory needs o+x
	chmod 755 "$SCRATCH" "$DIR" 2>/dev/null || true
	chown "$nobody_uid:$nogroup_gid" "$DIR/home"
	: > "$DIR/users.passwd"
	for u in "${USERS[@]}"; do
		echo "$u:{PLAIN}secret:$nobody_uid:$nogroup_gid::$DIR/home/$u::" >> "$DIR/users.passwd"
	done
	local extra="${QC_PLUGIN_EXTRA:-}"
	extra=${extra//\\/\\\\}; extra=${extra//&/\\&}; extra=${extra//|/\\|}   # sed-safe
	extra=${extra//$'\n'/\\n}
	sed -e "s|@DIR@|$DIR|g" -e "s|@DICT_SOCKET@|$sock|g" -e "s|@DICT_NAME@|$name|g" \
	    -e "s|@PLUGIN_EXTRA@|$extra|g" "$FIXTURES/dovecot-mail.conf.in" > "$CONF"
	doveconf -c "$CONF" -n > "$DIR/doveconf-n.txt" 2>&1 ||
		{ cat "$DIR/doveconf-n.txt" >&2; die "config error in $CONF"; }
	: >> "$DIR/log/dovecot.log"
	dovecot -c "$CONF" </dev/null >"$DIR/log/dovecot.stdout" 2>&1 ||
		{ cat "$DIR/log/dovecot.stdout" >&2; tail -n 20 "$DIR/log/dovecot.log" >&2; die "dovecot did not start"; }
	deadline=$((SECONDS + TIMEOUT))
	until [ -S "$DIR/run/auth-userdb" ] && pid_is "$(read_pid "$PIDFILE")" dovecot; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			tail -n 20 "$DIR/log/dovecot.log" >&2
			die "dovecot not ready after ${TIMEOUT}s"
		fi
		sleep 0.1
	done
	# the user lookup doveadm will do, end to end
	doveadm -c "$CONF" user "${USERS[0]}" >/dev/null 2>"$DIR/log/user-check.err" ||
		{ cat "$DIR/log/user-check.err" >&2; die "userdb lookup of ${USERS[0]} failed"; }
	log "started (master pid $(read_pid "$PIDFILE")), quota_clone_dict = proxy:$sock:$name, log $DIR/log/dovecot.log"
	echo "$CONF"
}

case "${1:-}" in
start)
	[ $# -ge 3 ] || { echo "usage: $0 start <dict socket> <dict name>" >&2; exit 2; }
	start_instance "$2" "$3" ;;
stop) stop_instance ;;
*) echo "usage: $0 start <dict socket> <dict name> | stop" >&2; exit 2 ;;
esac

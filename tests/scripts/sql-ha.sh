#!/bin/bash
# Throwaway SQL backends in the shapes a site beyond one machine runs, for the failover
# tests (tests/tests/sql_failover.rs): each `start` begins from empty data directories.
#
#   tests/scripts/sql-ha.sh mysql start     two independent MariaDB servers, A on
#                                           127.0.0.2 and B on 127.0.0.3 (same port);
#                                           prints the dict-sql connect string (host=A host=B)
#   tests/scripts/sql-ha.sh mysql kill-a    SIGKILL server A and wait until it is gone
#   tests/scripts/sql-ha.sh mysql start-a   start A again on its data directory
#   tests/scripts/sql-ha.sh mysql sql A|B QUERY   rows of QUERY on that server, tab-separated
#   tests/scripts/sql-ha.sh pgsql start     a PostgreSQL primary (A) and a streaming replica
#                                           (B, pg_basebackup) in synchronous replication;
#                                           prints the connect string (libpq host list,
#                                           target_session_attrs=read-write)
#   tests/scripts/sql-ha.sh pgsql crash-a   stop the primary the hard way (immediate)
#   tests/scripts/sql-ha.sh pgsql promote-b promote the replica and wait until it writes
#   tests/scripts/sql-ha.sh pgsql sql A|B QUERY
#   tests/scripts/sql-ha.sh mysql|pgsql stop    stop both servers (by PID file), wait, and
#                                           delete their data directories
#
# Databases `dovecot` (tables of tests/fixtures/schema-*.sql), user dovecot / dovecotpass.
# Environment (all optional):
#   DICT_TEST_SCRATCH         /tmp/dict-rs-test (state under $DICT_TEST_SCRATCH/ha-<shape>)
#   DICT_TEST_HA_MYSQL_PORT   13307 (both MariaDB servers, on their own loopback address)
#   DICT_TEST_HA_PGSQL_PORTS  "15433 15434" (primary, replica; on 127.0.0.1)
#   DICT_TEST_START_TIMEOUT   30
set -euo pipefail
umask 022

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FIXTURES="$(cd "$SCRIPT_DIR/../fixtures" && pwd)"
SCRATCH="${DICT_TEST_SCRATCH:-/tmp/dict-rs-test}"
MYSQL_PORT="${DICT_TEST_HA_MYSQL_PORT:-13307}"
read -r PG_PORT_A PG_PORT_B <<<"${DICT_TEST_HA_PGSQL_PORTS:-15433 15434}"
TIMEOUT="${DICT_TEST_START_TIMEOUT:-30}"
DBUSER=dovecot
DBPASS=dovecotpass

log() { echo "sql-ha: $*" >&2; }
die() { echo "sql-ha: ERROR: $*" >&2; exit 1; }
read_pid() { head -1 "$1" 2>/dev/null | tr -dc '0-9' || true; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && ! grep -q '^[^)]*) Z' "/proc/$1/stat" 2>/dev/null; }
# until DESC CMD...: retry CMD quietly for at most $TIMEOUT s
until_ok() {
	local desc=$1 deadline=$((SECONDS + TIMEOUT))
	shift
	until "$@" >/dev/null 2>&1; do
		[ "$SECONDS" -lt "$deadline" ] || die "$desc: not ready after ${TIMEOUT}s"
		sleep 0.1
	done
}
wait_gone() { local i; for i in $(seq 1 300); do alive "$1" || return 0; sleep 0.1; done; die "pid $1 did not exit"; }

# ---------------------------------------------------------------- mariadb --
MY="$SCRATCH/ha-mysql"
my_addr() { case $1 in A) echo 127.0.0.2 ;; B) echo 127.0.0.3 ;; esac; }
my_root() { mariadb --no-defaults --protocol=socket -S "$MY/$1/s.sock" -uroot "${@:2}"; }

my_start_one() { # A|B: start mariadbd on its existing data dir
	local d="$MY/$1"
	rm -f "$d/s.sock" "$d/s.sock.lock" "$d/pid"
	setsid mariadbd --no-defaults --user=root --datadir="$d/data" --tmpdir="$d" \
		--socket="$d/s.sock" --pid-file="$d/pid" --log-error="$d/err.log" \
		--bind-address="$(my_addr "$1")" --port="$MYSQL_PORT" \
		--skip-log-bin --skip-name-resolve --performance-schema=OFF \
		--character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
		--innodb-buffer-pool-size=16M --innodb-log-file-size=8M \
		--innodb-flush-log-at-trx-commit=1 --innodb-use-native-aio=0 \
		--max-connections=100 </dev/null >"$d/stdout" 2>&1 &
	until_ok "mariadb $1" my_root "$1" -e 'SELECT 1'
}

my_start() {
	my_stop
	rm -rf "$MY"; mkdir -p "$MY/A"
	# one data directory made, copied for B: the servers share nothing after that
	mariadb-install-db --no-defaults --datadir="$MY/A/data" --user=root \
		--auth-root-authentication-method=socket --skip-test-db --skip-name-resolve \
		</dev/null >"$MY/install.log" 2>&1 || { tail -20 "$MY/install.log" >&2; die "mariadb-install-db failed"; }
	mkdir -p "$MY/B"; cp -a "$MY/A/data" "$MY/B/data"
	local s
	for s in A B; do
		my_start_one "$s"
		my_root "$s" <<-SQL
		CREATE DATABASE dovecot CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
		CREATE USER '$DBUSER'@'%' IDENTIFIED BY '$DBPASS';
		GRANT ALL PRIVILEGES ON dovecot.* TO '$DBUSER'@'%';
		SQL
		my_root "$s" dovecot <"$FIXTURES/schema-mysql.sql"
	done
	log "mariadb: A $(my_addr A):$MYSQL_PORT, B $(my_addr B):$MYSQL_PORT"
	echo "host=$(my_addr A) host=$(my_addr B) port=$MYSQL_PORT dbname=dovecot user=$DBUSER password=$DBPASS"
}

# stop_both DIR PIDFILE COMM SIGNAL: servers A and B of DIR, each if its pid is still COMM
stop_both() {
	local dir=$1 pidfile=$2 comm=$3 sig=$4 s pid
	for s in A B; do
		pid=$(read_pid "$dir/$s/$pidfile")
		if alive "$pid" && [ "$(cat "/proc/$pid/comm")" = "$comm" ]; then kill "-$sig" "$pid"; wait_gone "$pid"; fi
	done
}

my_stop() { stop_both "$MY" pid mariadbd TERM; }

# ------------------------------------------------------------- postgresql --
PG="$SCRATCH/ha-pgsql"
pg_bin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1; }
pg_port() { case $1 in A) echo "$PG_PORT_A" ;; B) echo "$PG_PORT_B" ;; esac; }
as_pg() { runuser -u postgres -- "$@"; }
pg_psql() { as_pg psql -X -h "$PG/run" -p "$(pg_port "$1")" -U postgres -v ON_ERROR_STOP=1 -qAt "${@:2}"; }
pg_ctl() { as_pg "$(pg_bin)/pg_ctl" -D "$PG/$1" -l "$PG/$1.log" "${@:2}" </dev/null >"$PG/pg_ctl.out" 2>&1 || { cat "$PG/pg_ctl.out" "$PG/$1.log" >&2; die "pg_ctl ${*:2} ($1) failed"; }; }

pg_conf() { # A|B SYNC: the settings both servers get (rewritten for B after the copy)
	cat >"$PG/$1/ha.conf" <<-PGCONF
	listen_addresses = '127.0.0.1'
	port = $(pg_port "$1")
	unix_socket_directories = '$PG/run'
	max_connections = 60
	shared_buffers = 16MB
	synchronous_commit = on
	# the primary acknowledges a commit only once the replica has it
	synchronous_standby_names = '$2'
	PGCONF
	chown postgres:postgres "$PG/$1/ha.conf"
}

pg_start() {
	pg_stop
	rm -rf "$PG"; mkdir -p "$PG/run"; chown -R postgres:postgres "$PG"; chmod 755 "$SCRATCH" "$PG"
	as_pg "$(pg_bin)/initdb" -D "$PG/A" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
		--encoding=UTF8 --locale=C --no-sync </dev/null >"$PG/initdb.log" 2>&1 ||
		{ tail -20 "$PG/initdb.log" >&2; die "initdb failed"; }
	echo "include 'ha.conf'" >>"$PG/A/postgresql.conf"
	# synchronous only once the replica runs: until then every commit would wait for it
	pg_conf A ''
	pg_ctl A -w start
	pg_psql A -d postgres -c "CREATE ROLE $DBUSER LOGIN PASSWORD '$DBPASS'" -c "CREATE DATABASE dovecot OWNER $DBUSER"
	as_pg psql -X -h "$PG/run" -p "$PG_PORT_A" -U "$DBUSER" -v ON_ERROR_STOP=1 -q dovecot \
		<"$FIXTURES/schema-sqlite.sql" >/dev/null
	# the replica: a base backup that follows the primary's WAL (-R: standby.signal)
	as_pg pg_basebackup -h "$PG/run" -p "$PG_PORT_A" -U postgres -D "$PG/B" -R -X stream -c fast \
		--no-sync >"$PG/basebackup.log" 2>&1 || { cat "$PG/basebackup.log" >&2; die "pg_basebackup failed"; }
	# promoted, B has no replica of its own to wait for
	pg_conf B ''
	pg_ctl B -w start
	pg_conf A '*'
	pg_ctl A reload
	until_ok "replica in sync" pg_sync
	log "postgresql: primary 127.0.0.1:$PG_PORT_A, synchronous replica 127.0.0.1:$PG_PORT_B"
	echo "host=127.0.0.1,127.0.0.1 port=$PG_PORT_A,$PG_PORT_B target_session_attrs=read-write dbname=dovecot user=$DBUSER password=$DBPASS"
}
pg_sync() { [ "$(pg_psql A -d postgres -c "SELECT sync_state FROM pg_stat_replication")" = sync ]; }

pg_stop() { stop_both "$PG" postmaster.pid postgres INT; }

# --------------------------------------------------------------- commands --
[ "$(id -u)" = 0 ] || die "must run as root (mariadbd --user=root, runuser -u postgres)"
shape=${1:-}; cmd=${2:-}
case "$shape $cmd" in
"mysql start") my_start ;;
"mysql stop") my_stop; rm -rf "$MY" ;;
"mysql kill-a")
	pid=$(read_pid "$MY/A/pid"); alive "$pid" || die "mariadb A is not running"
	kill -KILL "$pid"; wait_gone "$pid"; log "mariadb A killed" ;;
"mysql start-a") my_start_one A; log "mariadb A started again" ;;
"mysql sql") my_root "${3:?A or B}" -N -B dovecot -e "${4:?query}" ;;
"pgsql start") pg_start ;;
"pgsql stop") pg_stop; rm -rf "$PG" ;;
"pgsql crash-a") pg_ctl A -m immediate -w stop; log "postgresql primary stopped (immediate)" ;;
"pgsql promote-b")
	pg_ctl B -w promote
	until_ok "promoted replica" test "$(pg_psql B -d postgres -c 'SHOW transaction_read_only')" = off
	log "postgresql replica promoted" ;;
"pgsql sql") pg_psql "${3:?A or B}" -d dovecot -F $'\t' -c "${4:?query}" ;;
*) echo "usage: $0 mysql start|stop|kill-a|start-a|sql A|B QUERY" >&2
   echo "       $0 pgsql start|stop|crash-a|promote-b|sql A|B QUERY" >&2; exit 2 ;;
esac

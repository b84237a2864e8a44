#!/bin/bash
# Throwaway backend services for the test suite: redis-server, MariaDB and
# PostgreSQL, started by hand (no system services), loopback + UNIX sockets
# only, all state under $DICT_TEST_SCRATCH (default /tmp/dict-rs-test).
#
#   tests/scripts/services.sh start    start what is not running; create databases,
#                                      users, tables (idempotent)
#   tests/scripts/services.sh stop     stop what start started (by PID file) and wait;
#                                      also leftover quota-clone-env.sh Dovecots and
#                                      sql-ha.sh servers under $SCRATCH
#   tests/scripts/services.sh status   one line per service; exit 0 if all selected run
#   tests/scripts/services.sh env      `export` lines for the tests: eval "$(... env)"
#   tests/scripts/services.sh reset    empty all test tables (both databases), FLUSHALL
#                                      redis, recreate the SQLite files
#   tests/scripts/services.sh wipe     stop, then delete the whole scratch dir
#   tests/scripts/services.sh crash S  end service S (redis, mysql, pgsql) the hard way, for
#                                      fault tests: SIGKILL, PostgreSQL an immediate stop;
#                                      `DICT_TEST_SERVICES=S start` brings it back
#
# Environment (all optional):
#   DICT_TEST_SCRATCH        /tmp/dict-rs-test
#   DICT_TEST_SERVICES       "redis mysql pgsql redis-ha" (subset to start/require;
#                            redis-ha: Redis Sentinel and Cluster, tests/scripts/redis-ha.sh)
#   DICT_TEST_REDIS_HA_PORT  16380 (first of the 16 ports redis-ha.sh uses)
#   DICT_TEST_REDIS_PORT     16379
#   DICT_TEST_MYSQL_PORT     13306
#   DICT_TEST_PGSQL_PORT     15432
#   DICT_TEST_START_TIMEOUT  30 (seconds each service may take to come up)
#
# `env` prints (values of a service that is not running are `unset` instead):
#   DICT_TEST_SCRATCH DICT_TEST_FIXTURES DICT_TEST_SCRIPTS
#   DICT_TEST_SQLITE_SCHEMA DICT_TEST_MYSQL_SCHEMA DICT_TEST_SQLITE_DB DICT_TEST_SQLITE_DB2
#   DICT_TEST_DOVEADM (/usr/bin/doveadm) DICT_TEST_DOVEADM_CONF (doveadm -c ... dict ...)
#   DICT_TEST_REDIS_HOST/_PORT/_SOCKET/_URL
#   DICT_TEST_MYSQL_HOST/_PORT/_SOCKET/_USER/_PASSWORD/_DB/_DB2/_URL/_URL2
#   DICT_TEST_PGSQL_HOST/_PORT/_SOCKET_DIR/_USER/_PASSWORD/_DB/_DB2/_URL/_URL2
#   DICT_TEST_AVAILABLE      the running services, e.g. "redis mysql pgsql"
#
# Every service runs in its own session (setsid / daemonize / pg_ctl), so a
# Ctrl-C or SIGTERM to the caller's process group does not kill it: call stop.
# A stale scratch dir is fine: dead PID files (also reused PIDs and zombies)
# are ignored, stale sockets removed, and a data dir whose initialisation
# did not finish (no .initialized marker) is recreated.
#
# Layout: $SCRATCH/redis/{redis.pid,redis.log,redis.sock}
#         $SCRATCH/mysql/{data/,mysqld.pid,mysqld.err,mysqld.sock,tmp/}
#         $SCRATCH/pgsql/{data/ (postmaster.pid),run/ (socket dir),postgresql.log}
#         $SCRATCH/sqlite/{dict.db,dict2.db}   $SCRATCH/doveadm/dovecot.conf
# Databases: dovecot + dovecot2 (same tables, tests/fixtures/schema-*.sql),
# user dovecot / password dovecotpass, on MariaDB and PostgreSQL.
set -euo pipefail
umask 022

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
FIXTURES="$REPO_DIR/tests/fixtures"

SCRATCH="${DICT_TEST_SCRATCH:-/tmp/dict-rs-test}"
SERVICES="${DICT_TEST_SERVICES:-redis mysql pgsql redis-ha}"
REDIS_HA="$SCRIPT_DIR/redis-ha.sh"
REDIS_PORT="${DICT_TEST_REDIS_PORT:-16379}"
MYSQL_PORT="${DICT_TEST_MYSQL_PORT:-13306}"
PGSQL_PORT="${DICT_TEST_PGSQL_PORT:-15432}"
TIMEOUT="${DICT_TEST_START_TIMEOUT:-30}"
HOST=127.0.0.1
DB=dovecot
DB2=dovecot2
DBUSER=dovecot
DBPASS=dovecotpass

REDIS_DIR="$SCRATCH/redis"
REDIS_PID="$REDIS_DIR/redis.pid"
REDIS_SOCK="$REDIS_DIR/redis.sock"
MYSQL_DIR="$SCRATCH/mysql"
MYSQL_PID="$MYSQL_DIR/mysqld.pid"
MYSQL_SOCK="$MYSQL_DIR/mysqld.sock"
MYSQL_LOG="$MYSQL_DIR/mysqld.err"
PGSQL_DIR="$SCRATCH/pgsql"
PGSQL_DATA="$PGSQL_DIR/data"
PGSQL_RUN="$PGSQL_DIR/run"
PGSQL_LOG="$PGSQL_DIR/postgresql.log"
SQLITE_DIR="$SCRATCH/sqlite"
DOVEADM_DIR="$SCRATCH/doveadm"

log() { echo "services: $*" >&2; }
die() { echo "services: ERROR: $*" >&2; exit 1; }

# selected SERVICE: is it in DICT_TEST_SERVICES?
selected() { case " $SERVICES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# pid_is PID COMM: PID is alive and its command name is COMM (guards
# against stale PID files whose number was reused by another process,
# and against zombies: PID 1 of a container may never reap them)
pid_is() {
	local stat
	[ -n "$1" ] && [ "$1" -gt 0 ] 2>/dev/null && kill -0 "$1" 2>/dev/null || return 1
	[ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[ "${stat%% *}" != Z ]
}
# alive = exists and is not a zombie
alive() { pid_is "$1" "$(cat "/proc/$1/comm" 2>/dev/null)"; }
read_pid() { head -1 "$1" 2>/dev/null | tr -dc '0-9' || true; }

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# wait_until DESC PID LOG CMD...: retry CMD (quietly) until it succeeds, for at
# most $TIMEOUT s; fail at once with the log tail if PID (if given) dies.
wait_until() {
	local desc=$1 pid=$2 logf=$3 deadline=$((SECONDS + TIMEOUT))
	shift 3
	while ! "$@" >/dev/null 2>&1; do
		if [ -n "$pid" ] && ! alive "$pid"; then
			log "$desc: process $pid exited during startup; last lines of $logf:"
			tail -n 30 "$logf" >&2 2>/dev/null || true
			exit 1
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			log "$desc: not ready after ${TIMEOUT}s; last lines of $logf:"
			tail -n 30 "$logf" >&2 2>/dev/null || true
			exit 1
		fi
		sleep 0.1
	done
}

# stop_pid NAME PID SIGNAL: signal and wait (30 s, then SIGKILL)
stop_pid() {
	local name=$1 pid=$2 sig=$3 i
	kill "-$sig" "$pid" 2>/dev/null || true
	for i in $(seq 1 300); do
		alive "$pid" || { log "$name: stopped (pid $pid)"; return 0; }
		sleep 0.1
	done
	log "$name: pid $pid still alive after 30 s, sending SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	for i in $(seq 1 50); do alive "$pid" || return 0; sleep 0.1; done
	log "$name: pid $pid did not exit"
	return 1
}

check_sock_len() { # a UNIX socket path must fit in sun_path (108 bytes incl. NUL)
	[ "${#1}" -le 107 ] || die "socket path too long (${#1} > 107 bytes): $1; use a shorter DICT_TEST_SCRATCH"
}

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found (install: $2)"; }

pg_bin() {
	local d
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
	[ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] ||
		die "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (install: postgresql)"
	echo "$d"
}

mysql_root() { mariadb --no-defaults --protocol=socket -S "$MYSQL_SOCK" -uroot "$@"; }
pg_admin() { runuser -u postgres -- psql -X -h "$PGSQL_RUN" -p "$PGSQL_PORT" -U postgres -v ON_ERROR_STOP=1 -q "$@"; }
pg_dovecot() { # DB ARGS...: as the dovecot role over the socket (local = trust)
	local db=$1; shift
	PGOPTIONS="-c client_min_messages=warning" psql -X -h "$PGSQL_RUN" -p "$PGSQL_PORT" -U "$DBUSER" -v ON_ERROR_STOP=1 -q "$db" "$@"
}

# ------------------------------------------------------------------ redis --
redis_running() { pid_is "$(read_pid "$REDIS_PID")" redis-server; }

start_redis() {
	need redis-server redis-server; need redis-cli redis-tools
	mkdir -p "$REDIS_DIR"
	check_sock_len "$REDIS_SOCK"
	if redis_running; then
		log "redis: already running (pid $(read_pid "$REDIS_PID"))"
	else
		rm -f "$REDIS_PID" "$REDIS_SOCK"
		port_in_use "$REDIS_PORT" && die "redis: port $HOST:$REDIS_PORT is in use by another process (set DICT_TEST_REDIS_PORT)"
		: > "$REDIS_DIR/redis.log"
		# no persistence at all; loopback + private UNIX socket only
		redis-server --bind "$HOST" --port "$REDIS_PORT" --protected-mode yes \
			--unixsocket "$REDIS_SOCK" --unixsocketperm 777 \
			--save '' --appendonly no --dir "$REDIS_DIR" \
			--daemonize yes --pidfile "$REDIS_PID" --logfile "$REDIS_DIR/redis.log" \
			--databases 16 --maxclients 1000 </dev/null >/dev/null 2>&1 ||
			{ tail -n 30 "$REDIS_DIR/redis.log" >&2; die "redis: redis-server failed to start"; }
		echo "$REDIS_PORT" > "$REDIS_DIR/port"
		wait_until redis "" "$REDIS_DIR/redis.log" redis_ready
		log "redis: started on $HOST:$REDIS_PORT and $REDIS_SOCK (pid $(read_pid "$REDIS_PID"))"
	fi
}
redis_ready() {
	[ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] &&
		[ "$(redis-cli -s "$REDIS_SOCK" ping 2>/dev/null)" = PONG ] && redis_running
}

# ---------------------------------------------------------------- mariadb --
mysql_running() { pid_is "$(read_pid "$MYSQL_PID")" mariadbd; }

start_mysql() {
	need mariadbd mariadb-server; need mariadb-install-db mariadb-server; need mariadb mariadb-client
	mkdir -p "$MYSQL_DIR"
	check_sock_len "$MYSQL_SOCK"
	if mysql_running; then
		log "mariadb: already running (pid $(read_pid "$MYSQL_PID"))"
	else
		rm -f "$MYSQL_PID" "$MYSQL_SOCK" "$MYSQL_SOCK.lock"
		port_in_use "$MYSQL_PORT" && die "mariadb: port $HOST:$MYSQL_PORT is in use by another process (set DICT_TEST_MYSQL_PORT)"
		# A data dir without our marker is from an interrupted first start: redo it.
		if [ ! -f "$MYSQL_DIR/.initialized" ]; then
			log "mariadb: initialising data dir $MYSQL_DIR/data"
			rm -rf "$MYSQL_DIR/data"
			mariadb-install-db --no-defaults --datadir="$MYSQL_DIR/data" --user=root \
				--auth-root-authentication-method=socket --skip-test-db \
				--skip-name-resolve --innodb-use-native-aio=0 \
				</dev/null >"$MYSQL_DIR/install-db.log" 2>&1 ||
				{ tail -n 30 "$MYSQL_DIR/install-db.log" >&2; die "mariadb: mariadb-install-db failed"; }
			touch "$MYSQL_DIR/.initialized"
		fi
		mkdir -p "$MYSQL_DIR/tmp"
		: > "$MYSQL_LOG"
		# --user=root: we are root and own the data dir. Small buffers, no
		# binlog, relaxed durability: this is a throwaway test instance.
		# setsid: own session, so a Ctrl-C in the caller's terminal does not reach it.
		setsid mariadbd --no-defaults --user=root \
			--datadir="$MYSQL_DIR/data" --tmpdir="$MYSQL_DIR/tmp" \
			--socket="$MYSQL_SOCK" --pid-file="$MYSQL_PID" --log-error="$MYSQL_LOG" \
			--bind-address="$HOST" --port="$MYSQL_PORT" \
			--skip-log-bin --skip-name-resolve --performance-schema=OFF \
			--character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
			--innodb-buffer-pool-size=32M --innodb-log-file-size=16M \
			--innodb-log-buffer-size=4M --innodb-flush-log-at-trx-commit=2 \
			--innodb-use-native-aio=0 --key-buffer-size=1M \
			--max-connections=200 \
			</dev/null >"$MYSQL_DIR/mysqld.stdout" 2>&1 &
		local pid=$!
		echo "$MYSQL_PORT" > "$MYSQL_DIR/port"
		wait_until mariadb "$pid" "$MYSQL_LOG" mysql_ready
		log "mariadb: started on $HOST:$MYSQL_PORT and $MYSQL_SOCK (pid $(read_pid "$MYSQL_PID"))"
	fi
	local d
	for d in "$DB" "$DB2"; do
		mysql_root <<-SQL || die "mariadb: creating database $d failed"
		CREATE DATABASE IF NOT EXISTS \`$d\` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
		CREATE USER IF NOT EXISTS '$DBUSER'@'localhost' IDENTIFIED BY '$DBPASS';
		CREATE USER IF NOT EXISTS '$DBUSER'@'$HOST' IDENTIFIED BY '$DBPASS';
		GRANT ALL PRIVILEGES ON \`$d\`.* TO '$DBUSER'@'localhost';
		GRANT ALL PRIVILEGES ON \`$d\`.* TO '$DBUSER'@'$HOST';
		SQL
		mysql_root "$d" < "$FIXTURES/schema-mysql.sql" || die "mariadb: schema for $d failed"
	done
	log "mariadb: databases $DB, $DB2 (user $DBUSER) ready"
}
mysql_ready() { mysql_root -e 'SELECT 1' && mysql_running; }

# ------------------------------------------------------------- postgresql --
pgsql_pid() { read_pid "$PGSQL_DATA/postmaster.pid"; }
pgsql_running() { pid_is "$(pgsql_pid)" postgres; }

start_pgsql() {
	need psql postgresql-client; need runuser util-linux
	id postgres >/dev/null 2>&1 || die "pgsql: OS user postgres missing (install: postgresql)"
	local bin
	bin=$(pg_bin)
	check_sock_len "$PGSQL_RUN/.s.PGSQL.$PGSQL_PORT"
	mkdir -p "$PGSQL_DIR" "$PGSQL_RUN"
	chown postgres:postgres "$PGSQL_DIR" "$PGSQL_RUN"
	chmod 755 "$PGSQL_DIR" "$PGSQL_RUN"
	if pgsql_running; then
		log "postgresql: already running (pid $(pgsql_pid))"
	else
		# stale lock files from an instance that is gone (or a reused PID)
		rm -f "$PGSQL_DATA/postmaster.pid" "$PGSQL_RUN"/.s.PGSQL.*
		port_in_use "$PGSQL_PORT" && die "postgresql: port $HOST:$PGSQL_PORT is in use by another process (set DICT_TEST_PGSQL_PORT)"
		if [ ! -f "$PGSQL_DIR/.initialized" ]; then
			log "postgresql: initialising $PGSQL_DATA"
			rm -rf "$PGSQL_DATA"
			runuser -u postgres -- "$bin/initdb" -D "$PGSQL_DATA" -U postgres \
				--auth-local=trust --auth-host=scram-sha-256 \
				--encoding=UTF8 --locale=C --no-sync \
				</dev/null >"$PGSQL_DIR/initdb.log" 2>&1 ||
				{ tail -n 30 "$PGSQL_DIR/initdb.log" >&2; die "postgresql: initdb failed"; }
			echo "include 'dict-rs-test.conf'" >> "$PGSQL_DATA/postgresql.conf"
			touch "$PGSQL_DIR/.initialized"
		fi
		# rewritten on every start, so that a changed port/scratch takes effect
		cat > "$PGSQL_DATA/dict-rs-test.conf" <<-PGCONF
		# written by tests/scripts/services.sh
		listen_addresses = '$HOST'
		port = $PGSQL_PORT
		unix_socket_directories = '$PGSQL_RUN'
		max_connections = 200
		shared_buffers = 32MB
		# on, as in production: a commit acknowledged before a crash must survive it
		synchronous_commit = on
		PGCONF
		chown postgres:postgres "$PGSQL_DATA/dict-rs-test.conf"
		touch "$PGSQL_LOG"; chown postgres:postgres "$PGSQL_LOG"; : > "$PGSQL_LOG"
		echo "$PGSQL_PORT" > "$PGSQL_DIR/port"
		# pg_ctl -w waits until the server accepts connections; it detaches
		# the postmaster (own session), output goes to the log file.
		runuser -u postgres -- "$bin/pg_ctl" -D "$PGSQL_DATA" -l "$PGSQL_LOG" \
			-w -t "$TIMEOUT" start </dev/null >"$PGSQL_DIR/pg_ctl.out" 2>&1 || {
			cat "$PGSQL_DIR/pg_ctl.out" >&2; tail -n 30 "$PGSQL_LOG" >&2
			die "postgresql: did not start"; }
		wait_until postgresql "" "$PGSQL_LOG" pgsql_ready
		log "postgresql: started on $HOST:$PGSQL_PORT and $PGSQL_RUN (pid $(pgsql_pid))"
	fi
	pg_admin -d postgres <<-SQL || die "postgresql: creating role/databases failed"
	DO \$\$ BEGIN
	  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DBUSER') THEN
	    CREATE ROLE $DBUSER LOGIN PASSWORD '$DBPASS';
	  END IF;
	END \$\$;
	SELECT 'CREATE DATABASE $DB OWNER $DBUSER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB')\\gexec
	SELECT 'CREATE DATABASE $DB2 OWNER $DBUSER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB2')\\gexec
	SQL
	local d
	for d in "$DB" "$DB2"; do
		pg_dovecot "$d" < "$FIXTURES/schema-sqlite.sql" || die "postgresql: schema for $d failed"
	done
	log "postgresql: databases $DB, $DB2 (role $DBUSER) ready"
}
pgsql_ready() { pg_admin -d postgres -Atc 'SELECT 1' && pgsql_running; }

# ---------------------------------------------------- sqlite, doveadm conf --
prepare_files() {
	mkdir -p "$SQLITE_DIR" "$DOVEADM_DIR/run" "$DOVEADM_DIR/state"
	if command -v sqlite3 >/dev/null 2>&1; then
		local f
		for f in dict.db dict2.db; do
			sqlite3 "$SQLITE_DIR/$f" < "$FIXTURES/schema-sqlite.sql" || die "sqlite: schema for $f failed"
		done
		# a real Dovecot dict server runs its dict processes as user dovecot
		# and SQLite writes journal files next to the database
		if id dovecot >/dev/null 2>&1; then chown -R dovecot:dovecot "$SQLITE_DIR"; fi
	else
		log "sqlite3 not found: $SQLITE_DIR/*.db not created"
	fi
	sed -e "s|@DIR@|$DOVEADM_DIR|g" "$FIXTURES/dovecot-doveadm.conf.in" > "$DOVEADM_DIR/dovecot.conf"
}

# A running service keeps the port it was started with (recorded in
# <service dir>/port): env, status, reset and a repeated start use that one.
adopt_running_ports() {
	local f p
	say() { [ "$1" = start ] && log "$2"; return 0; }
	f="$REDIS_DIR/port"; p=$(cat "$f" 2>/dev/null || true)
	if [ -n "$p" ] && redis_running && [ "$p" != "$REDIS_PORT" ]; then
		say "$1" "redis: running on port $p (not $REDIS_PORT): using $p"; REDIS_PORT=$p; fi
	f="$MYSQL_DIR/port"; p=$(cat "$f" 2>/dev/null || true)
	if [ -n "$p" ] && mysql_running && [ "$p" != "$MYSQL_PORT" ]; then
		say "$1" "mariadb: running on port $p (not $MYSQL_PORT): using $p"; MYSQL_PORT=$p; fi
	f="$PGSQL_DIR/port"; p=$(cat "$f" 2>/dev/null || true)
	if [ -n "$p" ] && pgsql_running && [ "$p" != "$PGSQL_PORT" ]; then
		say "$1" "postgresql: running on port $p (not $PGSQL_PORT): using $p"; PGSQL_PORT=$p; fi
}

# ---------------------------------------------------------------- commands --
cmd_start() {
	[ "$(id -u)" = 0 ] || die "must run as root (mariadbd --user=root, runuser -u postgres)"
	mkdir -p "$SCRATCH"
	chmod 755 "$SCRATCH"   # postgres, dovecot and nobody need to traverse it
	local t0=$SECONDS s
	for s in $SERVICES; do
		case "$s" in
		redis|mysql|pgsql|redis-ha) ;;
		*) die "unknown service '$s' in DICT_TEST_SERVICES (known: redis mysql pgsql redis-ha)" ;;
		esac
	done
	# redis first (instant), then MariaDB and PostgreSQL in parallel (their
	# first start initialises a data dir: a few seconds each)
	selected redis && start_redis
	selected redis-ha && bash "$REDIS_HA" start
	local pids=() names=() i rc=0
	for s in mysql pgsql; do
		selected "$s" || continue
		( "start_$s" ) &
		pids+=($!); names+=("$s")
	done
	for i in "${!pids[@]}"; do
		wait "${pids[$i]}" || { rc=1; log "${names[$i]}: start FAILED"; }
	done
	[ "$rc" = 0 ] || die "start failed; running services are left running ('$0 stop' stops them)"
	prepare_files
	log "ready in $((SECONDS - t0)) s ($SERVICES); scratch $SCRATCH"
}

cmd_stop() {
	# everything with a live PID file under $SCRATCH, whatever DICT_TEST_SERVICES says
	local pid f
	# leftover private Dovecot instances of quota-clone-env.sh
	for f in "$SCRATCH"/*/run/master.pid "$SCRATCH"/*/*/run/master.pid; do
		[ -f "$f" ] || continue
		pid=$(read_pid "$f")
		if pid_is "$pid" dovecot; then stop_pid "dovecot ($f)" "$pid" TERM; fi
	done
	# leftover servers of tests/scripts/sql-ha.sh (a failover test that was killed)
	for f in mysql pgsql; do
		if [ -d "$SCRATCH/ha-$f" ]; then DICT_TEST_SCRATCH="$SCRATCH" bash "$SCRIPT_DIR/sql-ha.sh" "$f" stop; fi
	done
	pid=$(read_pid "$REDIS_PID")
	if pid_is "$pid" redis-server; then stop_pid redis "$pid" TERM; else log "redis: not running"; fi
	rm -f "$REDIS_PID"
	bash "$REDIS_HA" stop
	pid=$(read_pid "$MYSQL_PID")
	if pid_is "$pid" mariadbd; then stop_pid mariadb "$pid" TERM; else log "mariadb: not running"; fi
	rm -f "$MYSQL_PID"
	pid=$(pgsql_pid)
	# SIGINT = PostgreSQL "fast" shutdown; the postmaster removes its PID file
	if pid_is "$pid" postgres; then stop_pid postgresql "$pid" INT; else log "postgresql: not running"; fi
}

cmd_status() {
	local rc=0 pid
	pid=$(read_pid "$REDIS_PID")
	if redis_running; then
		echo "redis: running (pid $pid) $HOST:$REDIS_PORT $REDIS_SOCK ping=$(redis-cli -s "$REDIS_SOCK" ping 2>&1)"
	else echo "redis: stopped"; selected redis && rc=3; fi
	pid=$(read_pid "$MYSQL_PID")
	if mysql_running; then
		echo "mariadb: running (pid $pid) $HOST:$MYSQL_PORT $MYSQL_SOCK select1=$(mysql_root -N -e 'SELECT 1' 2>&1)"
	else echo "mariadb: stopped"; selected mysql && rc=3; fi
	pid=$(pgsql_pid)
	if pgsql_running; then
		echo "postgresql: running (pid $pid) $HOST:$PGSQL_PORT $PGSQL_RUN select1=$(pg_admin -d postgres -Atc 'SELECT 1' 2>&1)"
	else echo "postgresql: stopped"; selected pgsql && rc=3; fi
	if bash "$REDIS_HA" status >/dev/null; then echo "redis-ha: running"
	else echo "redis-ha: stopped"; selected redis-ha && rc=3; fi
	return $rc
}

# export lines; variables of a service that is not running are unset, so
# tests can tell "not available" apart from "available" (DICT_TEST_AVAILABLE
# lists the running ones: "redis mysql pgsql")
cmd_env() {
	local running=""
	ex() { local v=${2//\'/\'\\\'\'}; printf "export %s='%s'\n" "$1" "$v"; }
	ex DICT_TEST_SCRATCH "$SCRATCH"
	ex DICT_TEST_FIXTURES "$FIXTURES"
	ex DICT_TEST_SCRIPTS "$SCRIPT_DIR"
	ex DICT_TEST_SQLITE_SCHEMA "$FIXTURES/schema-sqlite.sql"
	ex DICT_TEST_MYSQL_SCHEMA "$FIXTURES/schema-mysql.sql"
	if [ -f "$SQLITE_DIR/dict.db" ]; then
		ex DICT_TEST_SQLITE_DB "$SQLITE_DIR/dict.db"
		ex DICT_TEST_SQLITE_DB2 "$SQLITE_DIR/dict2.db"
	else echo "unset DICT_TEST_SQLITE_DB DICT_TEST_SQLITE_DB2"; fi
	ex DICT_TEST_DOVEADM "$(command -v doveadm || echo /usr/bin/doveadm)"
	if [ -f "$DOVEADM_DIR/dovecot.conf" ]; then ex DICT_TEST_DOVEADM_CONF "$DOVEADM_DIR/dovecot.conf"
	else echo "unset DICT_TEST_DOVEADM_CONF"; fi
	if redis_running; then
		running="$running redis"
		ex DICT_TEST_REDIS_HOST "$HOST"
		ex DICT_TEST_REDIS_PORT "$REDIS_PORT"
		ex DICT_TEST_REDIS_SOCKET "$REDIS_SOCK"
		ex DICT_TEST_REDIS_URL "redis://$HOST:$REDIS_PORT/"
	else
		echo "unset DICT_TEST_REDIS_HOST DICT_TEST_REDIS_PORT DICT_TEST_REDIS_SOCKET DICT_TEST_REDIS_URL"
	fi
	if mysql_running; then
		running="$running mysql"
		ex DICT_TEST_MYSQL_HOST "$HOST"
		ex DICT_TEST_MYSQL_PORT "$MYSQL_PORT"
		ex DICT_TEST_MYSQL_SOCKET "$MYSQL_SOCK"
		ex DICT_TEST_MYSQL_USER "$DBUSER"
		ex DICT_TEST_MYSQL_PASSWORD "$DBPASS"
		ex DICT_TEST_MYSQL_DB "$DB"
		ex DICT_TEST_MYSQL_DB2 "$DB2"
		ex DICT_TEST_MYSQL_URL "mysql://$DBUSER:$DBPASS@$HOST:$MYSQL_PORT/$DB"
		ex DICT_TEST_MYSQL_URL2 "mysql://$DBUSER:$DBPASS@$HOST:$MYSQL_PORT/$DB2"
	else
		echo "unset DICT_TEST_MYSQL_HOST DICT_TEST_MYSQL_PORT DICT_TEST_MYSQL_SOCKET DICT_TEST_MYSQL_USER DICT_TEST_MYSQL_PASSWORD DICT_TEST_MYSQL_DB DICT_TEST_MYSQL_DB2 DICT_TEST_MYSQL_URL DICT_TEST_MYSQL_URL2"
	fi
	if pgsql_running; then
		running="$running pgsql"
		ex DICT_TEST_PGSQL_HOST "$HOST"
		ex DICT_TEST_PGSQL_PORT "$PGSQL_PORT"
		ex DICT_TEST_PGSQL_SOCKET_DIR "$PGSQL_RUN"
		ex DICT_TEST_PGSQL_USER "$DBUSER"
		ex DICT_TEST_PGSQL_PASSWORD "$DBPASS"
		ex DICT_TEST_PGSQL_DB "$DB"
		ex DICT_TEST_PGSQL_DB2 "$DB2"
		ex DICT_TEST_PGSQL_URL "postgres://$DBUSER:$DBPASS@$HOST:$PGSQL_PORT/$DB"
		ex DICT_TEST_PGSQL_URL2 "postgres://$DBUSER:$DBPASS@$HOST:$PGSQL_PORT/$DB2"
	else
		echo "unset DICT_TEST_PGSQL_HOST DICT_TEST_PGSQL_PORT DICT_TEST_PGSQL_SOCKET_DIR DICT_TEST_PGSQL_USER DICT_TEST_PGSQL_PASSWORD DICT_TEST_PGSQL_DB DICT_TEST_PGSQL_DB2 DICT_TEST_PGSQL_URL DICT_TEST_PGSQL_URL2"
	fi
	if bash "$REDIS_HA" status >/dev/null; then
		running="$running redis-ha"
		bash "$REDIS_HA" env
	else
		echo "unset DICT_TEST_REDIS_SENTINELS DICT_TEST_REDIS_MASTER_NAME DICT_TEST_REDIS_CLUSTER DICT_TEST_REDIS_HA_SCRIPT"
	fi
	ex DICT_TEST_AVAILABLE "${running# }"
}

cmd_crash() {
	local pid
	case "${1:-}" in
	redis)
		pid=$(read_pid "$REDIS_PID")
		pid_is "$pid" redis-server || die "redis: not running"
		kill -KILL "$pid" ;;
	mysql)
		pid=$(read_pid "$MYSQL_PID")
		pid_is "$pid" mariadbd || die "mariadb: not running"
		kill -KILL "$pid" ;;
	pgsql)
		pgsql_running || die "postgresql: not running"
		runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$PGSQL_DATA" -m immediate -w stop \
			</dev/null >"$PGSQL_DIR/pg_ctl.out" 2>&1 ||
			{ cat "$PGSQL_DIR/pg_ctl.out" >&2; die "postgresql: immediate stop failed"; } ;;
	*) die "crash: which service? redis, mysql or pgsql" ;;
	esac
	log "${1}: crashed"
}

cmd_reset() {
	local d
	if redis_running; then redis-cli -s "$REDIS_SOCK" flushall >/dev/null && log "redis: flushed"; fi
	if mysql_running; then
		for d in "$DB" "$DB2"; do
			mysql_root "$d" -e 'DELETE FROM quota; DELETE FROM kv; DELETE FROM userkv; DELETE FROM bench;'
		done
		log "mariadb: tables emptied"
	fi
	if pgsql_running; then
		for d in "$DB" "$DB2"; do pg_dovecot "$d" -c 'TRUNCATE quota, kv, userkv, bench'; done
		log "postgresql: tables emptied"
	fi
	rm -f "$SQLITE_DIR"/dict.db* "$SQLITE_DIR"/dict2.db*
	prepare_files
	log "sqlite: $SQLITE_DIR/dict.db, dict2.db recreated"
}

case "${1:-}" in
start|status|env|reset) adopt_running_ports "$1" ;;
esac
case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
reset) cmd_reset ;;
crash) cmd_crash "${2:-}" ;;
wipe)
	case "$SCRATCH" in /|/tmp|/tmp/|"$HOME"|"") die "refusing to remove '$SCRATCH'" ;; esac
	cmd_stop; rm -rf "$SCRATCH"; log "removed $SCRATCH" ;;
*) echo "usage: $0 start|stop|status|env|reset|wipe|crash SERVICE" >&2; exit 2 ;;
esac

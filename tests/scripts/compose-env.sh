#!/bin/bash
# The test suite against the docker compose stack (docker-compose.yml) instead of the
# services tests/scripts/services.sh starts: the same DICT_TEST_* variables, pointing at
# the stack's published ports and volumes.
#
#   docker compose up -d --build --wait
#   tests/scripts/compose-env.sh reset     empty the stack's test tables, FLUSHALL redis,
#                                          fresh SQLite files and doveadm config (local)
#   eval "$(tests/scripts/compose-env.sh env)"
#   cargo test --workspace --all-targets -- --test-threads=2
#
#   tests/scripts/compose-env.sh env       `export` lines, as `services.sh env` prints them
#   tests/scripts/compose-env.sh wait      wait until MariaDB, PostgreSQL and Redis answer
#   tests/scripts/compose-env.sh reset     see above (waits first)
#
# The stack provides the databases; the tests still run here, with the dict-server they
# build, and the local clients they call: sqlite3, mariadb, psql, redis-cli, doveadm and
# dovecot (quota_clone tests). No docker command is run: the ports are the ones
# docker-compose.yml publishes, from the same variables with the same defaults.
#
# Environment (all optional; give docker compose the same values):
#   DICT_COMPOSE_SCRATCH      /tmp/dict-rs-compose   local files of the tests; the stack's
#                                                    Redis socket is in <it>/redis
#   DICT_COMPOSE_MYSQL_PORT   23306
#   DICT_COMPOSE_PGSQL_PORT   25432
#   DICT_COMPOSE_REDIS_PORT   26379
#   DICT_COMPOSE_HOST         127.0.0.1
#   DICT_TEST_START_TIMEOUT   60 (seconds `wait` waits)
#
# The MariaDB and PostgreSQL sockets stay inside their containers:
# DICT_TEST_MYSQL_SOCKET and DICT_TEST_PGSQL_SOCKET_DIR are unset (no test needs them).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
FIXTURES="$REPO_DIR/tests/fixtures"

SCRATCH="${DICT_COMPOSE_SCRATCH:-/tmp/dict-rs-compose}"
HOST="${DICT_COMPOSE_HOST:-127.0.0.1}"
MYSQL_PORT="${DICT_COMPOSE_MYSQL_PORT:-23306}"
PGSQL_PORT="${DICT_COMPOSE_PGSQL_PORT:-25432}"
REDIS_PORT="${DICT_COMPOSE_REDIS_PORT:-26379}"
TIMEOUT="${DICT_TEST_START_TIMEOUT:-60}"
REDIS_SOCK="$SCRATCH/redis/redis.sock"
# as in docker-compose.yml and deploy/mysql/initdb.sql, deploy/pgsql/initdb.sh
DB=dovecot
DB2=dovecot2
DBUSER=dovecot
DBPASS=dovecotpass

log() { echo "compose-env: $*" >&2; }
die() { echo "compose-env: ERROR: $*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
mysql_ready() {
	mariadb --no-defaults -h"$HOST" -P"$MYSQL_PORT" -u"$DBUSER" -p"$DBPASS" -N -B "$DB2" \
		-e 'SELECT COUNT(*) FROM quota' >/dev/null 2>&1
}
pgsql_ready() {
	PGPASSWORD=$DBPASS psql -X -h "$HOST" -p "$PGSQL_PORT" -U "$DBUSER" -At \
		-c 'SELECT COUNT(*) FROM quota' "$DB2" >/dev/null 2>&1
}
redis_ready() { [ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

cmd_wait() {
	local deadline=$((SECONDS + TIMEOUT)) s
	for s in mysql pgsql redis; do
		until "${s}_ready"; do
			[ "$SECONDS" -lt "$deadline" ] ||
				die "$s not ready on $HOST after ${TIMEOUT}s: is the stack up (docker compose up -d --wait)?"
			sleep 0.5
		done
	done
	log "MariaDB :$MYSQL_PORT, PostgreSQL :$PGSQL_PORT, Redis :$REDIS_PORT ready"
}

cmd_reset() {
	cmd_wait
	local d
	for d in "$DB" "$DB2"; do
		mariadb --no-defaults -h"$HOST" -P"$MYSQL_PORT" -u"$DBUSER" -p"$DBPASS" "$d" \
			-e 'DELETE FROM quota; DELETE FROM kv; DELETE FROM userkv; DELETE FROM bench;'
		PGPASSWORD=$DBPASS PGOPTIONS="-c client_min_messages=warning" psql -X -q -h "$HOST" \
			-p "$PGSQL_PORT" -U "$DBUSER" -v ON_ERROR_STOP=1 -c 'TRUNCATE quota, kv, userkv, bench' "$d"
	done
	redis-cli -h "$HOST" -p "$REDIS_PORT" flushall >/dev/null
	log "stack: tables emptied, redis flushed"
	# SQLite files and the doveadm client config: services.sh makes them, and with none
	# of its own services running under this scratch dir that is all its reset does.
	DICT_TEST_SCRATCH="$SCRATCH" bash "$SCRIPT_DIR/services.sh" reset
}

cmd_env() {
	local running=""
	ex() { local v=${2//\'/\'\\\'\'}; printf "export %s='%s'\n" "$1" "$v"; }
	ex DICT_TEST_SCRATCH "$SCRATCH"
	ex DICT_TEST_FIXTURES "$FIXTURES"
	ex DICT_TEST_SCRIPTS "$SCRIPT_DIR"
	ex DICT_TEST_SQLITE_SCHEMA "$FIXTURES/schema-sqlite.sql"
	ex DICT_TEST_MYSQL_SCHEMA "$FIXTURES/schema-mysql.sql"
	if [ -f "$SCRATCH/sqlite/dict.db" ]; then
		ex DICT_TEST_SQLITE_DB "$SCRATCH/sqlite/dict.db"
		ex DICT_TEST_SQLITE_DB2 "$SCRATCH/sqlite/dict2.db"
	else echo "unset DICT_TEST_SQLITE_DB DICT_TEST_SQLITE_DB2"; fi
	ex DICT_TEST_DOVEADM "$(command -v doveadm || echo /usr/bin/doveadm)"
	if [ -f "$SCRATCH/doveadm/dovecot.conf" ]; then ex DICT_TEST_DOVEADM_CONF "$SCRATCH/doveadm/dovecot.conf"
	else echo "unset DICT_TEST_DOVEADM_CONF"; fi
	if port_open "$REDIS_PORT"; then
		running="$running redis"
		ex DICT_TEST_REDIS_HOST "$HOST"
		ex DICT_TEST_REDIS_PORT "$REDIS_PORT"
		ex DICT_TEST_REDIS_SOCKET "$REDIS_SOCK"
		ex DICT_TEST_REDIS_URL "redis://$HOST:$REDIS_PORT/"
	else
		echo "unset DICT_TEST_REDIS_HOST DICT_TEST_REDIS_PORT DICT_TEST_REDIS_SOCKET DICT_TEST_REDIS_URL"
	fi
	if port_open "$MYSQL_PORT"; then
		running="$running mysql"
		ex DICT_TEST_MYSQL_HOST "$HOST"
		ex DICT_TEST_MYSQL_PORT "$MYSQL_PORT"
		ex DICT_TEST_MYSQL_USER "$DBUSER"
		ex DICT_TEST_MYSQL_PASSWORD "$DBPASS"
		ex DICT_TEST_MYSQL_DB "$DB"
		ex DICT_TEST_MYSQL_DB2 "$DB2"
		ex DICT_TEST_MYSQL_URL "mysql://$DBUSER:$DBPASS@$HOST:$MYSQL_PORT/$DB"
		ex DICT_TEST_MYSQL_URL2 "mysql://$DBUSER:$DBPASS@$HOST:$MYSQL_PORT/$DB2"
		echo "unset DICT_TEST_MYSQL_SOCKET"
	else
		echo "unset DICT_TEST_MYSQL_HOST DICT_TEST_MYSQL_PORT DICT_TEST_MYSQL_SOCKET DICT_TEST_MYSQL_USER DICT_TEST_MYSQL_PASSWORD DICT_TEST_MYSQL_DB DICT_TEST_MYSQL_DB2 DICT_TEST_MYSQL_URL DICT_TEST_MYSQL_URL2"
	fi
	if port_open "$PGSQL_PORT"; then
		running="$running pgsql"
		ex DICT_TEST_PGSQL_HOST "$HOST"
		ex DICT_TEST_PGSQL_PORT "$PGSQL_PORT"
		ex DICT_TEST_PGSQL_USER "$DBUSER"
		ex DICT_TEST_PGSQL_PASSWORD "$DBPASS"
		ex DICT_TEST_PGSQL_DB "$DB"
		ex DICT_TEST_PGSQL_DB2 "$DB2"
		ex DICT_TEST_PGSQL_URL "postgres://$DBUSER:$DBPASS@$HOST:$PGSQL_PORT/$DB"
		ex DICT_TEST_PGSQL_URL2 "postgres://$DBUSER:$DBPASS@$HOST:$PGSQL_PORT/$DB2"
		echo "unset DICT_TEST_PGSQL_SOCKET_DIR"
	else
		echo "unset DICT_TEST_PGSQL_HOST DICT_TEST_PGSQL_PORT DICT_TEST_PGSQL_SOCKET_DIR DICT_TEST_PGSQL_USER DICT_TEST_PGSQL_PASSWORD DICT_TEST_PGSQL_DB DICT_TEST_PGSQL_DB2 DICT_TEST_PGSQL_URL DICT_TEST_PGSQL_URL2"
	fi
	ex DICT_TEST_AVAILABLE "${running# }"
}

case "${1:-}" in
env) cmd_env ;;
wait) cmd_wait ;;
reset) cmd_reset ;;
*) echo "usage: $0 env|wait|reset" >&2; exit 2 ;;
esac

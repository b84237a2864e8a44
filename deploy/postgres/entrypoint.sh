#!/bin/sh
# First start (empty $PGDATA): initdb with superuser $POSTGRES_USER (password
# $POSTGRES_PASSWORD, required from TCP clients), database $POSTGRES_DB, then
# /docker-entrypoint-initdb.d/*.sh, all on a server listening on its socket only; then the
# server itself on TCP 5432. Runs as user postgres; extra arguments go to postgres.
set -eu
: "${POSTGRES_USER:?}" "${POSTGRES_PASSWORD:?}" "${POSTGRES_DB:?}"
if [ "$(id -u)" = 0 ]; then
	install -d -o postgres -g postgres -m 0700 "$PGDATA"
	install -d -o postgres -g postgres -m 0775 /run/postgresql
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
[ "${1:-}" = postgres ] && shift
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	echo "postgres-entrypoint: initialising $PGDATA"
	pwfile=$(mktemp)
	printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
	initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
		--auth-host=scram-sha-256 --encoding=UTF8 >/dev/null
	rm -f "$pwfile"
	echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
	pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
	psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
		-c "CREATE DATABASE \"$POSTGRES_DB\""
	for f in /docker-entrypoint-initdb.d/*.sh; do
		[ -e "$f" ] || continue
		echo "postgres-entrypoint: running $f"
		sh "$f"
	done
	pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
	echo "postgres-entrypoint: initialised"
fi
exec postgres -c listen_addresses='*' "$@"

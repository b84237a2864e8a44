#!/bin/sh
# First start (empty /var/lib/mysql): create the data directory, database
# $MARIADB_DATABASE and user $MARIADB_USER (password $MARIADB_PASSWORD, from anywhere),
# then run /docker-entrypoint-initdb.d/*.sql as root, all on a server without networking;
# then the server itself on TCP 3306. Extra arguments go to mariadbd.
set -eu
: "${MARIADB_DATABASE:?}" "${MARIADB_USER:?}" "${MARIADB_PASSWORD:?}"
DATA=/var/lib/mysql
install -d -o mysql -g mysql -m 0755 /run/mysqld
chown mysql:mysql "$DATA"
[ "${1:-}" = mariadbd ] && shift
if [ ! -d "$DATA/mysql" ]; then
	echo "mariadb-entrypoint: initialising $DATA"
	mariadb-install-db --user=mysql --datadir="$DATA" --auth-root-authentication-method=socket \
		--skip-test-db >/dev/null
	mariadbd --user=mysql --skip-networking --socket=/run/mysqld/init.sock "$@" &
	pid=$!
	i=0
	until mariadb-admin --socket=/run/mysqld/init.sock ping >/dev/null 2>&1; do
		i=$((i + 1)); [ "$i" -lt 120 ] || { echo "mariadb-entrypoint: no server" >&2; exit 1; }
		sleep 0.5
	done
	sql() { mariadb --socket=/run/mysqld/init.sock -uroot "$@"; }
	sql <<SQL
CREATE DATABASE IF NOT EXISTS \`$MARIADB_DATABASE\`;
CREATE USER '$MARIADB_USER'@'%' IDENTIFIED BY '$MARIADB_PASSWORD';
GRANT ALL PRIVILEGES ON \`$MARIADB_DATABASE\`.* TO '$MARIADB_USER'@'%';
SQL
	for f in /docker-entrypoint-initdb.d/*.sql; do
		[ -e "$f" ] || continue
		echo "mariadb-entrypoint: running $f"
		sql <"$f"
	done
	mariadb-admin --socket=/run/mysqld/init.sock -uroot shutdown
	wait "$pid" || true
	echo "mariadb-entrypoint: initialised"
fi
exec mariadbd --user=mysql --bind-address=0.0.0.0 --port=3306 "$@"

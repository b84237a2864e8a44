#!/bin/bash
# The system packages the test suite needs, installed when missing (Debian 12, root):
#
#   tests/scripts/install-deps.sh
#
# Only packages that are not installed yet are installed, so a second run (or a
# machine that has them all) does no apt work at all. Then every binary, module
# and OS user the tests use is checked; anything missing is listed and the exit
# status is 1. tests/scripts/run-all.sh runs this first; .ci/run runs run-all.sh.
#
# Environment: DICT_TEST_NO_INSTALL=1  only check, never call apt-get.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(
	# dict clients and reference server: doveadm, quota_clone, dict-sql drivers
	dovecot-core dovecot-sqlite dovecot-mysql dovecot-pgsql
	# backends, started by hand by tests/scripts/services.sh
	redis-server redis-tools redis-sentinel
	mariadb-server mariadb-client
	postgresql postgresql-client
	sqlite3
	# tools used by the scripts and tests
	socat procps util-linux ca-certificates
	# the Debian 13 chroot with the real Dovecot 2.4 (tests/scripts/dovecot24-chroot.sh)
	debootstrap
	# C toolchain for crates with C parts (e.g. bundled SQLite)
	gcc libc6-dev pkg-config
)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

missing_packages=()
if command -v dpkg-query >/dev/null 2>&1; then
	for p in "${PACKAGES[@]}"; do installed "$p" || missing_packages+=("$p"); done
fi

if [ "${#missing_packages[@]}" -gt 0 ]; then
	if [ "${DICT_TEST_NO_INSTALL:-0}" = 1 ]; then
		echo "install-deps: not installed (DICT_TEST_NO_INSTALL=1): ${missing_packages[*]}" >&2
	elif [ "$(id -u)" != 0 ]; then
		echo "install-deps: run as root to install: ${missing_packages[*]}" >&2
		exit 1
	else
		# Keep package maintainer scripts from starting system services (MariaDB,
		# Redis, PostgreSQL, Dovecot on their default ports): the suite runs its own.
		POLICY=/usr/sbin/policy-rc.d
		POLICY_CREATED=0
		if [ ! -e "$POLICY" ]; then
			printf '#!/bin/sh\nexit 101\n' >"$POLICY"
			chmod 755 "$POLICY"
			POLICY_CREATED=1
		fi
		remove_policy() { if [ "$POLICY_CREATED" = 1 ]; then rm -f "$POLICY"; POLICY_CREATED=0; fi; }
		trap remove_policy EXIT
		echo "==> apt-get update"
		apt-get -o Acquire::Retries=3 update
		echo "==> apt-get install ${missing_packages[*]}"
		apt-get -o Acquire::Retries=3 install -y --no-install-recommends \
			-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
			"${missing_packages[@]}" </dev/null
		remove_policy
	fi
else
	echo "install-deps: all ${#PACKAGES[@]} packages installed"
fi

# ------------------------------------------------------ components check ---
missing=()
for b in cargo rustc cc \
	redis-server redis-cli \
	mariadbd mariadb-install-db mariadb \
	psql pg_basebackup runuser setsid \
	dovecot doveadm doveconf \
	sqlite3 socat pgrep; do
	command -v "$b" >/dev/null 2>&1 || missing+=("binary $b")
done
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
for b in initdb pg_ctl postgres; do
	[ -n "$PG_BIN" ] && [ -x "$PG_BIN/$b" ] || missing+=("PostgreSQL server binary $b (/usr/lib/postgresql/*/bin)")
done
for f in /usr/lib/dovecot/modules/lib10_quota_plugin.so \
	/usr/lib/dovecot/modules/lib20_quota_clone_plugin.so \
	/usr/lib/dovecot/modules/dict/libdriver_sqlite.so \
	/usr/lib/dovecot/modules/dict/libdriver_mysql.so \
	/usr/lib/dovecot/modules/dict/libdriver_pgsql.so; do
	[ -e "$f" ] || missing+=("file $f")
done
for u in postgres dovecot dovenull nobody mail; do
	id "$u" >/dev/null 2>&1 || missing+=("OS user $u")
done
getent group nogroup >/dev/null || missing+=("OS group nogroup")
if [ "${#missing[@]}" -gt 0 ]; then
	echo "install-deps: MISSING:" >&2
	printf '  - %s\n' "${missing[@]}" >&2
	exit 1
fi
echo "  cargo:      $(cargo --version)"
echo "  rustc:      $(rustc --version)"
echo "  dovecot:    $(dovecot --version)"
echo "  redis:      $(redis-server --version)"
echo "  mariadb:    $(mariadbd --version)"
echo "  postgresql: $("$PG_BIN/postgres" --version)"
echo "  sqlite3:    $(sqlite3 --version | cut -d' ' -f1)"

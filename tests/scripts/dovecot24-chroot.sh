#!/bin/bash
# A Debian 13 "trixie" chroot with the real Dovecot 2.4 (doveadm, doveconf, the
# dict server, the quota_clone plugin), for the end-to-end tests of
# tests/tests/dovecot24.rs. Built once with debootstrap from Debian's package
# mirror (a few minutes), then reused from the cache directory.
#
#   tests/scripts/dovecot24-chroot.sh setup      build unless present, mount /proc;
#                                                prints the chroot path on stdout
#   tests/scripts/dovecot24-chroot.sh path       prints the chroot path
#   tests/scripts/dovecot24-chroot.sh teardown   unmount /proc (the tree stays)
#   tests/scripts/dovecot24-chroot.sh wipe       teardown, then delete the tree
#
# Run as root on Debian 12 (debootstrap is apt-get installed when missing).
# Concurrent callers are serialised with flock, so two tests may call setup.
# /dev is NOT bind-mounted (an `rm -rf` of the tree would then delete the
# host's device nodes): debootstrap creates the few nodes Dovecot needs.
#
# Environment:
#   DICT_TEST_DOVECOT24_ROOT   /var/cache/dict-rs/dovecot24
#   DICT_TEST_DEBIAN_MIRROR    http://deb.debian.org/debian
set -euo pipefail

ROOT="${DICT_TEST_DOVECOT24_ROOT:-/var/cache/dict-rs/dovecot24}"
MIRROR="${DICT_TEST_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=trixie
# dovecot-mysql/-pgsql only so that doveconf knows the mysql_*/pgsql_* settings
# (the converter's output is checked with the real doveconf).
PKGS="dovecot-core,dovecot-sqlite,dovecot-mysql,dovecot-pgsql,sqlite3"
STAMP="$ROOT/.dict-rs-setup-done"
LOCK="$(dirname "$ROOT")/.$(basename "$ROOT").lock"

log() { echo "dovecot24-chroot: $*" >&2; }
die() { echo "dovecot24-chroot: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"

build() {
	# the stamp names the packages, so a changed list rebuilds the tree
	if [ -x "$ROOT/usr/sbin/dovecot" ] && grep -qx "packages $PKGS" "$STAMP" 2>/dev/null; then
		return 0
	fi
	if ! command -v debootstrap >/dev/null; then
		log "installing debootstrap"
		DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=3 install -y -q \
			--no-install-recommends debootstrap </dev/null >&2 ||
			{ apt-get -o Acquire::Retries=3 update -q >&2 &&
				DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=3 install -y -q \
					--no-install-recommends debootstrap </dev/null >&2; } ||
			die "cannot install debootstrap"
	fi
	# A half-built tree (interrupted run) is started over: debootstrap does not
	# always resume cleanly.
	if [ -e "$ROOT" ]; then
		umount_proc
		log "removing incomplete $ROOT"
		rm -rf --one-file-system "$ROOT"
	fi
	mkdir -p "$ROOT"
	log "debootstrap $SUITE into $ROOT from $MIRROR (a few minutes) ..."
	local t0=$SECONDS
	debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$ROOT" "$MIRROR" >&2 ||
		die "debootstrap failed (log: $ROOT/debootstrap/debootstrap.log)"
	# never let package scripts start services inside the chroot
	printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
	chmod 755 "$ROOT/usr/sbin/policy-rc.d"
	rm -rf "$ROOT/var/cache/apt/archives/"*.deb
	{ echo "packages $PKGS"; echo "dovecot $(chroot "$ROOT" dovecot --version)"; } >"$STAMP"
	log "built in $((SECONDS - t0))s: $(tail -1 "$STAMP")"
}

mount_proc() {
	mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
}

umount_proc() {
	if mountpoint -q "$ROOT/proc" 2>/dev/null; then umount "$ROOT/proc" || umount -l "$ROOT/proc"; fi
}

case "${1:-setup}" in
setup)
	mkdir -p "$(dirname "$ROOT")"
	exec 9>"$LOCK"
	flock 9
	build
	mount_proc
	for n in null zero random urandom; do
		[ -c "$ROOT/dev/$n" ] || die "$ROOT/dev/$n is missing (debootstrap did not create device nodes)"
	done
	echo "$ROOT"
	;;
path) echo "$ROOT" ;;
teardown) umount_proc ;;
wipe)
	umount_proc
	rm -rf --one-file-system "$ROOT" "$LOCK"
	;;
*)
	echo "usage: $0 setup|path|teardown|wipe" >&2
	exit 2
	;;
esac

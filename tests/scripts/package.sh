#!/bin/bash
# The Debian package dict-rs_<version>_amd64.deb: build it, and (CI) install it on this
# machine, try the installed programs, and purge it again.
#
#   tests/scripts/package.sh build   # only build: target/debian/dict-rs_<version>_amd64.deb
#   tests/scripts/package.sh         # build, then as root: dpkg -i, dict-server check,
#                                    # doveadm dict set/get against /usr/bin/dict-server,
#                                    # man page and completions, dpkg --purge, nothing left
#
# build: cargo-deb is installed (cargo install cargo-deb --locked) when missing; a release
# build of the three programs and of dict-rs-docs, which writes the man pages and shell
# completions from their clap definitions; `cargo deb -p dict-server --no-build` packs them
# (crates/dict-server/Cargo.toml, [package.metadata.deb]).
#
# The install test refuses to run when a dict-rs package is already installed (it would
# purge it), and purges its own install on any exit (trap), check failed or not.
# Environment: CARGO (default cargo), CARGO_TARGET_DIR (default target), DOVEADM (default
# doveadm).
# shellcheck disable=SC2317  # cleanup is called from a trap
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
CARGO="${CARGO:-cargo}"
DOVEADM="${DOVEADM:-doveadm}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_DIR/target}"
MODE="${1:-test}"
cd "$REPO_DIR"

say() { echo "package.sh: $*"; }
fail() {
	echo "package.sh: FAILED: $*" >&2
	exit 1
}

build() {
	local t0=$SECONDS
	if ! "$CARGO" deb --version >/dev/null 2>&1; then
		say "installing cargo-deb"
		"$CARGO" install cargo-deb --locked
	fi
	"$CARGO" build --release --locked -p dict-server -p dict-client -p quota-clone -p dict-rs-docs --bins
	rm -rf "$TARGET_DIR/release/docs"
	"$TARGET_DIR/release/dict-rs-docs" "$TARGET_DIR/release/docs" >/dev/null
	# Debian's man pages are gzipped (cargo-deb compresses only the pages it doesn't see as
	# build output)
	gzip -9n "$TARGET_DIR/release/docs/man/"*.1
	# --strip: the release profile keeps line tables (debug = 1) for profiling; the package
	# doesn't need them
	DEB=$("$CARGO" deb -p dict-server --no-build --strip | tail -n 1)
	[ -f "$DEB" ] || fail "cargo deb wrote no package ($DEB)"
	say "built $DEB in $((SECONDS - t0))s"
}

# ------------------------------------------------------------------ build ---
build
[ "$MODE" = build ] && exit 0
[ "$MODE" = test ] || fail "usage: package.sh [build]"

# ----------------------------------------------------------- install test ---
[ "$(id -u)" = 0 ] || fail "the install test runs dpkg: run it as root"
if dpkg-query -W -f '${Status}' dict-rs 2>/dev/null | grep -q 'installed\|config-files'; then
	fail "a dict-rs package is already on this machine; not touching it"
fi
TMP=$(mktemp -d /tmp/dict-rs-deb.XXXXXX)
# the data directory of a service started by an admin is not the package's: only checked
# when absent before
STATE_DIRS=/etc/dict-rs
[ -e /var/lib/dict-rs ] || STATE_DIRS="$STATE_DIRS /var/lib/dict-rs"
SERVER_PID=
INSTALLED=0
cleanup() {
	local rc=$?
	if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true; fi
	if [ "$INSTALLED" = 1 ]; then
		say "purging dict-rs"
		dpkg --purge dict-rs >/dev/null || rc=1
	fi
	rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "dpkg -i $DEB"
INSTALLED=1
dpkg -i "$DEB"
# Every path the package holds (dpkg -L): all of them must be gone after the purge.
dpkg -L dict-rs | sort >"$TMP/files"
say "$(wc -l <"$TMP/files") paths installed"

for bin in dict-server dictctl quota-clone; do
	[ -x "/usr/bin/$bin" ] || fail "/usr/bin/$bin missing"
	"/usr/bin/$bin" --version
	man -w "$bin" >/dev/null || fail "no man page for $bin"
	[ -f "/usr/share/bash-completion/completions/$bin" ] || fail "no bash completion for $bin"
	[ -f "/usr/share/zsh/vendor-completions/_$bin" ] || fail "no zsh completion for $bin"
	[ -f "/usr/share/fish/vendor_completions.d/$bin.fish" ] || fail "no fish completion for $bin"
done
man -w dict-server-check >/dev/null || fail "no man page for dict-server check"
[ -f /etc/dict-rs/dict-rs.toml ] || fail "/etc/dict-rs/dict-rs.toml missing"
grep -qx /etc/dict-rs/dict-rs.toml /var/lib/dpkg/info/dict-rs.conffiles || fail "dict-rs.toml is not a conffile"
for unit in dict-rs.service dict-rs.socket; do
	grep -q "/$unit\$" "$TMP/files" || fail "$unit not in the package"
done
# Nothing enabled: no link to a unit anywhere under /etc/systemd/system.
enabled=$(find /etc/systemd/system -lname '*dict-rs.*' 2>/dev/null)
[ -z "$enabled" ] || fail "units enabled by the install: $enabled"
# Nothing started or enabled by the maintainer scripts (an upgrade try-restarts a running unit).
dpkg-deb -e "$DEB" "$TMP/control"
if grep -nE 'systemctl[^|;]* (enable|start|restart)|deb-systemd-invoke (start|restart)' "$TMP/control"/p*; then
	fail "a maintainer script enables or starts a unit"
fi
grep -q '^ExecStart=/usr/bin/dict-server ' "$(grep '/dict-rs.service$' "$TMP/files")" || fail "the unit does not run /usr/bin/dict-server"
grep -q '^LimitNOFILE=' "$(grep '/dict-rs.service$' "$TMP/files")" || fail "the unit has no LimitNOFILE"
if dpkg-deb -f "$DEB" Depends | grep -q dovecot; then fail "the package depends on Dovecot"; fi

# The shipped configuration, on the embedded SQLite default kept in a temporary directory.
say "dict-server check"
/usr/bin/dict-server --config /etc/dict-rs/dict-rs.toml --data-dir "$TMP/data" check

# doveadm (Dovecot's own client) against the installed server, started by hand.
say "doveadm smoke test"
mkdir -p "$TMP/doveadm/run" "$TMP/doveadm/state"
sed -e "s|@DIR@|$TMP/doveadm|g" tests/fixtures/dovecot-doveadm.conf.in >"$TMP/doveadm/dovecot.conf"
SOCK="$TMP/dict.sock"
/usr/bin/dict-server --data-dir "$TMP/data" --listen "$SOCK" --listen-mode 0600 2>"$TMP/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { cat "$TMP/server.log"; fail "dict-server did not listen on $SOCK"; }
doveadm_() { "$DOVEADM" -c "$TMP/doveadm/dovecot.conf" "$@"; }
doveadm_ dict set -u alice "proxy:$SOCK:quota" priv/quota/storage 1048576
got=$(doveadm_ -f flow dict get -u alice "proxy:$SOCK:quota" priv/quota/storage)
[ "$got" = 1048576 ] || fail "doveadm dict get: '$got', expected '1048576'"
got=$(/usr/bin/dictctl -f flow get -u alice "proxy:$SOCK:quota" priv/quota/storage)
[ "$got" = 1048576 ] || fail "dictctl get: '$got', expected '1048576'"
/usr/bin/quota-clone --dict "proxy:$SOCK:quota" set bob 2048 3
got=$(doveadm_ -f flow dict get -u bob "proxy:$SOCK:quota" priv/quota/messages)
[ "$got" = 3 ] || fail "after quota-clone set: '$got', expected '3'"
kill "$SERVER_PID"
wait "$SERVER_PID" || fail "dict-server exited with status $? on SIGTERM"
SERVER_PID=
say "doveadm dict set/get, dictctl get, quota-clone set: ok"

# ------------------------------------------------------------------ purge ---
say "dpkg --purge dict-rs"
INSTALLED=0
dpkg --purge dict-rs
if dpkg-query -W -f '${Status}' dict-rs 2>/dev/null | grep -q 'installed\|config-files'; then
	fail "dict-rs still known to dpkg after the purge"
fi
left=0
while read -r path; do
	# directories the package shares with others (/usr/bin, /etc, …) stay
	if [ -e "$path" ] && ! [ -d "$path" ]; then echo "left after purge: $path" >&2; left=1; fi
done <"$TMP/files"
for path in $STATE_DIRS /usr/share/doc/dict-rs; do
	if [ -e "$path" ]; then echo "left after purge: $path" >&2; left=1; fi
done
if compgen -G '/var/lib/systemd/deb-systemd-helper-*/*dict-rs*' >/dev/null ||
	compgen -G '/var/lib/systemd/deb-systemd-helper-*/*/*dict-rs*' >/dev/null; then
	echo "left after purge: deb-systemd-helper state of dict-rs" >&2
	left=1
fi
[ "$left" = 0 ] || fail "the purge left files behind"
say "installed, checked and purged: ok"

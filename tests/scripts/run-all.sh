#!/bin/bash
# The whole test suite, one command (run as root from anywhere, e.g. on a fresh
# Debian 12 machine with a Rust toolchain):
#
#   tests/scripts/run-all.sh
#
# 0. tests/scripts/install-deps.sh: apt-get installs the system packages that are
#    missing (nothing when all are there), then checks every component
# 1. cargo build --workspace --all-targets
# 2. tests/scripts/services.sh start (redis, MariaDB, PostgreSQL under
#    $DICT_TEST_SCRATCH); they are stopped again on ANY exit (trap)
# 3. eval "$(services.sh env)", services.sh reset (empty tables, fresh SQLite)
# 4. cargo test --workspace --all-targets -- --test-threads=2
# 5. further steps (see "MORE STEPS" below), the last one the docker compose stack
#    (tests/scripts/compose-ci.sh ci: docker.io installed and dockerd started if needed)
# Prints a summary; exit status non-zero if any step failed.
#
# Environment: everything services.sh reads (DICT_TEST_SCRATCH,
# DICT_TEST_SERVICES, ports), plus
#   CARGO                cargo binary (default: cargo)
#   DICT_TEST_THREADS    --test-threads value (default 2)
#   DICT_TEST_KEEP_SERVICES=1  do not stop the services at the end
#   DICT_TEST_NO_INSTALL=1     never call apt-get (only check the components)
# shellcheck disable=SC2317  # on_exit/on_signal/summary are called from traps
set -uo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
SERVICES_SH="$SCRIPT_DIR/services.sh"
CARGO="${CARGO:-cargo}"
THREADS="${DICT_TEST_THREADS:-2}"
cd "$REPO_DIR" || exit 1

T_START=$SECONDS
STEP_NAMES=()
STEP_RESULTS=()
FAILED=0

# step NAME CMD...: run, time and record one step (output streams through)
step() {
	local name=$1 t0=$SECONDS rc
	shift
	echo
	echo "==> [$name] $*"
	CURRENT_STEP=$name
	"$@" 2>&1
	rc=$?
	CURRENT_STEP=
	STEP_NAMES+=("$name")
	if [ "$rc" = 0 ]; then
		STEP_RESULTS+=("ok     $((SECONDS - t0))s")
	else
		STEP_RESULTS+=("FAILED $((SECONDS - t0))s (exit $rc)")
		FAILED=$((FAILED + 1))
	fi
	return "$rc"
}
skip() { STEP_NAMES+=("$1"); STEP_RESULTS+=("skipped ($2)"); }

summary() {
	local i
	echo
	echo "==================== run-all summary ===================="
	for i in "${!STEP_NAMES[@]}"; do
		printf '  %-28s %s\n' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}"
	done
	echo "  total: $((SECONDS - T_START))s"
	if [ "$FAILED" = 0 ]; then echo "RESULT: PASS"; else echo "RESULT: FAIL ($FAILED step(s) failed)"; fi
	echo "========================================================="
}

SERVICES_STARTED=0
on_exit() {
	local rc=$?
	if [ "$SERVICES_STARTED" = 1 ] && [ "${DICT_TEST_KEEP_SERVICES:-0}" != 1 ]; then
		echo
		echo "==> stopping services"
		"$SERVICES_SH" stop || true
	fi
	summary
	[ "$FAILED" = 0 ] && [ "$rc" = 0 ] || exit 1
	exit 0
}
trap on_exit EXIT
CURRENT_STEP=
on_signal() {
	echo "interrupted${CURRENT_STEP:+ during step [$CURRENT_STEP]}"
	[ -n "$CURRENT_STEP" ] && { STEP_NAMES+=("$CURRENT_STEP"); STEP_RESULTS+=("INTERRUPTED"); }
	FAILED=$((FAILED + 1))
	exit 130
}
trap on_signal INT TERM

# Tests that need a service fail (never skip) when it is missing.
export DICT_TEST_REQUIRE_SERVICES=1

# ---------------------------------------------------------- dependencies ---
if ! step dependencies "$SCRIPT_DIR/install-deps.sh"; then
	skip build "dependencies missing"; skip services "dependencies missing"; skip tests "dependencies missing"
	exit 1
fi

# ----------------------------------------------------------------- build ---
if ! step build "$CARGO" build --workspace --all-targets; then
	skip services "build failed"; skip tests "build failed"
	exit 1
fi

# -------------------------------------------------------------- services ---
SERVICES_STARTED=1
if ! step services "$SERVICES_SH" start; then
	skip tests "services did not start"
	exit 1
fi
# DICT_TEST_* for the tests (redis, MariaDB, PostgreSQL, SQLite, doveadm)
eval "$("$SERVICES_SH" env)"
echo "available services: ${DICT_TEST_AVAILABLE:-none}"
step reset "$SERVICES_SH" reset

# ----------------------------------------------------- Dovecot 2.4 chroot ---
# Debian 13 with the real Dovecot 2.4 for tests/tests/dovecot24.rs: built once with
# debootstrap (~2 min), then reused from /var/cache/dict-rs/dovecot24.
step "dovecot 2.4 chroot" "$SCRIPT_DIR/dovecot24-chroot.sh" setup

# ----------------------------------------------------------------- tests ---
# tests/tests/faults_clients.rs holds 10,000 connections open (the server as many):
# root may raise the hard limit if it is lower.
NOFILE_HARD=$(ulimit -Hn)
if [ "$NOFILE_HARD" != unlimited ] && [ "$NOFILE_HARD" -lt 65536 ]; then ulimit -Hn 65536 2>/dev/null || true; fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
step "cargo test" "$CARGO" test --workspace --lib --bins --tests --examples --no-fail-fast -- --test-threads="$THREADS"
# criterion benchmarks take no libtest flags: run once each, as a smoke test
step "benches (smoke)" "$CARGO" test --workspace --benches --no-fail-fast
step "doc tests" "$CARGO" test --workspace --doc

# ------------------------------------------------------------ MORE STEPS ---
# Add further steps here, each as:   step "<name>" <command> <args...>
# They run with the DICT_TEST_* environment above and the services running;
# a failing step is reported in the summary and makes the exit status 1, the
# following steps still run. Examples:
#   step "doc tests"  "$CARGO" test --workspace --doc
#   step "clippy"     "$CARGO" clippy --workspace --all-targets -- -D warnings
#   step "quota_clone e2e" "$REPO_DIR/tests/scripts/<script>.sh"
step "rustfmt" "$CARGO" fmt --all --check
step "clippy" "$CARGO" clippy --workspace --all-targets -- -D warnings
# the client libraries without their CLIs (no clap, no backends in quota-clone)
step "libraries alone" "$CARGO" clippy -p dict-client -p quota-clone --lib --no-default-features -- -D warnings
# the Debian package: release build, dpkg -i, check and doveadm smoke test, dpkg --purge
step "debian package" "$SCRIPT_DIR/package.sh"
step "dovecot 2.4 chroot teardown" "$SCRIPT_DIR/dovecot24-chroot.sh" teardown
# the docker compose stack for real (README: "Running the stack with docker compose"):
# images built here from Debian packages, mail saved in its Dovecot, the rows in its
# databases, a subset of the service tests against it; dockerd stopped if it started it
step "docker compose stack" "$SCRIPT_DIR/compose-ci.sh" ci
# ------------------------------------------------------- END MORE STEPS ---

exit 0

#!/bin/bash
# The docker compose stack (docker-compose.yml) run for real, as CI runs it
# (tests/scripts/run-all.sh calls `compose-ci.sh ci` after the tests). Run as root on
# Debian 12 from the repository, after `cargo build` (it takes the suite's
# target/debug/dict-server, or $CARGO_TARGET_DIR's):
#
#   tests/scripts/compose-ci.sh ci       every step below, timed; tears everything down
#
# The steps, also callable one by one:
#   engine     apt-get install docker.io docker-compose when missing; start dockerd when
#              none answers (and remember that it did, for `teardown`)
#   base       image debian:bookworm-slim, made with `debootstrap --variant=minbase
#              bookworm` and `docker import` when it is missing (registries are not needed);
#              the tarball is kept in $DICT_COMPOSE_BASE_CACHE for the next run
#   binary     a stripped copy of the built dict-server as target/compose/dict-server
#              (the image's DICT_SERVER_BIN)
#   up         $COMPOSE build --parallel; $COMPOSE up -d
#   wait       until every service of the stack is healthy (Compose v1 has no --wait)
#   check      mail saved in the Dovecot container: the exact quota rows in MariaDB
#              (quota_clone) and PostgreSQL (the dict quota root), a METADATA entry in Redis,
#              dict-server's /metrics
#   suite      the service tests against the stack (compose-env.sh): dict-backend's
#              sql_suite and redis_suite, dict-tests' doveadm
#   down       $COMPOSE down -v, and the images the stack built unless DICT_COMPOSE_KEEP_IMAGES=1
#   teardown   stop the dockerd `engine` started and undo its network changes (iptables
#              FORWARD policy and chains, nat rules, docker0, ip_forward)
#
# Compose: `docker compose` (v2) when the docker CLI has it, else Debian's docker-compose 1.29.
# Environment: DICT_COMPOSE_* as docker-compose.yml and compose-env.sh read them, and
#   DICT_COMPOSE_BASE_CACHE   /var/cache/dict-rs/bookworm-minbase.tar
#   DICT_TEST_DEBIAN_MIRROR   http://deb.debian.org/debian
#   DICT_COMPOSE_TIMEOUT      180 (seconds `wait` waits for health)
#   DICT_COMPOSE_KEEP_IMAGES  1: `down` keeps the built images
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
cd "$REPO_DIR"

SCRATCH="${DICT_COMPOSE_SCRATCH:-/tmp/dict-rs-compose}"
BASE_CACHE="${DICT_COMPOSE_BASE_CACHE:-/var/cache/dict-rs/bookworm-minbase.tar}"
MIRROR="${DICT_TEST_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TIMEOUT="${DICT_COMPOSE_TIMEOUT:-180}"
METRICS_PORT="${DICT_COMPOSE_METRICS_PORT:-29137}"
# what `engine` started, for `teardown` (a later call of this script)
STATE="$SCRATCH/dockerd"
SERVICES=(mariadb postgres redis dict-server dovecot)
IMAGES=(dict-rs:latest dict-rs-dovecot:latest dict-rs-mariadb:latest dict-rs-postgres:latest dict-rs-redis:latest)
# the mail `check` saves, and its size as Dovecot counts it (quota_vsizes: CRLF line ends)
MAIL='Subject: compose check\r\n\r\nhello from compose-ci\r\n'
MAIL_VSIZE=49
USER_A=alice@example.test

log() { echo "compose-ci: $*" >&2; }
die() {
	echo "compose-ci: ERROR: $*" >&2
	exit 1
}

if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
compose() { "${COMPOSE[@]}" "$@"; }

cmd_engine() {
	local missing=()
	command -v dockerd >/dev/null || missing+=(docker.io)
	command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
	command -v debootstrap >/dev/null || missing+=(debootstrap)
	if [ "${#missing[@]}" -gt 0 ]; then
		log "apt-get install ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" </dev/null >&2 ||
			{ apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" </dev/null >&2; } ||
			die "cannot install ${missing[*]}"
	fi
	if docker info >/dev/null 2>&1; then
		log "dockerd already running: left as it is"
		return
	fi
	mkdir -p "$STATE"
	# the network state dockerd changes, to put back in `teardown`
	iptables -S FORWARD | sed -n 's/^-P FORWARD //p' >"$STATE/forward-policy"
	cat /proc/sys/net/ipv4/ip_forward >"$STATE/ip_forward"
	if ip link show docker0 >/dev/null 2>&1; then echo 1 >"$STATE/docker0-existed"; else echo 0 >"$STATE/docker0-existed"; fi
	log "starting dockerd (log: $STATE/dockerd.log)"
	setsid dockerd --host unix:///var/run/docker.sock --pidfile "$STATE/dockerd.pid" \
		>"$STATE/dockerd.log" 2>&1 </dev/null &
	echo $! >"$STATE/started"
	local deadline=$((SECONDS + 60))
	until docker info >/dev/null 2>&1; do
		[ "$SECONDS" -lt "$deadline" ] || die "dockerd did not answer within 60s: $(tail -5 "$STATE/dockerd.log")"
		sleep 0.5
	done
}

cmd_base() {
	if docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
		log "debian:bookworm-slim present"
		return
	fi
	if [ ! -s "$BASE_CACHE" ]; then
		local root
		root=$(mktemp -d /var/tmp/dict-rs-base.XXXXXX)
		log "debootstrap --variant=minbase bookworm from $MIRROR (a few minutes, once)"
		debootstrap --variant=minbase bookworm "$root" "$MIRROR" >&2 ||
			die "debootstrap failed (log: $root/debootstrap/debootstrap.log)"
		chroot "$root" apt-get clean
		rm -rf "$root"/var/lib/apt/lists/* "$root"/dev/* "$root"/proc/* "$root"/sys/*
		mkdir -p "$(dirname "$BASE_CACHE")"
		tar --numeric-owner -C "$root" -cf "$BASE_CACHE.part" .
		mv "$BASE_CACHE.part" "$BASE_CACHE"
		rm -rf "$root"
	fi
	log "docker import $BASE_CACHE debian:bookworm-slim"
	docker import --change 'CMD ["bash"]' "$BASE_CACHE" debian:bookworm-slim >/dev/null
}

cmd_binary() {
	local bin="${CARGO_TARGET_DIR:-$REPO_DIR/target}/debug/dict-server"
	[ -x "$bin" ] || die "$bin missing: cargo build -p dict-server first"
	mkdir -p target/compose
	strip -o target/compose/dict-server "$bin"
	log "target/compose/dict-server from $bin ($(du -h target/compose/dict-server | cut -f1))"
}

cmd_up() {
	export DICT_SERVER_BIN=target/compose/dict-server
	# Compose v1 builds one image after the other unless told (v2 always in parallel)
	log "${COMPOSE[*]} build --parallel; ${COMPOSE[*]} up -d"
	compose build --parallel
	compose up -d
}

health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1" 2>/dev/null; }

cmd_wait() {
	local deadline=$((SECONDS + TIMEOUT)) s id state pending
	while :; do
		pending=()
		for s in "${SERVICES[@]}"; do
			id=$(compose ps -q "$s" 2>/dev/null || true)
			state=$([ -n "$id" ] && health "$id" || echo missing)
			[ "$state" = healthy ] || pending+=("$s:$state")
		done
		[ "${#pending[@]}" -eq 0 ] && break
		if [ "$SECONDS" -ge "$deadline" ]; then
			compose ps >&2 || true
			compose logs --tail=30 >&2 || true
			die "not healthy after ${TIMEOUT}s: ${pending[*]}"
		fi
		sleep 1
	done
	log "healthy: ${SERVICES[*]}"
}

# poll CMD until its output is EXPECTED (quota_clone writes after the save returns)
expect_output() {
	local what=$1 expected=$2 got="" deadline=$((SECONDS + 20))
	shift 2
	while :; do
		got=$("$@" 2>&1) && [ "$got" = "$expected" ] && break
		[ "$SECONDS" -lt "$deadline" ] || die "$what: expected [$expected], got [$got]"
		sleep 0.5
	done
	log "$what: $got"
}

cmd_check() {
	local dc=(compose exec -T dovecot)
	# from an empty INBOX, so the rows are exact on a second run too
	"${dc[@]}" doveadm expunge -u "$USER_A" mailbox INBOX all
	"${dc[@]}" sh -c "printf '$MAIL' | doveadm save -u $USER_A"
	"${dc[@]}" doveadm quota get -u "$USER_A" >&2
	expect_output "MariaDB quota row (quota_clone, proxy::mysql)" "$USER_A	$MAIL_VSIZE	1" \
		compose exec -T mariadb mariadb -h127.0.0.1 -udovecot -pdovecotpass -N -B dovecot \
		-e "SELECT username, bytes, messages FROM quota WHERE username = '$USER_A'"
	expect_output "PostgreSQL quota row (dict quota root, proxy::pgsql)" "$USER_A|$MAIL_VSIZE|1" \
		compose exec -T postgres psql -X -U dovecot -d dovecot -At \
		-c "SELECT username, bytes, messages FROM quota WHERE username = '$USER_A'"
	"${dc[@]}" doveadm mailbox metadata set -u "$USER_A" INBOX /private/comment "set by compose-ci"
	# Dovecot's key priv/<mailbox guid>/comment, as Redis keeps it: <prefix><user>/<rest>
	local guid key
	guid=$("${dc[@]}" doveadm -f flow mailbox status -u "$USER_A" guid INBOX | sed -n 's/.*guid=//p' | tr -d '\r')
	[ -n "$guid" ] || die "no GUID for $USER_A's INBOX"
	key="dict-rs/$USER_A/$guid/comment"
	expect_output "Redis METADATA $key (proxy::redis)" "set by compose-ci" \
		compose exec -T redis redis-cli get "$key"
	local metrics
	metrics=$(curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics") || die "no /metrics on 127.0.0.1:$METRICS_PORT"
	for m in dict_connections_total dict_operations_total; do
		grep -q "^$m" <<<"$metrics" || die "/metrics has no $m: $metrics"
	done
	# the saves above went through all three dicts
	local d
	for d in mysql pgsql redis; do
		grep -E "^dict_operations_total\{dict=\"$d\",op=\"commit\"\} [1-9]" <<<"$metrics" >&2 ||
			die "/metrics counts no commit on dict $d: $(grep ^dict_operations_total <<<"$metrics")"
	done
}

cmd_suite() {
	bash "$SCRIPT_DIR/compose-env.sh" reset
	eval "$(bash "$SCRIPT_DIR/compose-env.sh" env)"
	export DICT_TEST_REQUIRE_SERVICES=1
	"${CARGO:-cargo}" test -p dict-backend --test sql_suite --test redis_suite -- --test-threads=2
	"${CARGO:-cargo}" test -p dict-tests --test doveadm -- --test-threads=2
}

cmd_down() {
	local t0=$SECONDS
	compose down -v --remove-orphans
	log "stack down in $((SECONDS - t0))s"
	if [ "${DICT_COMPOSE_KEEP_IMAGES:-0}" != 1 ]; then
		t0=$SECONDS
		# the base image too: `base` imports it again from its cached tarball in seconds
		docker image rm "${IMAGES[@]}" debian:bookworm-slim >/dev/null 2>&1 || true
		log "images removed in $((SECONDS - t0))s"
	fi
}

cmd_teardown() {
	[ -f "$STATE/started" ] || {
		log "dockerd was not started here: left running"
		return
	}
	local pid
	pid=$(cat "$STATE/started")
	log "stopping dockerd ($pid)"
	kill "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + 30))
	while kill -0 "$pid" 2>/dev/null; do
		[ "$SECONDS" -lt "$deadline" ] || die "dockerd $pid still running after 30s"
		sleep 0.5
	done
	# its network changes: jumps to its chains, the chains, the masquerade, docker0
	local table rule chain
	for table in filter nat; do
		iptables -t "$table" -S | grep -E -- '-j DOCKER|-o docker0|-i docker0' | grep '^-A' |
			while read -r rule; do
				# shellcheck disable=SC2086  # the rule's words are iptables arguments
				iptables -t "$table" ${rule/#-A/-D} || true
			done
		for chain in $(iptables -t "$table" -S | sed -n 's/^-N \(DOCKER[A-Z0-9_-]*\)$/\1/p'); do
			iptables -t "$table" -F "$chain"
		done
		for chain in $(iptables -t "$table" -S | sed -n 's/^-N \(DOCKER[A-Z0-9_-]*\)$/\1/p'); do
			iptables -t "$table" -X "$chain"
		done
	done
	iptables -P FORWARD "$(cat "$STATE/forward-policy")"
	cat "$STATE/ip_forward" >/proc/sys/net/ipv4/ip_forward
	if [ "$(cat "$STATE/docker0-existed")" = 0 ] && ip link show docker0 >/dev/null 2>&1; then
		ip link delete docker0
	fi
	rm -rf "$STATE"
	log "dockerd stopped, network as before"
}

# `ci`: every step, timed; down and teardown also when a step fails
cmd_ci() {
	local names=() times=() rc=0 s t0
	run() {
		t0=$SECONDS
		log "--- $1"
		# a process of its own: `set -e` holds there (not in a function called in an `if`)
		if "$SCRIPT_DIR/compose-ci.sh" "$1"; then times+=("ok     $((SECONDS - t0))s"); else
			times+=("FAILED $((SECONDS - t0))s")
			rc=1
		fi
		names+=("$1")
	}
	run engine
	for s in base binary up wait check suite; do
		[ "$rc" = 0 ] || break
		run "$s"
	done
	[ "$rc" = 0 ] || compose logs --tail=50 >&2 || true
	run down
	run teardown
	log "steps:"
	for s in "${!names[@]}"; do printf '  %-10s %s\n' "${names[$s]}" "${times[$s]}" >&2; done
	return "$rc"
}

case "${1:-}" in
engine | base | binary | up | wait | check | suite | down | teardown | ci) "cmd_$1" ;;
*)
	echo "usage: $0 ci|engine|base|binary|up|wait|check|suite|down|teardown" >&2
	exit 2
	;;
esac

#!/bin/bash
# Redis in the two distributed shapes the Redis dict supports, for tests/tests/redis_ha.rs:
#   sentinel: one master, one replica, three redis-sentinel processes (master name
#             "dictha", down-after 1000 ms)
#   cluster:  three masters and three replicas made with `redis-cli --cluster create`
#             (cluster-node-timeout 1000 ms)
# Loopback only, no persistence, everything under $DICT_TEST_SCRATCH/redis-ha.
# tests/scripts/services.sh runs it for the service "redis-ha".
#
#   redis-ha.sh start          start both shapes (idempotent: running ones are kept)
#   redis-ha.sh stop           stop every process started here (by PID file) and wait
#   redis-ha.sh status         exit 0 when every process runs
#   redis-ha.sh env            `export` lines for the tests
#   redis-ha.sh restart PORT   start the data node of PORT again (after a test killed it)
#
# Environment: DICT_TEST_SCRATCH (/tmp/dict-rs-test), DICT_TEST_REDIS_HA_PORT (16380: the
# first of 16 ports; sentinel shape on +0..+4, cluster on +10..+15),
# DICT_TEST_START_TIMEOUT (30 s).
set -euo pipefail
umask 022

SCRATCH="${DICT_TEST_SCRATCH:-/tmp/dict-rs-test}"
BASE="${DICT_TEST_REDIS_HA_PORT:-16380}"
TIMEOUT="${DICT_TEST_START_TIMEOUT:-30}"
HOST=127.0.0.1
DIR="$SCRATCH/redis-ha"
MASTER_NAME=dictha
SENTINEL_DATA=("$BASE" "$((BASE + 1))")
SENTINELS=("$((BASE + 2))" "$((BASE + 3))" "$((BASE + 4))")
CLUSTER=("$((BASE + 10))" "$((BASE + 11))" "$((BASE + 12))" "$((BASE + 13))" "$((BASE + 14))" "$((BASE + 15))")

log() { echo "redis-ha: $*" >&2; }
die() { echo "redis-ha: ERROR: $*" >&2; exit 1; }
cli() { redis-cli -h "$HOST" -p "$@"; }
read_pid() { head -1 "$1" 2>/dev/null | tr -dc '0-9' || true; }
running() { # PIDFILE: a redis-server (sentinels too) runs with that PID
	local pid
	pid=$(read_pid "$1")
	[ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ]
}
# wait_for WHAT CMD...: until CMD succeeds, or fail after $TIMEOUT s
wait_for() {
	local what=$1 t0=$SECONDS
	shift
	until "$@" >/dev/null 2>&1; do
		[ $((SECONDS - t0)) -lt "$TIMEOUT" ] || die "$what: not ready after $TIMEOUT s"
		sleep 0.1
	done
}
pong() { [ "$(cli "$1" ping 2>/dev/null)" = PONG ]; }

# data_node PORT [ARGS...]: a redis-server on PORT, its files in $DIR/PORT
data_node() {
	local port=$1 d="$DIR/$1"
	shift
	mkdir -p "$d"
	running "$d/redis.pid" && return 0
	redis-server --bind "$HOST" --port "$port" --protected-mode yes --dir "$d" \
		--save "" --appendonly no --repl-diskless-sync-delay 0 --daemonize yes --pidfile "$d/redis.pid" \
		--logfile "$d/redis.log" "$@" >/dev/null
	wait_for "redis $port" pong "$port"
}

sentinel_node() {
	local port=$1 d="$DIR/$1"
	mkdir -p "$d"
	running "$d/redis.pid" && return 0
	# sentinel rewrites its file: a fresh one each start
	cat > "$d/sentinel.conf" <<-CONF
		bind $HOST
		port $port
		dir $d
		pidfile $d/redis.pid
		logfile $d/sentinel.log
		daemonize yes
		sentinel monitor $MASTER_NAME $HOST ${SENTINEL_DATA[0]} 2
		sentinel down-after-milliseconds $MASTER_NAME 1000
		sentinel failover-timeout $MASTER_NAME 5000
		sentinel parallel-syncs $MASTER_NAME 1
	CONF
	# `redis-server --sentinel` is what Debian's redis-sentinel runs
	redis-server "$d/sentinel.conf" --sentinel >/dev/null
	wait_for "sentinel $port" pong "$port"
}

replica_linked() { cli "${SENTINEL_DATA[0]}" info replication | grep -q '^connected_slaves:1'; }
sentinels_see_all() {
	local s
	for s in "${SENTINELS[@]}"; do
		cli "$s" sentinel master "$MASTER_NAME" | grep -qx 'num-other-sentinels' || return 1
		[ "$(cli "$s" sentinel master "$MASTER_NAME" | sed -n '/^num-other-sentinels$/{n;p}')" = 2 ] || return 1
	done
}

start_sentinel_shape() {
	local whole=1 p
	for p in "${SENTINEL_DATA[@]}" "${SENTINELS[@]}"; do running "$DIR/$p/redis.pid" || whole=0; done
	if [ "$whole" = 1 ]; then
		log "sentinel: running"
		return 0
	fi
	# a shape that is not whole any more (a test stopped half-way) is made again
	for p in "${SENTINEL_DATA[@]}" "${SENTINELS[@]}"; do
		stop_node "$p"
		rm -rf "${DIR:?}/$p"
	done
	data_node "${SENTINEL_DATA[0]}"
	data_node "${SENTINEL_DATA[1]}" --replicaof "$HOST" "${SENTINEL_DATA[0]}"
	for p in "${SENTINELS[@]}"; do sentinel_node "$p"; done
	wait_for "replica of ${SENTINEL_DATA[0]}" replica_linked
	wait_for "sentinels" sentinels_see_all
	log "sentinel: master $HOST:${SENTINEL_DATA[0]}, replica ${SENTINEL_DATA[1]}, sentinels ${SENTINELS[*]}"
}

# stop_node PORT: the process of PORT, if it runs, and wait until it is gone
stop_node() {
	local pid
	running "$DIR/$1/redis.pid" || return 0
	pid=$(read_pid "$DIR/$1/redis.pid")
	kill "$pid" 2>/dev/null || true
	while [ -e "/proc/$pid" ]; do sleep 0.05; done
}

cluster_ok() { local p; for p in "${CLUSTER[@]}"; do cli "$p" cluster info | grep -q '^cluster_state:ok' || return 1; done; }

start_cluster_shape() {
	local p nodes=()
	if running "$DIR/${CLUSTER[0]}/redis.pid" && cluster_ok; then
		log "cluster: running"
		return 0
	fi
	for p in "${CLUSTER[@]}"; do
		# a cluster that is not whole any more is made again from scratch
		stop_node "$p"
		rm -rf "${DIR:?}/$p"
	done
	for p in "${CLUSTER[@]}"; do
		data_node "$p" --cluster-enabled yes --cluster-config-file nodes.conf \
			--cluster-node-timeout 1000 --cluster-replica-validity-factor 0
		nodes+=("$HOST:$p")
	done
	redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 ||
		{ cat "$DIR/create.log" >&2; die "cluster: redis-cli --cluster create failed"; }
	wait_for "cluster state ok" cluster_ok
	log "cluster: ${CLUSTER[*]} (3 masters, 3 replicas)"
}

cmd_start() {
	command -v redis-server >/dev/null || die "redis-server not found (install redis-server)"
	command -v redis-cli >/dev/null || die "redis-cli not found (install redis-tools)"
	mkdir -p "$DIR"
	start_sentinel_shape
	start_cluster_shape
}

cmd_stop() {
	local f pid pids=()
	for f in "$DIR"/*/redis.pid; do
		[ -e "$f" ] || continue
		running "$f" || continue
		pid=$(read_pid "$f")
		kill "$pid" 2>/dev/null && pids+=("$pid")
	done
	for pid in "${pids[@]}"; do
		while [ -e "/proc/$pid" ]; do sleep 0.05; done
	done
	log "stopped ${#pids[@]} process(es)"
}

cmd_status() {
	local p rc=0
	for p in "${SENTINEL_DATA[@]}" "${SENTINELS[@]}" "${CLUSTER[@]}"; do
		if running "$DIR/$p/redis.pid"; then echo "redis-ha $p: running"; else echo "redis-ha $p: stopped"; rc=3; fi
	done
	return "$rc"
}

cmd_env() {
	local list s
	list=""
	for s in "${SENTINELS[@]}"; do list="$list${list:+,}$HOST/$s"; done
	echo "export DICT_TEST_REDIS_SENTINELS=$list"
	echo "export DICT_TEST_REDIS_MASTER_NAME=$MASTER_NAME"
	list=""
	for s in "${CLUSTER[@]}"; do list="$list${list:+,}$HOST/$s"; done
	echo "export DICT_TEST_REDIS_CLUSTER=$list"
	echo "export DICT_TEST_REDIS_HA_SCRIPT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/redis-ha.sh"
}

cmd_restart() {
	local port=${1:?restart: which port?}
	case " ${SENTINEL_DATA[*]} " in
	*" $port "*) data_node "$port" ;;
	*)
		case " ${CLUSTER[*]} " in
		*" $port "*) data_node "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
			--cluster-node-timeout 1000 --cluster-replica-validity-factor 0 ;;
		*) die "restart: $port is no data node of redis-ha" ;;
		esac
		;;
	esac
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
restart) cmd_restart "${2:-}" ;;
*) echo "usage: $0 start|stop|status|env|restart PORT" >&2; exit 2 ;;
esac

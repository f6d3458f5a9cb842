#!/usr/bin/env bash
# Builds the image from the repository's Dockerfile with podman and runs it, as users do
# with docker, then checks what a wrong Dockerfile would break first:
#   - the container runs as the non-root user the Dockerfile makes;
#   - `podman healthcheck run` reports it healthy (no systemd timer here to run it);
#   - its log file is written (logs/ writable by that user);
#   - a PUT sale and a purchase through the published port succeed against the host's Redis
#     and NATS;
#   - SIGTERM (podman stop) drains and exits 0;
#   - docker-compose.yml parses, and every setting it gives flashsale is a documented one; its
#     services are not started (below).
#
# No registry is reachable here, so:
#   - debian:bookworm-slim is made locally with debootstrap (minbase) and imported under that
#     name (users pull it as usual);
#   - the build stage's rust image cannot be pulled either: `--build-context build=…` feeds
#     the stage named `build` a host-built binary, so the runtime stage is built exactly as
#     users build it.
# podman runs with runc (crun fails in this sandbox) and explicit ulimits.
#
#   FLASHSALE_STATE_DIR (/var/tmp/flashsale)  CONTAINER_PORT (free)  FLASHSALE_BINARY
#   (target/debug/flashsale: Debian bookworm's glibc, as in the image)
set -euo pipefail
cd "$(dirname "$0")/.."

STATE_DIR=${FLASHSALE_STATE_DIR:-/var/tmp/flashsale}
BINARY=${FLASHSALE_BINARY:-target/debug/flashsale}
BASE=docker.io/library/debian:bookworm-slim
IMAGE=localhost/flashsale:container-test
RUN=$$
NAME=flashsale-container-test-$RUN
PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
log() { echo "container-test: $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
for tool in podman:podman runc:runc debootstrap:debootstrap slirp4netns:slirp4netns; do
  command -v "${tool%%:*}" >/dev/null 2>&1 && continue
  log "installing ${tool##*:} from Debian packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${tool##*:}" >/dev/null
done

# The base image, made here once per machine (rebuilt from Debian's packages when absent).
if ! "${PODMAN[@]}" image exists "$BASE"; then
  rootfs="$STATE_DIR/debian-bookworm-rootfs"
  log "making $BASE with debootstrap"
  as_root rm -rf "$rootfs"
  as_root debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  as_root tar -C "$rootfs" -c . | "${PODMAN[@]}" import - "$BASE" >/dev/null
  as_root rm -rf "$rootfs"
fi

[ -x "$BINARY" ] || cargo build --locked -q --bin flashsale
context="$STATE_DIR/container-build-$RUN"
mkdir -p "$context/src/target/release"
cp "$BINARY" "$context/src/target/release/flashsale"
cleanup() {
  "${PODMAN[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
  "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1 || true
  rm -rf "$context"
  redis-cli --scan --pattern "fscontainer-$RUN:*" | xargs -r -n 100 redis-cli unlink >/dev/null 2>&1 || true
  python3 -c "import sys; sys.path.insert(0, 'scripts'); import check_observability as c; \
c.delete_streams('nats://127.0.0.1:${DURABLE_NATS_PORT:-4225}', ['FSCONTAINER_$RUN', 'KV_FSCONTAINER_${RUN}_SALES'])" \
    >/dev/null 2>&1 || true
}
trap cleanup EXIT

log "podman build (the Dockerfile's runtime stage, the build stage fed the binary)"
# --format docker: the OCI format has no HEALTHCHECK, and podman builds OCI by default.
"${PODMAN[@]}" build --format docker --pull=never "${LIMITS[@]}" --build-context "build=$context" -t "$IMAGE" . >"$context.build.log" 2>&1 ||
  { cat "$context.build.log" >&2; fail "podman build"; }
rm -f "$context.build.log"

port=${CONTAINER_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
admin=container-admin-$RUN
# The host's Redis and NATS are 10.0.2.2 from inside (slirp4netns with the host's loopback).
"${PODMAN[@]}" run -d --name "$NAME" "${LIMITS[@]}" \
  --network slirp4netns:allow_host_loopback=true -p "127.0.0.1:$port:8080" \
  -e FLASHSALE_REDIS_URL=redis://10.0.2.2:6379 \
  -e FLASHSALE_NATS_URL="nats://10.0.2.2:${DURABLE_NATS_PORT:-4225}" \
  -e FLASHSALE_NAMESPACE="fscontainer-$RUN" -e FLASHSALE_STREAM="FSCONTAINER_$RUN" \
  -e FLASHSALE_SUBJECT_PREFIX="fscontainer-$RUN" -e FLASHSALE_ADMIN_TOKEN="$admin" \
  "$IMAGE" >/dev/null

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { "${PODMAN[@]}" logs "$NAME" >&2; fail "not ready through the published port"; }

uid=$("${PODMAN[@]}" exec "$NAME" id -u)
[ "$uid" != 0 ] || fail "runs as root"
log "runs as uid $uid ($("${PODMAN[@]}" exec "$NAME" id -un))"

"${PODMAN[@]}" healthcheck run "$NAME" || fail "podman healthcheck run: unhealthy"
log "healthcheck: healthy"

status=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $admin" \
  -H 'Content-Type: application/json' -d '{"stock": 3}' "http://127.0.0.1:$port/v1/sales/boxed")
[ "$status" = 201 ] || fail "PUT sale answered $status"
order=$(curl -s -w ' %{http_code}' -X POST -H 'Content-Type: application/json' \
  -d '{"user_id": "u1"}' "http://127.0.0.1:$port/v1/sales/boxed/orders")
[ "${order##* }" = 201 ] || fail "purchase answered ${order##* }: ${order% *}"
log "PUT sale 201, purchase 201: ${order% *}"

lines=$("${PODMAN[@]}" exec "$NAME" sh -c 'wc -l < /app/logs/flashsale.log')
[ "$lines" -gt 0 ] || fail "nothing in /app/logs/flashsale.log"
"${PODMAN[@]}" exec "$NAME" grep -q "sale boxed created" /app/logs/flashsale.log || fail "the sale's creation is not in the log file"
log "logs/flashsale.log written by the non-root user: $lines lines"

"${PODMAN[@]}" stop -t 30 "$NAME" >/dev/null
code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$NAME")
[ "$code" = 0 ] || { "${PODMAN[@]}" logs "$NAME" | tail -20 >&2; fail "exit code $code after SIGTERM"; }
logs=$("${PODMAN[@]}" logs "$NAME" 2>&1)
grep -q "relay drained" <<<"$logs" || { tail -8 <<<"$logs" >&2; fail "no drain on SIGTERM in the log"; }
log "SIGTERM: drained, exit 0"

# The compose file: Debian's podman-compose 1.0 has no `config`, knows no profiles, and stops
# on the cluster profile's per-service network addresses, so it cannot even dry-run this
# file; its images cannot be pulled here either. What is checked: it parses, each service
# that runs flashsale is built from this Dockerfile, and every FLASHSALE_* it sets is a
# setting docs/settings.md documents (a renamed setting would otherwise pass unnoticed).
python3 - <<'PY' || fail "docker-compose.yml"
import re, yaml
compose = yaml.safe_load(open("docker-compose.yml"))
documented = set(re.findall(r"^\| `(FLASHSALE_[A-Z_]+)`", open("docs/settings.md").read(), re.M))
documented |= set(re.findall(r"`(FLASHSALE_[A-Z_]+)`", "".join(
    l for l in open("docs/settings.md") if l.startswith("| `FLASHSALE_"))))
ours = {name: s for name, s in compose["services"].items()
        if s.get("build") or "flashsale" in str(s.get("image", ""))}
assert ours, "no service runs flashsale"
for name, service in ours.items():
    build = service.get("build")
    if build is not None:
        assert build in (".", {"context": "."}) or build.get("context") == ".", f"{name}: built from {build}"
    env = service.get("environment") or {}
    keys = env.keys() if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
    unknown = sorted(k for k in keys if k.startswith("FLASHSALE_") and k not in documented)
    assert not unknown, f"{name} sets settings docs/settings.md does not document: {unknown}"
print(f"container-test: docker-compose.yml: {len(ours)} flashsale services, their settings all documented")
PY
log "ok"

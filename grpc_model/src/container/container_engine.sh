#!/usr/bin/env bash
# Makes a container engine answer to the `docker` client where none does, so the
# integration test can build and run the real image on any Linux CI machine.
#
#   eval "$(scripts/container_engine.sh)"    then: docker build ..., docker run ...
#
# - A Docker engine already answers (`docker info`): does nothing, prints nothing.
# - Otherwise, as root on Debian/Ubuntu with the docker client installed: installs podman
#   (with runc) and debootstrap, starts podman's Docker-compatible service and prints the
#   `export` lines to use it. No registry is needed: the Dockerfile's base image,
#   python:3.11-slim, is made locally with debootstrap once, then cached (see
#   GRPC_MODEL_ENGINE_CACHE below) and loaded from there.
# - Anywhere else: says why and exits 3 (the integration test then uses a local process).
#
#   scripts/container_engine.sh --stop      stops the podman service this script started, if it runs
#
# Idempotent, and every step is bounded in time. Messages go to stderr; exit 1 means a
# step failed. Environment: GRPC_MODEL_ENGINE_CACHE (default /var/cache/grpc-model-engine),
# DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/engine_helpers.sh
source "$here/engine_helpers.sh"

base_image=docker.io/library/python:3.11-slim
cache=${GRPC_MODEL_ENGINE_CACHE:-/var/cache/grpc-model-engine}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { echo "[container-engine] $*" >&2; }
fail() {
  log "error: $*"
  exit 1
}

# The service's process id, written when this script starts it: --stop ends only that process.
service_pid=$cache/service.pid
if [ "${1:-}" = --stop ]; then
  pid=$(cat "$service_pid" 2>/dev/null || true)
  # Still podman's service (a process that ended has no command line left, even before it is reaped).
  is_service() { [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "system service"; }
  if is_service; then
    log "stopping podman's service (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 40); do is_service || break; sleep 0.5; done
    if is_service; then kill -KILL "$pid"; fi
  fi
  rm -f "$service_pid"
  exit 0
fi

if docker_answers; then
  log "a Docker engine answers; nothing to do"
  exit 0
fi
if [ "$(uname -s)" != Linux ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  log "no Docker engine answers, and podman can only be set up here as root on Debian/Ubuntu"
  exit 3
fi
command -v docker >/dev/null 2>&1 ||
  fail "no docker client: install it (Debian: apt-get install docker.io, or docker-ce-cli), then run this again"

mkdir -p "$cache"
# Debian's podman defaults to crun, which fails on hosts with hybrid cgroups; this file
# selects runc, cgroupfs and rlimits a container may set, and replaces the system's files.
# A copy in the cache, because the service outlives the checkout that started it.
cp "$here/containers.conf" "$cache/containers.conf"
export CONTAINERS_CONF=$cache/containers.conf

install_packages() {
  local missing=()
  for tool in podman runc debootstrap; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  bounded 300 apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
    bounded 300 apt-get update -q >/dev/null 2>&1 || fail "apt-get update failed"
    bounded 300 apt-get install -y -q "${missing[@]}" >/dev/null || fail "apt-get install ${missing[*]} failed"
  }
}

rootfs=""
cleanup() {
  if [ -n "$rootfs" ]; then
    # debootstrap may leave proc, sys or dev mounted when it is stopped: never cross into them.
    for mount in proc sys dev/pts dev; do umount -l "$rootfs/$mount" 2>/dev/null || true; done
    rm -rf --one-file-system "$rootfs" "$rootfs.log"
  fi
}
trap cleanup EXIT

# A stand-in for the registry's python:3.11-slim: Debian bookworm's Python 3.11 with venv
# and pip, named so that `FROM python:3.11-slim` resolves to it. It trusts the host's CA
# certificates, because package downloads in a build leave through the host's network.
make_base_image() {
  rootfs=$(mktemp -d /var/tmp/grpc-model-rootfs.XXXXXX)
  log "building $base_image with debootstrap (about a minute, once)"
  # SIGINT: debootstrap unmounts what it mounted on INT, not on TERM.
  timeout -k 10 -s INT 900 debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -n 20 "$rootfs.log" >&2
    fail "debootstrap failed (mirror: $mirror; set DEBIAN_MIRROR to use another)"
  }
  rm -f "$rootfs"/usr/lib/python3.11/EXTERNALLY-MANAGED
  ln -sf /usr/bin/python3 "$rootfs"/usr/local/bin/python
  ln -sf /usr/bin/pip3 "$rootfs"/usr/local/bin/pip
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs"/usr/local/share/ca-certificates/
    bounded 120 chroot "$rootfs" update-ca-certificates >/dev/null 2>&1 ||
      fail "update-ca-certificates failed in the base image"
  fi
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc \
    "$rootfs"/usr/share/man "$rootfs"/usr/share/locale
  local certs=/etc/ssl/certs/ca-certificates.crt
  tar -C "$rootfs" -c . | bounded 300 podman import --quiet \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "ENV SSL_CERT_FILE=$certs" --change "ENV REQUESTS_CA_BUNDLE=$certs" --change "ENV PIP_CERT=$certs" \
    --change 'CMD ["python3"]' - "$base_image" >/dev/null || fail "podman import failed"
  bounded 300 podman save --quiet "$base_image" | gzip -1 >"$cache/python-3.11-slim.tar.gz.part" ||
    fail "podman save failed"
  mv "$cache/python-3.11-slim.tar.gz.part" "$cache/python-3.11-slim.tar.gz"
  log "cached the base image in $cache"
}

ensure_base_image() {
  bounded 60 podman image exists "$base_image" && return
  if [ -s "$cache/python-3.11-slim.tar.gz" ]; then
    log "loading $base_image from $cache"
    gunzip -c "$cache/python-3.11-slim.tar.gz" | bounded 300 podman load --quiet >/dev/null && return
    log "the cached base image did not load; building it again"
  fi
  make_base_image
}

# The service is a daemon: its own session, no terminal, no hold on the checkout, and none
# of this script's file descriptors (a caller waiting for a pipe to close must not wait for it).
started_service=""
start_service() {
  docker_answers && return
  started_service=1
  log "starting podman's Docker-compatible service on $PODMAN_SOCKET"
  mkdir -p "$(dirname "$PODMAN_SOCKET")"
  rm -f "$PODMAN_SOCKET"
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done
    cd /
    exec setsid podman system service --time=0 "unix://$PODMAN_SOCKET" >"$cache/service.log" 2>&1 </dev/null
  ) &
  echo $! >"$service_pid"
  local deadline=$((SECONDS + 20))
  until docker_answers 2; do
    [ $SECONDS -lt $deadline ] || fail "the podman service did not answer within 20 s; see $cache/service.log"
    sleep 0.5
  done
  bounded 120 docker run --rm --network none "$base_image" true ||
    fail "podman answers but cannot run a container here; its settings are in $CONTAINERS_CONF"
}

install_packages
ensure_base_image
# podman's Docker API has no BuildKit: the docker client must use the classic builder.
export DOCKER_HOST=unix://$PODMAN_SOCKET DOCKER_BUILDKIT=0
start_service
log "ready: podman $(bounded 30 podman version --format '{{.Client.Version}}') behind DOCKER_HOST=$DOCKER_HOST"
echo "export DOCKER_HOST=$DOCKER_HOST DOCKER_BUILDKIT=0"
# For a caller that stops what it started (scripts/dev.sh test): set only when this run started the service.
if [ -n "$started_service" ]; then echo "engine_started=1"; fi

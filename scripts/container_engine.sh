#!/usr/bin/env bash
# Makes a container engine answer to the `docker` client where none does, so the
# integration test can build and run the real image on any Linux CI machine.
#
#   eval "$(scripts/container_engine.sh)"    then: docker build ..., docker run ...
#
# - A Docker engine already answers (`docker info`): does nothing, prints nothing.
# - Otherwise, as root on Debian/Ubuntu: installs podman (with runc), starts its
#   Docker-compatible service and prints `export DOCKER_HOST=...` for it. No registry is
#   needed: the Dockerfile's base image, python:3.11-slim, is made locally with
#   debootstrap once, then cached (see GRPC_MODEL_ENGINE_CACHE below) and loaded from there.
# - Anywhere else: says why and exits 3 (the integration test then uses a local process).
#
# Idempotent, and every step is bounded in time. Messages go to stderr; exit 1 means a
# step failed. Environment: GRPC_MODEL_ENGINE_CACHE (default /var/cache/grpc-model-engine),
# DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

base_image=docker.io/library/python:3.11-slim
socket=/run/podman/podman.sock
cache=${GRPC_MODEL_ENGINE_CACHE:-/var/cache/grpc-model-engine}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Debian's podman defaults to crun, which fails on hosts with hybrid cgroups; this file
# selects runc, cgroupfs and rlimits a container may set. It replaces the system's files.
export CONTAINERS_CONF=$here/containers.conf

log() { echo "[container-engine] $*" >&2; }
fail() { log "error: $*"; exit 1; }
docker_answers() { command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; }

if docker_answers; then
  log "a Docker engine answers; nothing to do"
  exit 0
fi
if [ "$(uname -s)" != Linux ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  log "no Docker engine answers, and podman can only be set up here as root on Debian/Ubuntu"
  exit 3
fi

install_packages() {
  local missing=()
  for tool in podman runc debootstrap; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
    timeout 300 apt-get update -q >/dev/null 2>&1 || fail "apt-get update failed"
    timeout 300 apt-get install -y -q "${missing[@]}" >/dev/null || fail "apt-get install ${missing[*]} failed"
  }
}

# A stand-in for the registry's python:3.11-slim: Debian bookworm's Python 3.11 with venv
# and pip, named so that `FROM python:3.11-slim` resolves to it. It trusts the host's CA
# certificates, because package downloads in a build leave through the host's network.
rootfs=""
trap '[ -z "$rootfs" ] || rm -rf "$rootfs"' EXIT
make_base_image() {
  rootfs=$(mktemp -d /var/tmp/grpc-model-rootfs.XXXXXX)
  log "building $base_image with debootstrap (about 2 minutes, once)"
  timeout 900 debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || fail "debootstrap failed; see $rootfs.log"
  rm -f "$rootfs.log"
  rm -f "$rootfs"/usr/lib/python3.11/EXTERNALLY-MANAGED
  ln -sf /usr/bin/python3 "$rootfs"/usr/local/bin/python
  ln -sf /usr/bin/pip3 "$rootfs"/usr/local/bin/pip
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs"/usr/local/share/ca-certificates/
    chroot "$rootfs" update-ca-certificates >/dev/null 2>&1 || fail "update-ca-certificates failed in the base image"
  fi
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc \
    "$rootfs"/usr/share/man "$rootfs"/usr/share/locale
  local certs=/etc/ssl/certs/ca-certificates.crt
  tar -C "$rootfs" -c . | timeout 300 podman import --quiet \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "ENV SSL_CERT_FILE=$certs" --change "ENV REQUESTS_CA_BUNDLE=$certs" --change "ENV PIP_CERT=$certs" \
    --change 'CMD ["python3"]' - "$base_image" >/dev/null || fail "podman import failed"
  mkdir -p "$cache"
  timeout 300 podman save --quiet "$base_image" | gzip -1 >"$cache/python-3.11-slim.tar.gz.part" || fail "podman save failed"
  mv "$cache/python-3.11-slim.tar.gz.part" "$cache/python-3.11-slim.tar.gz"
  log "cached the base image in $cache"
}

ensure_base_image() {
  podman image exists "$base_image" && return
  if [ -s "$cache/python-3.11-slim.tar.gz" ]; then
    log "loading $base_image from $cache"
    gunzip -c "$cache/python-3.11-slim.tar.gz" | timeout 300 podman load --quiet >/dev/null && return
    log "the cached base image did not load; building it again"
  fi
  make_base_image
}

start_service() {
  export DOCKER_HOST=unix://$socket
  docker_answers && return
  log "starting podman's Docker-compatible service on $socket"
  mkdir -p "$(dirname "$socket")" "$cache"
  rm -f "$socket"
  setsid podman system service --time=0 "unix://$socket" >"$cache/service.log" 2>&1 </dev/null &
  for _ in $(seq 40); do
    docker_answers && break
    sleep 0.5
  done
  docker_answers || fail "the podman service did not answer within 20 s; see $cache/service.log"
  timeout 120 docker run --rm --network none "$base_image" true ||
    fail "podman answers but cannot run a container here; its settings are in $CONTAINERS_CONF"
}

install_packages
ensure_base_image
start_service
log "ready: podman $(podman version --format '{{.Client.Version}}') behind DOCKER_HOST=$DOCKER_HOST"
echo "export DOCKER_HOST=$DOCKER_HOST"

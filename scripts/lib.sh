# shellcheck shell=bash
# Shared by scripts/lab, scripts/test and .ci/run: everything a fresh Debian or
# Ubuntu machine needs to run the lab and the tests, installed when missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
CACHE="$ROOT/.cache"
# Bump IMAGE_REV when build_image changes what goes into the image.
IMAGE_REV=3
IMAGE="mlflow-stack/debian12:$IMAGE_REV"
export MLFLOW_STACK_IMAGE="$IMAGE"
mkdir -p "$CACHE"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# ensure_packages [docker]: with "docker", the Docker daemon too.
ensure_packages() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  # Our own client may sit in /usr/local/bin; the daemon is what counts.
  if [ "${1:-}" = docker ]; then command -v dockerd >/dev/null || missing+=(docker.io); fi
  python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    log "Installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

ensure_docker() {
  if docker info >/dev/null 2>&1; then return; fi
  log "Starting dockerd (no daemon answered)"
  as_root sh -c "nohup dockerd >'$CACHE/dockerd.log' 2>&1 &"
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return
    sleep 1
  done
  die "dockerd did not come up; see $CACHE/dockerd.log"
}

# The stack's MLflow release, from the one line that names it.
mlflow_pin() {
  sed -n 's/^mlflow_stack_mlflow_version: *"\([^"]*\)".*/\1/p' "$ROOT/inventories/lab/group_vars/all/00-stack.yml"
}

ensure_venv() {
  local stamp="$VENV/.requirements.sha256"
  local want pin
  pin=$(mlflow_pin)
  [ -n "$pin" ] || die "no mlflow_stack_mlflow_version in inventories/lab/group_vars/all/00-stack.yml"
  want=$({ cat "$ROOT/requirements.txt"; echo "mlflow==$pin"; } | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  log "Installing the pinned controller tooling and the MLflow $pin client into .venv"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  # The tests' client is the stack's release (requirements.txt does not name it).
  "$VENV/bin/pip" install -q -r "$ROOT/requirements.txt" "mlflow==$pin"
  echo "$want" >"$stamp"
}

# The Debian mirror this machine's apt already uses, so the image builds where
# the machine itself can install packages.
debian_mirror() {
  local uri
  uri=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' \
          /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

# A Debian 12 image with systemd, built locally: no registry has images for us.
build_image() {
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then return; fi
  local rootfs="$CACHE/rootfs-bookworm" mirror
  mirror=$(debian_mirror)
  log "Building $IMAGE with debootstrap from $mirror"
  as_root rm -rf "$rootfs"
  as_root debootstrap --variant=minbase \
    --include=python3,systemd,systemd-sysv,iproute2,ca-certificates,procps,sudo,python3-apt \
    bookworm "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
    || die "debootstrap failed; see $CACHE/debootstrap.log"
  # A container's systemd has no use for these, and they fail without a real host.
  as_root rm -f "$rootfs"/etc/systemd/system/*.wants/systemd-timesyncd.service
  as_root sh -c "echo 'deb $mirror bookworm main' > '$rootfs/etc/apt/sources.list'"
  as_root sh -c "tar -C '$rootfs' -c . | docker import -c 'CMD [\"/lib/systemd/systemd\"]' - '$IMAGE'" >/dev/null
  as_root rm -rf "$rootfs"
}

# The MinIO build (minio_binary_source=build) runs Go on this controller.
ensure_go() {
  if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
    export PATH="$PATH:/usr/local/go/bin"
  fi
  command -v go >/dev/null \
    || die "Go 1.24+ is needed to build MinIO (README: How the MinIO binary is provided)"
}

# What the lab VMs and any converge need: no Docker.
bootstrap_tools() {
  ensure_go
  ensure_packages "$@"
  ensure_venv
  export PATH="$VENV/bin:$PATH"
  export ANSIBLE_CONFIG="$ROOT/ansible.cfg"
}

# Everything, the container lab's and scenarios' Docker and image too.
bootstrap() {
  bootstrap_tools docker
  ensure_docker
  build_image
}

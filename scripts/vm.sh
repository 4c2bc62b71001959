# shellcheck shell=bash
# Lab VMs: QEMU boots the image from vm/image.sh straight into its kernel, on
# a copy-on-write overlay, with SSH and the published ports forwarded to
# 127.0.0.1. Several VMs also share a network of their own (QEMU's socket
# networking over a multicast group on the loopback device), so they reach each
# other at fixed addresses and nothing else is ever used.
# Sourced after lib.sh and vm/image.sh, with LAB set.

ensure_qemu() {
  local missing=()
  command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
  command -v qemu-img >/dev/null || missing+=(qemu-utils)
  command -v ssh-keygen >/dev/null || missing+=(openssh-client)
  if [ ${#missing[@]} -gt 0 ]; then
    log "Installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# qemu_accel IMAGE_DIR: KVM when it boots this image's kernel here, else TCG,
# which runs the same VMs several times slower. /dev/kvm can be there and
# start a VM, yet hang a kernel at its entry (nested virtualisation on some
# hosts): the probe boots the kernel for up to 20 s and looks for its banner.
# The answer is kept per image in IMAGE_DIR/accel.
qemu_accel() {
  local image=$1 accel=tcg
  if [ ! -f "$image/accel" ]; then
    if [ -w /dev/kvm ]; then
      timeout 20 qemu-system-x86_64 -enable-kvm -cpu qemu64 -machine q35 -m 512 -nodefaults -display none \
        -kernel "$image/vmlinuz" -append "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1" -no-reboot \
        -serial "file:$image/accel-probe.log" >/dev/null 2>&1 || true
      grep -q "Linux version" "$image/accel-probe.log" 2>/dev/null && accel=kvm
    fi
    echo "$accel" >"$image/accel"
  fi
  if [ "$(cat "$image/accel")" = kvm ]; then
    echo "-enable-kvm -cpu qemu64"
  else
    echo "-accel tcg,thread=multi -cpu max"
  fi
}

# The lab VMs of a topology, from its inventory (inventories/lab-vm*), one
# line each: name ssh_port memory_mib address forwards (host:guest,...; "-"
# when none). The inventory is the one description of the topology.
vm_topology() {
  local inventory=$1
  ansible-inventory -i "$inventory" --list 2>/dev/null | python3 -c '
import json, sys
meta = json.load(sys.stdin)["_meta"]["hostvars"]
for name in sorted(meta):
    v = meta[name]
    print(name, v["ansible_port"], v.get("lab_vm_memory", 2048), v.get("lab_vm_address", "-"),
          ",".join(v.get("lab_vm_forwards", [])) or "-")
'
}

# boot_vm NAME IMAGE_DIR SSH_PORT MEMORY ADDRESS FORWARDS: starts VM NAME
# (unless it runs) on an overlay of the image in .lab/vm/NAME. Its SSH is on
# 127.0.0.1:SSH_PORT and each host:guest pair of FORWARDS on 127.0.0.1:host;
# ADDRESS (or "-") is its address on the VMs' own network.
boot_vm() {
  local name=$1 image=$2 ssh_port=$3 memory=$4 address=$5 forwards=$6
  local dir="$LAB/vm/$name" hostfwd="hostfwd=tcp:127.0.0.1:$ssh_port-:22" pair
  if [ -f "$dir/qemu.pid" ] && kill -0 "$(cat "$dir/qemu.pid")" 2>/dev/null; then return; fi
  if [ "$forwards" != - ]; then
    for pair in ${forwards//,/ }; do hostfwd+=",hostfwd=tcp:127.0.0.1:${pair%%:*}-:${pair##*:}"; done
  fi
  mkdir -p "$dir"
  [ -f "$dir/disk.qcow2" ] || qemu-img create -q -f qcow2 -F raw -b "$image/disk.raw" "$dir/disk.qcow2"
  # The VM's SSH host key is made here, so the controller knows it before the first connection.
  [ -f "$dir/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C "$name" -f "$dir/ssh_host_ed25519_key"
  local net=()
  if [ "$address" != - ]; then
    # The last byte of the address makes the NIC's MAC unique on the shared network.
    net=(-netdev "socket,id=n1,mcast=230.0.77.1:47701,localaddr=127.0.0.1"
         -device "virtio-net-pci,netdev=n1,mac=52:54:00:77:00:$(printf '%02x' "${address##*.}")"
         -fw_cfg "name=opt/mlflow-lab/address,string=$address/24")
  fi
  # VM_NICE lowers QEMU's CPU priority, so the VMs take what other work leaves idle.
  # shellcheck disable=SC2046 # qemu_accel prints several options
  nice -n "${VM_NICE:-0}" qemu-system-x86_64 $(qemu_accel "$image") -machine q35 -m "$memory" -smp "${VM_CPUS:-2}" \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append "root=LABEL=root rw console=ttyS0 net.ifnames=0" \
    -drive "file=$dir/disk.qcow2,if=virtio,format=qcow2" \
    -netdev "user,id=n0,$hostfwd" -device virtio-net-pci,netdev=n0 \
    "${net[@]}" \
    -fw_cfg "name=opt/mlflow-lab/hostname,string=$name" \
    -fw_cfg "name=opt/mlflow-lab/authorized_keys,file=$LAB/id_ed25519.pub" \
    -fw_cfg "name=opt/mlflow-lab/ssh_host_ed25519_key,file=$dir/ssh_host_ed25519_key" \
    -display none -serial "file:$dir/console.log" -daemonize -pidfile "$dir/qemu.pid" \
    || die "QEMU did not start $name"
  printf '[127.0.0.1]:%s %s\n' "$ssh_port" "$(cut -d' ' -f1,2 "$dir/ssh_host_ed25519_key.pub")" >"$dir/known_hosts"
}

# wait_for_ssh PORT: until the VM on PORT lets the lab user in (its boot).
wait_for_ssh() {
  local port=$1
  for _ in $(seq 1 300); do
    ssh -q -i "$LAB/id_ed25519" -p "$port" -o BatchMode=yes -o ConnectTimeout=2 \
      -o UserKnownHostsFile="$LAB/known_hosts" lab@127.0.0.1 true 2>/dev/null && return
    sleep 1
  done
  die "no SSH on 127.0.0.1:$port after 300 s"
}

ensure_lab_key() {
  mkdir -p "$LAB"
  chmod 700 "$LAB"
  [ -f "$LAB/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C mlflow-lab -f "$LAB/id_ed25519"
}

# vms_up INVENTORY: boots the topology's VMs and waits for their SSH.
vms_up() {
  local inventory=$1 image start=$SECONDS name port memory address forwards topology
  ensure_qemu
  ensure_lab_key
  image=$(build_vm_image)
  [ "$(qemu_accel "$image" | cut -d' ' -f1)" = -enable-kvm ] \
    || printf 'warning: KVM does not boot a kernel on this machine: the VMs run under TCG emulation, several times slower\n' >&2
  # ansible-inventory takes seconds: read the topology once.
  topology=$(vm_topology "$inventory")
  : >"$LAB/known_hosts.tmp"
  while read -r name port memory address forwards; do
    boot_vm "$name" "$image" "$port" "$memory" "$address" "$forwards"
    cat "$LAB/vm/$name/known_hosts" >>"$LAB/known_hosts.tmp"
  done <<<"$topology"
  mv "$LAB/known_hosts.tmp" "$LAB/known_hosts"
  while read -r name port _; do
    wait_for_ssh "$port"
  done <<<"$topology"
  log "VMs up (SSH answers) in $((SECONDS - start)) s"
}

# vms_down: stops every lab VM (QEMU exits when its PID is killed) and removes their disks.
vms_down() {
  local pidfile pids=()
  for pidfile in "$LAB"/vm/*/qemu.pid; do
    [ -f "$pidfile" ] && pids+=("$(cat "$pidfile")")
  done
  if [ ${#pids[@]} -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    local pid
    for pid in "${pids[@]}"; do
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    done
  fi
  rm -rf "$LAB/vm"
}

vms_status() {
  local dir pid state port
  for dir in "$LAB"/vm/*/; do
    [ -f "$dir/qemu.pid" ] || continue
    pid=$(cat "$dir/qemu.pid")
    if kill -0 "$pid" 2>/dev/null; then state="running (pid $pid)"; else state=stopped; fi
    port=$(sed -n 's/^\[127\.0\.0\.1\]:\([0-9]*\) .*/\1/p' "$dir/known_hosts")
    echo "vm: $(basename "$dir") $state"
    echo "    ssh -i $LAB/id_ed25519 -o UserKnownHostsFile=$LAB/known_hosts -p $port lab@127.0.0.1"
  done
}

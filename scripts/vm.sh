# shellcheck shell=bash
# Lab VMs from a Debian 12 image built here: debootstrap with a kernel, an
# ext4 file system made from the tree with `mkfs.ext4 -d` (no loop device),
# booted by QEMU straight into the kernel. Sourced after lib.sh.

VM_SUITE=bookworm
VM_PACKAGES="$ROOT/vm/packages"
VM_DISK_SIZE=8G

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
    printf 'warning: KVM does not boot a kernel here: the VMs run under TCG emulation, several times slower\n' >&2
    echo "-accel tcg -cpu qemu64"
  fi
}

# The image's cache key: what decides its contents (the package list, the
# mirror, and this file, which holds the recipe).
vm_image_key() {
  { cat "$VM_PACKAGES" "${BASH_SOURCE[0]}"; debian_mirror; echo "$VM_SUITE"; } | sha256sum | cut -c1-16
}

# Builds the image once per key into .cache/vm/<key>/: disk.raw, vmlinuz,
# initrd.img and packages.txt (also inside the image, /usr/share/mlflow-lab/).
# Prints the directory.
build_vm_image() {
  local key dir rootfs mirror packages
  key=$(vm_image_key)
  dir="$CACHE/vm/$key"
  if [ -f "$dir/disk.raw" ]; then echo "$dir"; return; fi
  mirror=$(debian_mirror)
  rootfs="$CACHE/vm/rootfs-$key"
  packages=$(grep -v '^#' "$VM_PACKAGES" | paste -sd, -)
  log "Building the VM image $key with debootstrap from $mirror"
  as_root rm -rf "$rootfs" "$dir.tmp"
  mkdir -p "$dir.tmp"
  as_root debootstrap --variant=minbase --include="$packages" "$VM_SUITE" "$rootfs" "$mirror" \
    >"$dir.tmp/debootstrap.log" 2>&1 || die "debootstrap failed; see $dir.tmp/debootstrap.log"
  configure_vm_rootfs "$rootfs" "$mirror"
  as_root chroot "$rootfs" dpkg-query -W -f '${Package} ${Version}\n' >"$dir.tmp/packages.txt"
  as_root install -D -m 0644 "$dir.tmp/packages.txt" "$rootfs/usr/share/mlflow-lab/packages.txt"
  as_root cp "$(readlink -f "$rootfs/vmlinuz")" "$dir.tmp/vmlinuz"
  as_root cp "$(readlink -f "$rootfs/initrd.img")" "$dir.tmp/initrd.img"
  as_root chmod 0644 "$dir.tmp/vmlinuz" "$dir.tmp/initrd.img"
  truncate -s "$VM_DISK_SIZE" "$dir.tmp/disk.raw"
  as_root mkfs.ext4 -q -L root -d "$rootfs" "$dir.tmp/disk.raw"
  as_root rm -rf "$rootfs"
  mv "$dir.tmp" "$dir"
  echo "$dir"
}

configure_vm_rootfs() {
  local rootfs=$1 mirror=$2
  as_root sh -c "echo 'deb $mirror $VM_SUITE main' >'$rootfs/etc/apt/sources.list'"
  as_root sh -c "echo 'LABEL=root / ext4 defaults,errors=remount-ro 0 1' >'$rootfs/etc/fstab'"
  # DHCP on the first NIC; QEMU's user network answers it, and its DNS.
  as_root install -D -m 0644 /dev/stdin "$rootfs/etc/systemd/network/10-lab.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
NET
  as_root sh -c "echo 'nameserver 10.0.2.3' >'$rootfs/etc/resolv.conf'"
  # Each VM gets its name and the lab's SSH key from QEMU (fw_cfg) at boot,
  # and host keys of its own: one image serves every VM.
  as_root install -D -m 0755 /dev/stdin "$rootfs/usr/local/sbin/mlflow-lab-provision" <<'SH'
#!/bin/sh
set -eu
cfg=/sys/firmware/qemu_fw_cfg/by_name/opt/mlflow-lab
modprobe qemu_fw_cfg
[ -d "$cfg" ] || { echo "no opt/mlflow-lab in fw_cfg: nothing to provision"; exit 0; }
if [ -r "$cfg/hostname/raw" ]; then
  name=$(cat "$cfg/hostname/raw")
  echo "$name" >/etc/hostname
  hostname "$name"
  grep -q " $name\$" /etc/hosts || echo "127.0.1.1 $name" >>/etc/hosts
fi
id lab >/dev/null 2>&1 || useradd --create-home --shell /bin/bash lab
echo 'lab ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/lab
chmod 0440 /etc/sudoers.d/lab
install -d -m 0700 -o lab -g lab /home/lab/.ssh
install -m 0600 -o lab -g lab "$cfg/authorized_keys/raw" /home/lab/.ssh/authorized_keys
ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A
SH
  as_root install -D -m 0644 /dev/stdin "$rootfs/etc/systemd/system/mlflow-lab-provision.service" <<'UNIT'
[Unit]
Description=Name the lab VM and admit the lab's SSH key (from QEMU fw_cfg)
Before=ssh.service systemd-networkd.service
After=systemd-modules-load.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/mlflow-lab-provision

[Install]
WantedBy=multi-user.target
UNIT
  as_root rm -f "$rootfs"/etc/ssh/ssh_host_*
  as_root chroot "$rootfs" systemctl enable -q mlflow-lab-provision.service systemd-networkd.service
  as_root chroot "$rootfs" systemctl mask -q systemd-timesyncd.service 2>/dev/null || true
  as_root rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
}

# boot_vm NAME IMAGE_DIR SSH_PORT KEY.pub [hostfwd...]: starts VM NAME on a
# copy-on-write overlay of the image (in .lab/vm/NAME), its SSH on
# 127.0.0.1:SSH_PORT, each extra "host:guest" port published on 127.0.0.1.
boot_vm() {
  local name=$1 image=$2 ssh_port=$3 key=$4
  shift 4
  local dir="$LAB/vm/$name" forwards="hostfwd=tcp:127.0.0.1:$ssh_port-:22" pair
  for pair in "$@"; do forwards+=",hostfwd=tcp:127.0.0.1:${pair%%:*}-:${pair##*:}"; done
  mkdir -p "$dir"
  [ -f "$dir/disk.qcow2" ] || qemu-img create -q -f qcow2 -F raw -b "$image/disk.raw" "$dir/disk.qcow2"
  if [ -f "$dir/qemu.pid" ] && kill -0 "$(cat "$dir/qemu.pid")" 2>/dev/null; then return; fi
  # shellcheck disable=SC2046 # qemu_accel prints several options
  qemu-system-x86_64 $(qemu_accel "$image") -machine q35 -m "${VM_MEMORY:-4096}" -smp "${VM_CPUS:-2}" \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append "root=LABEL=root rw console=ttyS0 net.ifnames=0" \
    -drive "file=$dir/disk.qcow2,if=virtio,format=qcow2" \
    -netdev "user,id=n0,$forwards" -device virtio-net-pci,netdev=n0 \
    -fw_cfg "name=opt/mlflow-lab/hostname,string=$name" \
    -fw_cfg "name=opt/mlflow-lab/authorized_keys,file=$key" \
    -display none -serial "file:$dir/console.log" -daemonize -pidfile "$dir/qemu.pid"
}

# wait_for_ssh PORT KEY: until the VM on PORT lets the lab user in (boot time).
wait_for_ssh() {
  local port=$1 key=$2
  for _ in $(seq 1 180); do
    ssh -q -i "$key" -p "$port" -o BatchMode=yes -o StrictHostKeyChecking=no \
      -o UserKnownHostsFile=/dev/null -o ConnectTimeout=2 lab@127.0.0.1 true && return
    sleep 1
  done
  die "no SSH on 127.0.0.1:$port after 180 s"
}

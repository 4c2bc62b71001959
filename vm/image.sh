# shellcheck shell=bash
# The lab VM image recipe: Debian 12 from debootstrap with a kernel, an ext4
# file system made from the tree with `mkfs.ext4 -d` (no loop device, no root
# mount), booted by QEMU straight into the kernel (scripts/vm.sh).
# Sourced after scripts/lib.sh. Reuse it for test VMs of your own:
#   scripts/vm-image            builds (or finds) the image, prints its directory
# The image is cached by a hash of this file, vm/packages, the mirror and the
# suite: the same inputs give the same image, and its package list (with
# versions) is kept inside it and beside it.

VM_SUITE=bookworm
VM_PACKAGES="$ROOT/vm/packages"
# Optional: a second list of packages baked into the image (the vm test
# scenario's "prepared" image: vm/packages-prepared). Empty for the lab.
VM_EXTRA_PACKAGES=${VM_EXTRA_PACKAGES:-}
VM_DISK_SIZE=8G
# Outside the checkout, like MinIO's build: a fresh clone (CI) reuses the image
# built for the same inputs instead of running debootstrap again (~3 min).
VM_IMAGE_CACHE=${VM_IMAGE_CACHE:-$HOME/.cache/mlflow-stack/vm}
VM_RECIPE="${BASH_SOURCE[0]}"

vm_image_key() {
  { cat "$VM_PACKAGES" ${VM_EXTRA_PACKAGES:+"$VM_EXTRA_PACKAGES"} "$VM_RECIPE"; debian_mirror; echo "$VM_SUITE"; } \
    | sha256sum | cut -c1-16
}

# Builds the image once per key into $VM_IMAGE_CACHE/<key>/: disk.raw, vmlinuz,
# initrd.img and packages.txt (also inside the image, /usr/share/mlflow-lab/).
# Prints the directory.
build_vm_image() {
  local key dir rootfs mirror packages start=$SECONDS
  key=$(vm_image_key)
  dir="$VM_IMAGE_CACHE/$key"
  if [ -f "$dir/disk.raw" ]; then echo "$dir"; return; fi
  mirror=$(debian_mirror)
  rootfs="$VM_IMAGE_CACHE/rootfs-$key"
  packages=$(cat "$VM_PACKAGES" ${VM_EXTRA_PACKAGES:+"$VM_EXTRA_PACKAGES"} | grep -v '^#' | paste -sd, -)
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
  log "VM image built in $((SECONDS - start)) s: $dir"
  echo "$dir"
}

configure_vm_rootfs() {
  local rootfs=$1 mirror=$2
  as_root sh -c "echo 'deb $mirror $VM_SUITE main' >'$rootfs/etc/apt/sources.list'"
  as_root sh -c "echo 'LABEL=root / ext4 defaults,errors=remount-ro 0 1' >'$rootfs/etc/fstab'"
  # DHCP on the first NIC, from QEMU's user network (which also answers DNS).
  as_root install -D -m 0644 /dev/stdin "$rootfs/etc/systemd/network/10-lab.network" <<'NET'
[Match]
Name=eth0

[Network]
DHCP=ipv4
NET
  as_root sh -c "echo 'nameserver 10.0.2.3' >'$rootfs/etc/resolv.conf'"
  # Each VM gets its name, the lab's SSH key, its SSH host key and its address
  # on the VMs' own network from QEMU (fw_cfg) at boot: one image serves every VM.
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
# The host key the controller already trusts (its known_hosts has the public half).
if [ -r "$cfg/ssh_host_ed25519_key/raw" ]; then
  install -m 0600 "$cfg/ssh_host_ed25519_key/raw" /etc/ssh/ssh_host_ed25519_key
  ssh-keygen -y -f /etc/ssh/ssh_host_ed25519_key >/etc/ssh/ssh_host_ed25519_key.pub
fi
# Without one, keys of every type (RSA takes long on an emulated CPU).
ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A
# The second NIC, on the network the VMs share, at a fixed address.
if [ -r "$cfg/address/raw" ]; then
  printf '[Match]\nName=eth1\n\n[Network]\nAddress=%s\n' "$(cat "$cfg/address/raw")" \
    >/etc/systemd/network/05-lab-internal.network
fi
SH
  as_root install -D -m 0644 /dev/stdin "$rootfs/etc/systemd/system/mlflow-lab-provision.service" <<'UNIT'
[Unit]
Description=Name the lab VM, admit the lab's SSH key, set its address (from QEMU fw_cfg)
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
  # No clock to sync under QEMU's user network, and no apt runs of its own
  # that would hold the dpkg lock while Ansible installs.
  as_root chroot "$rootfs" systemctl mask -q systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer
  # The package lists stay, as on any installed server: the roles refresh them
  # when they are older than an hour.
  as_root rm -f "$rootfs"/var/cache/apt/archives/*.deb
}

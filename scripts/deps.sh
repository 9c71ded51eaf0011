#!/usr/bin/env bash
# Install what building and testing abupdate needs on a fresh Debian 12:
# the real tools the tests drive (minisign, grub-editenv, fw_printenv,
# nginx, efibootmgr/efivar reading an efivarfs stand-in, bootctl reading
# an ESP; dosfstools, mtools, ovmf, python3-venv (virt-firmware) and
# debootstrap (the systemd guest) for the UEFI VM test; qemu and what the
# VM test builds its guests from; Prometheus and its promtool, node_exporter,
# awscli and a python3 venv for the moto S3 server), musl for the
# static build, gcc-multilib for the 32-bit host build,
# and the Rust targets and components.
# Idempotent and quiet when everything is already there.
set -euo pipefail

packages=(minisign nginx grub2-common libubootenv-tool u-boot-tools musl-tools
          e2fsprogs util-linux zstd curl openssl u-boot-qemu qemu-system-arm time
          gcc-multilib ipxe-qemu
          efibootmgr efivar systemd-boot dosfstools mtools ovmf python3-venv debootstrap
          qemu-system-x86 grub-pc-bin fdisk busybox-static kmod cpio gzip jq systemd-boot-efi
          # S3 tests and the fleet end to end (scripts/fleet-e2e.sh): awscli to
          # publish, Prometheus and node_exporter.
          awscli prometheus prometheus-node-exporter)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# ipxe-qemu: the NIC option ROMs qemu-system-arm loads for the U-Boot test
# (a Recommends, so --no-install-recommends leaves it out).
# nginx's package starts a server on port 80, prometheus (the fleet tests'
# server, with promtool for the alerting rules and the backfill) one on 9090
# and node_exporter (the textfile collector the tests run) one on 9100; the
# tests start their own on free loopback ports.
systemctl disable --now nginx prometheus prometheus-node-exporter >/dev/null 2>&1 || true

# virt-fw-vars (PyPI virt-firmware, not packaged in Debian 12) reads and
# writes OVMF's NVRAM for the UEFI VM test: the pinned venv that
# scripts/vm-test.sh uses (scripts/vm/lib/host.sh makes it too when absent).
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vf_version="$(sed -n 's/^VIRT_FIRMWARE_VERSION=//p' "$repo/scripts/vm/lib/host.sh")"
vf_venv="${ABUPDATE_VM_DIR:-$repo/target/vm}/cache/virt-firmware-$vf_version"
if [ -n "$vf_version" ] && [ ! -x "$vf_venv/bin/virt-fw-vars" ]; then
    echo "deps: virt-firmware==$vf_version in $vf_venv"
    rm -rf "$vf_venv"
    python3 -m venv "$vf_venv"
    "$vf_venv/bin/pip" install -q "virt-firmware==$vf_version"
fi

# The reference parser of Prometheus' text format, for the textfile test.
python3 -c 'import prometheus_client' 2>/dev/null \
    || python3 -m pip install --quiet --root-user-action=ignore prometheus-client

if command -v rustup >/dev/null; then
    rustup target list --installed | grep -qx x86_64-unknown-linux-musl \
        || rustup target add x86_64-unknown-linux-musl
    # The 32-bit host build the delta tests run (C parts: gcc -m32, see
    # .cargo/config.toml).
    rustup target list --installed | grep -qx i686-unknown-linux-musl \
        || rustup target add i686-unknown-linux-musl
    rustup component list --installed | grep -q '^clippy' || rustup component add clippy
    rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
fi

#!/usr/bin/env bash
# Install abupdate into a root file system tree (an image being built, or /).
#
#   scripts/install.sh DESTDIR [BINARY]
#
# DESTDIR/usr/bin/abupdate                   the binary (default: the static musl
#                                            release build, else the host build)
# DESTDIR/usr/lib/systemd/system/            abupdate.service, abupdate.timer,
#                                            abupdate-health.service,
#                                            abupdate-shutdown-mark.service
# DESTDIR/etc/systemd/system/*.wants|requires  enablement symlinks (what
#                                            `systemctl enable` would create)
# DESTDIR/etc/abupdate/config.toml           example config, only if absent
# DESTDIR/etc/abupdate/{keys,health.d,config.d}/, DESTDIR/usr/lib/abupdate/keys/
# DESTDIR/usr/share/abupdate/                grub.cfg, U-Boot boot.cmd (if present)
set -euo pipefail

usage() { echo "usage: $0 DESTDIR [BINARY]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
case "$1" in -h|--help) usage ;; esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$1"
bin="${2:-}"
if [ -z "$bin" ]; then
    for c in "$repo/target/x86_64-unknown-linux-musl/release/abupdate" "$repo/target/release/abupdate"; do
        if [ -x "$c" ]; then bin="$c"; break; fi
    done
fi
[ -n "$bin" ] || { echo "install.sh: no abupdate binary found; build it or pass BINARY" >&2; exit 1; }
[ -f "$bin" ] || { echo "install.sh: $bin: no such file" >&2; exit 1; }
mkdir -p "$dest"

install -D -m 0755 "$bin" "$dest/usr/bin/abupdate"

unitdir="$dest/usr/lib/systemd/system"
install -d -m 0755 "$unitdir"
for u in abupdate.service abupdate.timer abupdate-health.service abupdate-shutdown-mark.service; do
    install -m 0644 "$repo/systemd/$u" "$unitdir/$u"
done

# Enable: the symlinks `systemctl enable` makes from the [Install] sections.
link() { # TARGET_DIR UNIT
    install -d -m 0755 "$dest/etc/systemd/system/$1"
    ln -sfn "/usr/lib/systemd/system/$2" "$dest/etc/systemd/system/$1/$2"
}
link timers.target.wants abupdate.timer
link boot-complete.target.requires abupdate-health.service
link multi-user.target.wants abupdate-health.service
link multi-user.target.wants abupdate-shutdown-mark.service

install -d -m 0755 "$dest/etc/abupdate" "$dest/etc/abupdate/config.d" \
    "$dest/etc/abupdate/keys" "$dest/etc/abupdate/health.d" "$dest/usr/lib/abupdate/keys"
if [ ! -e "$dest/etc/abupdate/config.toml" ]; then
    install -m 0644 "$repo/systemd/config.example.toml" "$dest/etc/abupdate/config.toml"
fi

share="$dest/usr/share/abupdate"
install -d -m 0755 "$share"
install -m 0644 "$repo/scripts/grub/grub.cfg" "$share/grub.cfg"
install -m 0644 "$repo/systemd/config.example.toml" "$share/config.example.toml"
if [ -f "$repo/scripts/uboot/boot.cmd" ]; then
    install -m 0644 "$repo/scripts/uboot/boot.cmd" "$share/boot.cmd"
fi
echo "install.sh: installed $(basename "$bin") and units into $dest"

#!/usr/bin/env bash
# Verify the systemd units with `systemd-analyze verify` against a throw-away
# root populated by scripts/install.sh (so /usr/bin/abupdate exists there).
#   scripts/check-units.sh            (installs systemd from Debian if missing)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! command -v systemd-analyze >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "check-units: installing systemd (for systemd-analyze)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd >/dev/null; }
    else
        echo "check-units: systemd-analyze not found" >&2; exit 1
    fi
fi

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
# A stand-in binary: verify checks that ExecStart= is executable, not what it does.
printf '#!/bin/sh\nexit 0\n' > "$root/abupdate.stub"
chmod +x "$root/abupdate.stub"
# The root needs systemd's own units (sysinit.target, network-online.target,
# ...) for the dependencies to resolve: take the host's.
mkdir -p "$root/rootfs/usr/lib/systemd" "$root/rootfs/etc/systemd/system"
cp -a /usr/lib/systemd/system "$root/rootfs/usr/lib/systemd/"
"$repo/scripts/install.sh" "$root/rootfs" "$root/abupdate.stub" >/dev/null
# abupdate-shutdown-mark.service runs /bin/true and /bin/sh, which every
# target system has: stand-ins in the bare root.
mkdir -p "$root/rootfs/bin"
cp "$root/abupdate.stub" "$root/rootfs/bin/true"
cp "$root/abupdate.stub" "$root/rootfs/bin/sh"

units=(abupdate.service abupdate.timer abupdate-health.service abupdate-shutdown-mark.service)
out="$root/verify.log"
rc=0
( cd "$root/rootfs/usr/lib/systemd/system" &&
  SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no --root="$root/rootfs" "${units[@]}" ) >"$out" 2>&1 || rc=$?
# verify also reports problems of unrelated units it happens to load from the
# root (there are none in a bare root); any line naming ours is a failure.
if [ "$rc" -ne 0 ] || grep -E 'abupdate' "$out" >/dev/null; then
    cat "$out" >&2
    echo "check-units: FAIL (systemd-analyze verify rc=$rc)" >&2
    exit 1
fi
for u in "${units[@]}"; do echo "check-units: $u ok"; done
# Both services run the site's checks and hooks (health's verdict, the
# timer's probation runs): their sandboxes and priorities must be alike, or
# a check that passes in one fails in the other.
sandbox() {
    grep -E '^(Protect|Private|NoNewPrivileges|Restrict|Lock|Memory|SystemCall|UMask|Nice|IOScheduling|CPUScheduling|ReadWritePaths|ReadOnlyPaths|InaccessiblePaths|CapabilityBoundingSet|AmbientCapabilities|DevicePolicy|DeviceAllow)' \
        "$repo/systemd/$1" | sort
}
if ! diff <(sandbox abupdate.service) <(sandbox abupdate-health.service) >"$root/sandbox.diff"; then
    cat "$root/sandbox.diff" >&2
    echo "check-units: FAIL: abupdate.service and abupdate-health.service run the same checks under different sandboxes" >&2
    exit 1
fi
echo "check-units: both services sandbox the site's checks alike"
# The enablement symlinks install.sh makes.
for l in timers.target.wants/abupdate.timer boot-complete.target.requires/abupdate-health.service \
         multi-user.target.wants/abupdate-health.service \
         multi-user.target.wants/abupdate-shutdown-mark.service; do
    [ -L "$root/rootfs/etc/systemd/system/$l" ] || { echo "check-units: missing $l" >&2; exit 1; }
done
echo "check-units: all units verified"

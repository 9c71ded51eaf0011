#!/usr/bin/env bash
# Delta bench: bytes to move a host from v1 to v2, and the device-side cost
# of applying them, for abupdate's segmented zstd deltas and the field's
# other methods, on one machine in one run.
#
#   bench/delta.sh [WORKDIR]        (root; ~1 GiB images; tens of minutes)
#
# v1 = a 1 GiB ext4 image (scripts/mkimage.sh, reproducible) of part of this
# machine's /usr; v2 = v1 with every Debian package that has a newer version
# in the archive unpacked over it (real security/point-release updates:
# rebuilt ELF files, changed data), plus a few packages that are new.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=${1:-$root/target/bench-delta}
mkdir -p "$work"; cd "$work"
export DEBIAN_FRONTEND=noninteractive
need=(xdelta3 casync zchunk zstd e2fsprogs time cpio)
missing=(); for p in "${need[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then apt-get update -qq; apt-get install -y -qq "${missing[@]}" >/dev/null; fi
"$root/scripts/deps.sh"
(cd "$root" && cargo build --release --quiet \
    && cargo build --release --quiet --target i686-unknown-linux-musl --no-default-features)
abupdate=$root/target/release/abupdate
abupdate32=$root/target/i686-unknown-linux-musl/release/abupdate
ms() { date +%s%3N; }
rss() { awk -F: '/Maximum resident/ {gsub(/ /,"",$2); printf "%d", $2/1024}' "$1"; }
# Peak anonymous memory (MiB) of a command, sampled from /proc: the mapped
# booted slot is file-backed page cache and shows in RSS, not in RssAnon.
peak_anon_file=$work/peak_anon
peak_anon() {
    "$@" & local pid=$! max=0 a
    while kill -0 "$pid" 2>/dev/null; do
        # The measured command runs under /usr/bin/time: sample its child.
        local child; child=$(pgrep -P "$pid" | head -1)
        a=$(awk '/^RssAnon/ {print $2}' "/proc/${child:-$pid}/status" 2>/dev/null || true)
        [ -n "$a" ] && [ "$a" -gt "$max" ] && max=$a
        sleep 0.02
    done
    wait "$pid"; local rc=$?
    echo $((max / 1024)) > "$peak_anon_file"; return $rc
}

# ---- the two trees -----------------------------------------------------------
if [ ! -f v2.img ]; then
    rm -rf v1 v2 debs; mkdir -p v1 debs
    # v1: the /usr files of real installed packages, ~800 MB: every package
    # that has an update in the archive, then others until the budget is met.
    upgradable=$(apt list --upgradable 2>/dev/null | awk -F/ 'NR>1 {print $1}')
    others=$(dpkg-query -W -f='${Installed-Size} ${Package}\n' | sort -rn | awk '{print $2}')
    budget=$((800 * 1024)); used=0
    for p in $upgradable $others; do
        [ "$used" -lt "$budget" ] || break
        k=$(dpkg-query -W -f='${Installed-Size}' "$p" 2>/dev/null || echo 0)
        [ "${k:-0}" -lt 200000 ] || continue    # one huge package would be the whole image
        dpkg -L "$p" 2>/dev/null | grep '^/usr/' | while read -r f; do
            [ -f "$f" ] || [ -L "$f" ] && [ ! -d "$f" ] && echo "$f"
        done | cpio -pdm --quiet v1 2>/dev/null || true
        used=$((used + ${k:-0}))
    done
    du -sh v1
    cp -a v1 v2
    (cd debs && echo "$upgradable" | xargs -r apt-get download -qq 2>/dev/null || true)
    (cd debs && apt-get download -qq xdelta3 nginx-common libzck1 2>/dev/null || true)
    n=0; for deb in debs/*.deb; do dpkg-deb -x "$deb" v2/ && n=$((n+1)); done
    rm -rf v2/etc v2/var v2/lib v2/lib64 v2/bin v2/sbin 2>/dev/null || true
    echo "v2 = v1 + $n packages ($(du -sh debs | cut -f1) of .debs)"
    "$root/scripts/mkimage.sh" v1 v1.img 1024
    "$root/scripts/mkimage.sh" v2 v2.img 1024
fi
size=$(stat -c %s v2.img)
differing=$(python3 -c '
n = 0
with open("v1.img", "rb") as a, open("v2.img", "rb") as b:
    while True:
        x, y = a.read(4096), b.read(4096)
        if not x and not y:
            break
        n += x != y
print(n)')
echo "images: $(numfmt --to=iec "$size") each; differing 4 KiB blocks: $differing"

# ---- bytes ----------------------------------------------------------------------
declare -A bytes pack_s apply_s apply_rss
# Run a step unless its output exists (a rerun reuses the slow ones); its
# seconds are kept in NAME.secs.
timed() {
    local name=$1 out=$2; shift 2
    if [ ! -e "$out" ]; then
        local t; t=$(ms); "$@"; echo $(( ($(ms) - t) / 1000 )) > "$name.secs"
    fi
    pack_s[$name]=$(cat "$name.secs" 2>/dev/null || echo "-")
}
[ -f k.key ] || "$abupdate" keygen --secret k.key --public k.pub

timed full v2.img.zst zstd -q -f -19 --long=31 -T0 v2.img -o v2.img.zst
bytes[full]=$(stat -c %s v2.img.zst)

pack() { local out=$1 level=$2; shift 2
    /usr/bin/time -v "$abupdate" pack --secret k.key --compatible bench --version 2.0 --image rootfs=v2.img \
    --out "$out" --level "$level" --delta-from rootfs=v1.img --delta-level 9 "$@" --quiet 2> "$out.time"; }
timed abupdate rel/release.json pack rel 19
# The delta's own cost: the same pack with the full segments at level 1.
timed abupdate_delta_only rel-fast/release.json pack rel-fast 1
# A delta 32-bit hosts can apply: a 2^30 window, so each segment references
# the 1008 MiB of v1 around it rather than all of v1.
timed abupdate_32bit rel-w30/release.json pack rel-w30 1 --delta-window-log 30
# A reused release may predate the key: signing again is cheap.
for r in rel rel-w30; do "$abupdate" sign --secret k.key $r/release.json; done
bytes[abupdate]=$(stat -c %s rel/rootfs-2.0.from-*.zst)
bytes[abupdate_32bit]=$(stat -c %s rel-w30/rootfs-2.0.from-*.zst)
bytes[abupdate_full_segments]=$(stat -c %s rel/rootfs-2.0.img.zst)

timed zstd_patch v2.patch.zst sh -c 'zstd -q -f -19 --single-thread --patch-from=v1.img v2.img -o v2.patch.zst'
bytes[zstd_patch]=$(stat -c %s v2.patch.zst)

timed xdelta3 v2.xd3 xdelta3 -f -e -9 -S djw -B 1073741824 -s v1.img v2.img v2.xd3
bytes[xdelta3]=$(stat -c %s v2.xd3)

casync_make() { rm -rf store1 store2; casync make --store=store1 v1.caibx v1.img >/dev/null && casync make --store=store2 v2.caibx v2.img >/dev/null; }
timed casync v2.caibx casync_make
# Bytes a host seeded with v1 fetches: v2's chunks that v1's store lacks.
bytes[casync]=$( (cd store2 && find . -name '*.cacnk' -printf '%P %s\n') | while read -r f s; do [ -e "store1/$f" ] || echo "$s"; done | awk '{s+=$1} END {print s+0}')
casync_gets=$( (cd store2 && find . -name '*.cacnk' -printf '%P\n') | while read -r f; do [ -e "store1/$f" ] || echo x; done | wc -l)

zck_make() { zck -o v1.img.zck v1.img >/dev/null && zck -o v2.img.zck v2.img >/dev/null; }
timed zchunk v2.img.zck zck_make
# "Would download N of M bytes"
bytes[zchunk]=$(zck_delta_size v1.img.zck v2.img.zck 2>/dev/null | awk '/Would download/ {print $3}')

# ---- device-side apply -------------------------------------------------------------
slot() { truncate -s 1100M "$1"; losetup -f --show "$1"; }
a=$(slot slot-a.img); b=$(slot slot-b.img); trap 'losetup -d "$a" "$b" 2>/dev/null || true' EXIT
dd if=v1.img of="$a" bs=4M conv=fsync status=none
grub-editenv grubenv create; grub-editenv grubenv set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
mkdir -p keys state; cp k.pub keys/; echo "abupdate.slot=A" > cmdline; echo "IMAGE_VERSION=1.0" > os-release
cat > cfg.toml <<TOML
[update]
compatible = "bench"
state_dir = "$work/state"
keys_dirs = ["$work/keys"]
[system]
cmdline = "$work/cmdline"
os_release = "$work/os-release"
reboot = ["true"]
[bootloader]
grubenv = "$work/grubenv"
[slots.A]
rootfs = "$a"
[slots.B]
rootfs = "$b"
TOML
rm -rf state/*; sync; echo 3 > /proc/sys/vm/drop_caches
t=$(ms); peak_anon /usr/bin/time -v "$abupdate" --config cfg.toml install --no-reboot rel/release.json 2> apply.time
apply_s[abupdate]=$(awk "BEGIN {printf \"%.1f\", ($(ms)-$t)/1000}"); apply_rss[abupdate]="$(rss apply.time) (anon $(cat "$peak_anon_file"))"
grep -q "by delta" apply.time || { echo "abupdate did not apply the delta:"; cat apply.time; exit 1; }

# The 32-bit build applying the window-30 delta (IA-32 emulation: a real
# 32-bit process with a 4 GiB address space).
rm -rf state/*; grub-editenv grubenv set ORDER="A B" B_OK=0; sync; echo 3 > /proc/sys/vm/drop_caches
t=$(ms); peak_anon /usr/bin/time -v "$abupdate32" --config cfg.toml install --no-reboot rel-w30/release.json 2> apply32.time
apply_s[abupdate_32bit]=$(awk "BEGIN {printf \"%.1f\", ($(ms)-$t)/1000}"); apply_rss[abupdate_32bit]="$(rss apply32.time) (anon $(cat "$peak_anon_file"))"
grep -q "by delta" apply32.time || { echo "the 32-bit build did not apply the delta:"; cat apply32.time; exit 1; }

t=$(ms); peak_anon /usr/bin/time -v zstd -q -d -f --long=31 --patch-from=v1.img v2.patch.zst -o /dev/null 2> zd.time
apply_s[zstd_patch]=$(awk "BEGIN {printf \"%.1f\", ($(ms)-$t)/1000}"); apply_rss[zstd_patch]="$(rss zd.time) (anon $(cat "$peak_anon_file"))"
t=$(ms); /usr/bin/time -v xdelta3 -f -d -B 1073741824 -s v1.img v2.xd3 /dev/null 2> xd.time
apply_s[xdelta3]=$(awk "BEGIN {printf \"%.1f\", ($(ms)-$t)/1000}"); apply_rss[xdelta3]=$(rss xd.time)
t=$(ms); /usr/bin/time -v casync extract --store=store2 --seed=v1.img v2.caibx "$b" 2> ca.time >/dev/null
apply_s[casync]=$(awk "BEGIN {printf \"%.1f\", ($(ms)-$t)/1000}"); apply_rss[casync]=$(rss ca.time)

printf '\n%s, %s, %s\n' "$(lscpu | sed -n 's/^Model name: *//p')" "$(uname -r)" "$(date -u +%F)"
printf '| method | bytes v1→v2 | vs zstd patch | pack s | apply s | apply peak RSS MiB |\n| --- | --- | --- | --- | --- | --- |\n'
for m in full abupdate abupdate_32bit zstd_patch casync zchunk xdelta3; do
    r=$(awk "BEGIN {printf \"%.2f\", ${bytes[$m]}/${bytes[zstd_patch]}}")
    printf '| %s | %s | %sx | %s | %s | %s |\n' "$m" "${bytes[$m]}" "$r" "${pack_s[$m]:--}" "${apply_s[$m]:--}" "${apply_rss[$m]:--}"
done
echo "casync: $casync_gets chunk GETs; abupdate full payload as segments: ${bytes[abupdate_full_segments]} bytes; abupdate pack peak RSS $(rss rel.time) MiB; pack with the full segments at level 1: ${pack_s[abupdate_delta_only]} s (window 31), ${pack_s[abupdate_32bit]} s (window 30)"

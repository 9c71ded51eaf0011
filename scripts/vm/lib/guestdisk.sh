# Sourced by scripts/vm-test.sh: reading the guest's disk (and NVRAM) on the
# host, between boots.  grubenv and state.json are read with debugfs, which
# (like GRUB) reads the file system without replaying its journal; state.json
# can also be read as the guest's next mount sees it (journal replayed on a
# copy).  UEFI: the NVRAM (the guest's copy of OVMF_VARS) through virt-fw-vars
# and scripts/vm/lib/nvram.py; the ESP with mtools, as the firmware reads it
# (no mount).  The systemd guest's journal with journalctl --directory.  The
# guest's `abupdate --json status` comes from its serial log.
#
# In: W, DISK, VARS, BOOT, P1_OFF, P1_MB, BOOT_OFF, DATA_OFF, STATE_REL, LOG,
# FWVARS.

env_dump() { # grubenv's bytes as GRUB sees them
    debugfs -R "cat /grub/grubenv" "$DISK?offset=$BOOT_OFF" 2>/dev/null || true
}
# env_list: grubenv as grub-editenv reads it, one VAR=VALUE a line (nothing
# when it cannot read the block).
env_list() {
    env_dump > "$W/grubenv.now"
    grub-editenv "$W/grubenv.now" list 2>/dev/null || true
}
env_val() { # VAR [LIST]: its value in LIST (default: the env on disk now)
    local list="${2-$(env_list)}"
    sed -n "s/^$1=//p" <<<"$list" | head -n 1
}
env_vars() { # the boot variables on disk now, one line (for messages)
    env_list | grep -E '^(ORDER|[AB]_(OK|TRY|LEFT))=' | tr '\n' ' '
}
# The slot GRUB boots next: the first in ORDER with OK=1 and TRY=0.
primary_slot() {
    local list s; list="$(env_list)"
    for s in $(env_val ORDER "$list"); do
        if [ "$(env_val "${s}_OK" "$list")" = 1 ] && [ "$(env_val "${s}_TRY" "$list")" = 0 ]; then
            echo "$s"; return
        fi
    done
}

# In-place rewrite of grubenv on the host (one 1024-byte write at the file's
# block, like abupdate does): grub-editenv ARGS applied to a copy.
host_env_edit() {
    local tmp="$W/grubenv.edit" blk
    env_dump > "$tmp"
    [ "$(stat -c %s "$tmp")" = 1024 ] || die "grubenv on disk is not 1024 bytes"
    grub-editenv "$tmp" "$@"
    blk="$(grubenv_block)"
    dd if="$tmp" of="$DISK" bs=1024 seek=$(( (BOOT_OFF + blk * 4096) / 1024 )) count=1 conv=notrunc status=none
}
host_env_zero() { # the env block unreadable: its 1024 bytes zeroed in place
    local blk; blk="$(grubenv_block)"
    dd if=/dev/zero of="$DISK" bs=1024 seek=$(( (BOOT_OFF + blk * 4096) / 1024 )) count=1 conv=notrunc status=none
}
grubenv_block() {
    local blk; blk="$(debugfs -R "bmap /grub/grubenv 0" "$DISK?offset=$BOOT_OFF" 2>/dev/null)"
    [[ "$blk" =~ ^[0-9]+$ ]] || die "cannot locate grubenv's block on $DISK"
    echo "$blk"
}

# The bootloader's state on disk (PRE_ENV before a boot), one VAR=VALUE a line.
boot_state() {
    case "$BOOT" in
        grub) env_list ;;
        efi) nvram_list ;;
        systemd-boot) esp_entries | sed 's/^/entry=/'; echo "default=$(bootctl_default)" ;;
    esac
}

# ---------------------------------------------------------------- UEFI NVRAM
# nvram_list: the variables of the guest's NVRAM as nvram.py shows them:
# BootOrder=0010,0011,…  BootNext=0011 (when set)  Boot0010=DESC|PATH|OPTIONS|active
nvram_list() {
    "$FWVARS" -i "$VARS" --output-json "$W/vars.json" >/dev/null 2>&1 || { echo "NVRAM=unreadable"; return; }
    python3 "$REPO/scripts/vm/lib/nvram.py" show "$W/vars.json" || echo "NVRAM=unparsable"
}
nvram_val() { # VAR [LIST]
    local list="${2-$(nvram_list)}"
    sed -n "s/^$1=//p" <<<"$list" | head -n 1
}
# The Boot#### number of SLOT's entry ("abupdate SLOT", lowest number, as
# abupdate finds it), nothing when there is none.
nvram_entry() { # SLOT [LIST]
    local list="${2-$(nvram_list)}"
    sed -n "s/^Boot\([0-9A-F]\{4\}\)=abupdate $1|.*/\1/p" <<<"$list" | head -n 1
}
# The slot (A, B) whose entry is Boot NUM, else NUM itself.
nvram_slot_of() { # NUM [LIST]
    local list="${2-$(nvram_list)}" d
    d="$(sed -n "s/^Boot$1=\([^|]*\)|.*/\1/p" <<<"$list" | head -n 1)"
    case "$d" in "abupdate A") echo A ;; "abupdate B") echo B ;; *) echo "$1" ;; esac
}
# BootOrder as slots: the slots' entries in their order ("B A"), others left out.
nvram_order_slots() { # [LIST]
    local list="${1-$(nvram_list)}" n out=""
    for n in $(nvram_val BootOrder "$list" | tr ',' ' '); do
        case "$(nvram_slot_of "$n" "$list")" in A) out+=" A" ;; B) out+=" B" ;; esac
    done
    echo "${out# }"
}
# The entry the firmware boots next: BootNext when set, else BootOrder's
# first entry that exists and is active (OVMF's BDS skips the others).
nvram_next_entry() { # [LIST]
    local list="${1-$(nvram_list)}" n
    n="$(nvram_val BootNext "$list")"
    if [ -n "$n" ]; then echo "$n"; return; fi
    for n in $(nvram_val BootOrder "$list" | tr ',' ' '); do
        if grep -q "^Boot$n=.*|active\$" <<<"$list"; then echo "$n"; return; fi
    done
}
nvram_vars() { # for messages: BootOrder, BootNext and our entries, one line
    local list next; list="$(nvram_list)"; next="$(nvram_val BootNext "$list")"
    echo "BootOrder=$(nvram_val BootOrder "$list") BootNext=${next:-none}" \
        "A=Boot$(nvram_entry A "$list") B=Boot$(nvram_entry B "$list")"
}
# Delete a variable from the guest's NVRAM on the host (the firmware
# "dropping" a boot entry).
nvram_delete() { # NAME
    "$FWVARS" --inplace "$VARS" -d "$1" >/dev/null 2>&1 || die "virt-fw-vars -d $1 failed"
}

# ---------------------------------------------------------------- the ESP
esp_img() { echo "$DISK@@$P1_OFF"; }
# The files in loader/entries, one a line, sorted.
esp_entries() {
    mdir -b -i "$(esp_img)" ::/loader/entries 2>/dev/null | sed 's|.*/||' | grep -v '^$' | LC_ALL=C sort || true
}
esp_delete() { # PATH on the ESP
    mdel -i "$(esp_img)" "::$1" || die "mdel ::$1 failed"
}
# The slot systemd-boot boots next, as the real bootctl sees the ESP's
# entries and loader.conf (copied into a tmpfs: bootctl wants a file system
# root, and this host may have no vfat).
bootctl_default() {
    local t="$W/esp-view"
    mkdir -p "$t"
    mountpoint -q "$t" || mount -t tmpfs -o size=8m tmpfs "$t" || return 0
    rm -rf "${t:?}"/*
    mkdir -p "$t/loader/entries"
    mcopy -n -i "$(esp_img)" ::/loader/loader.conf "$t/loader/" 2>/dev/null
    mcopy -n -s -i "$(esp_img)" ::/loader/entries "$t/loader/" 2>/dev/null
    # The default entry's own block (bootctl separates entries by a blank
    # line): an entry without an options line names no slot, rather than
    # the next entry's.
    SYSTEMD_RELAX_ESP_CHECKS=1 bootctl --esp-path="$t" --no-pager list 2>/dev/null \
        | awk 'BEGIN { RS = "" } /title:[^\n]*\(default\)/ { print; exit }' \
        | sed -n 's/^ *options:.*abupdate\.slot=\([AB]\).*/\1/p'
    umount "$t" 2>/dev/null || true
}
# fsck.vfat -n of the ESP (a copy): "ok" or its complaint.  The dirty bit
# alone is no damage: Linux sets it while vfat is mounted, so every power cut
# and the busybox guest's `reboot -f` (no unmount) leave it; fsck.vfat then
# exits 1 with nothing else to repair.  Anything besides it is a complaint.
esp_fsck() {
    local part="$W/esp-check.img" out rc=0 rest
    dd if="$DISK" of="$part" bs=1M skip=$((P1_OFF / MIB)) count="$P1_MB" status=none
    out="$(fsck.vfat -n "$part" 2>&1)" || rc=$?
    rm -f "$part"
    rest="$(grep -vE '^fsck\.fat |^[[:space:]]*$|Dirty bit is set|dirty bit|^[[:space:]]*Leaving filesystem unchanged|: [0-9]+ files, [0-9]+/[0-9]+ clusters$' <<<"$out" || true)"
    if [ "$rc" -le 1 ] && [ -z "$rest" ]; then
        if grep -q 'Dirty bit' <<<"$out"; then echo "ok-dirty"; else echo ok; fi
    else
        printf '%s' "${rest:-$out}" | head -n 3 | tr '\n' ' '
    fi
}

# ---------------------------------------------------------------- the journal
# The systemd guest's journal, read from its data partition (/var) with the
# host's journalctl: ARGS are journalctl's (e.g. -u abupdate.service -o cat).
guest_journal() {
    local d="$W/journal-copy"
    rm -rf "$d"; mkdir -p "$d"
    debugfs -R "rdump /log/journal $d" "$DISK?offset=$DATA_OFF" >/dev/null 2>&1 || true
    [ -d "$d/journal" ] || return 0
    journalctl --directory="$(find "$d/journal" -mindepth 1 -maxdepth 1 -type d | head -n 1)" --no-pager "$@" 2>/dev/null
}

# state.json as on disk without journal replay (after a clean power-off).
state_json() { debugfs -R "cat $STATE_REL" "$DISK?offset=$DATA_OFF" 2>/dev/null || true; }
# state.json as the guest's next mount sees it: after a power cut the newest
# metadata may sit in the ext4 journal, which debugfs does not replay; replay
# it (and only it) on a copy of the data partition.
state_json_replayed() {
    local part="$W/data-replayed.img"
    dd if="$DISK" of="$part" bs=1M skip=$((DATA_OFF / MIB)) count="$DATA_MB" status=none
    e2fsck -E journal_only -p "$part" >/dev/null 2>&1 || true
    debugfs -R "cat $STATE_REL" "$part" 2>/dev/null || true
    rm -f "$part"
}

# guest_status [LABEL]: the `abupdate --json status` the guest printed on its
# "ABTEST: status-json LABEL" marker line in this boot's log (default: the one
# after the health verdict), pretty JSON folded onto that one line.
guest_status() {
    sed -n "s/^ABTEST: status-json ${1:-after-health} //p" "$LOG.txt" | head -n 1
}

host_slot_write() { # SLOT VERSION: the release's image written into the slot on the host
    dd if="$BUILD/rootfs-$2.img" of="$DISK" bs=1M seek=$(( $(slot_off "$1") / MIB)) conv=notrunc status=none
}
slot_holds() { # SLOT IMG: the slot's first IMG_MB MiB equal the image
    cmp -s -n $((IMG_MB * MIB)) <(dd if="$DISK" bs=1M skip=$(( $(slot_off "$1") / MIB)) count="$IMG_MB" status=none) "$2"
}
# Percentage of the slot's bytes (1 MiB chunks that differ between the old and
# the new image) that already hold the new image.
written_pct() { # SLOT OLD_IMG NEW_IMG
    local off=$(( $(slot_off "$1") / MIB)) i n=0 done=0 o nw c
    for i in $(seq 0 $((IMG_MB - 1))); do
        o="$(dd if="$2" bs=1M skip="$i" count=1 status=none | md5sum)"
        nw="$(dd if="$3" bs=1M skip="$i" count=1 status=none | md5sum)"
        [ "$o" != "$nw" ] || continue
        n=$((n + 1))
        c="$(dd if="$DISK" bs=1M skip=$((off + i)) count=1 status=none | md5sum)"
        [ "$c" != "$nw" ] || done=$((done + 1))
    done
    [ "$n" -gt 0 ] || { echo 100; return; }
    echo $((done * 100 / n))
}

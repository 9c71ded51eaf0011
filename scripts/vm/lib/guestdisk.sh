# Sourced by scripts/vm-test.sh: reading the guest's disk on the host, between
# boots.  grubenv and state.json are read with debugfs, which (like GRUB)
# reads the file system without replaying its journal; state.json can also be
# read as the guest's next mount sees it (journal replayed on a copy).  The
# guest's `abupdate --json status` comes from its serial log.
#
# In: W, DISK, BOOT_OFF, DATA_OFF, LOG.

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

# state.json as on disk without journal replay (after a clean power-off).
state_json() { debugfs -R "cat /abupdate/state.json" "$DISK?offset=$DATA_OFF" 2>/dev/null || true; }
# state.json as the guest's next mount sees it: after a power cut the newest
# metadata may sit in the ext4 journal, which debugfs does not replay; replay
# it (and only it) on a copy of the data partition.
state_json_replayed() {
    local part="$W/data-replayed.img"
    dd if="$DISK" of="$part" bs=1M skip=$((DATA_OFF / MIB)) count="$DATA_MB" status=none
    e2fsck -E journal_only -p "$part" >/dev/null 2>&1 || true
    debugfs -R "cat /abupdate/state.json" "$part" 2>/dev/null || true
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

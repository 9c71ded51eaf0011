# Sourced by scripts/vm-test.sh: the checks a scenario makes after a boot.
# Each prints "ok: WHAT" or "FAIL: WHAT (why)" and counts failures in ERRS;
# none stops the scenario, so one run shows every broken promise.
#
# Four sources, each read as the structure it is:
#   the serial log   marker lines the guest prints ("ABTEST: ..."), GRUB's own
#                    "abupdate-grub: ..." lines (expect_log, expect_boot)
#   grubenv          as grub-editenv reads it from the disk (expect_env)
#   --json status    the guest's `abupdate --json status`, with jq (expect_status)
#   state.json       read back from /data, with jq (expect_state)

ERRS=0
bad() { say "  FAIL: $*"; ERRS=$((ERRS + 1)); }
ok() { say "  ok: $*"; }

SHOWN=""
show_log() {
    [ "$SHOWN" = "$LOG" ] && return; SHOWN="$LOG"
    say "  --- last lines of $(basename "$LOG"):"
    grep -vE '^\s*$' "$LOG.txt" | tail -n 25 | sed 's/^/    | /'
}
expect_log() { # REGEX DESC
    if grep -qE "$1" "$LOG.txt"; then ok "$2"; else bad "$2 (no /$1/ in $(basename "$LOG"))"; show_log; fi
}
expect_no_log() { # REGEX DESC
    if grep -qE "$1" "$LOG.txt"; then bad "$2 (found: $(grep -E "$1" "$LOG.txt" | head -n 1))"; show_log; else ok "$2"; fi
}
expect_ended() { # exit|killed: how the last qemu run ended
    if [ "$ENDED" = "$1" ]; then ok "qemu run ended by $1"; else bad "qemu run ended by $ENDED, expected $1"; show_log; fi
}

# ---------------------------------------------------------------- JSON (jq)
# expect_json DESC JSON FILTER [JQ-ARGS...]: FILTER (jq -e) holds for JSON,
# which must be exactly one JSON document.
expect_json() {
    local desc="$1" json="$2" filter="$3"; shift 3
    if [ -z "$json" ]; then bad "$desc (no JSON)"; return; fi
    if ! jq -e -s 'length == 1' >/dev/null 2>&1 <<<"$json"; then
        bad "$desc (not one JSON document: $(head -c 300 <<<"$json"))"; return
    fi
    if jq -e "$@" "$filter" >/dev/null 2>&1 <<<"$json"; then ok "$desc"
    else bad "$desc (jq: $(tr -s ' \n' ' ' <<<"$filter"); got $(jq -c . <<<"$json" | head -c 600))"; fi
}
# expect_status DESC FILTER [JQ-ARGS...]: on the guest's `abupdate --json
# status` printed after the health verdict of the last boot.
expect_status() {
    local desc="$1" filter="$2"; shift 2
    expect_json "status: $desc" "$(guest_status after-health)" "$filter" "$@"
}
# expect_state DESC FILTER [JQ-ARGS...]: on state.json as it is on the disk.
expect_state() {
    local desc="$1" filter="$2"; shift 2
    expect_json "state.json: $desc" "$(state_json)" "$filter" "$@"
}
# expect_state_replayed: the same once the journal is replayed, as the
# guest's next mount sees it (after a reboot or power cut without umount).
expect_state_replayed() {
    local desc="$1" filter="$2"; shift 2
    expect_json "state.json (journal replayed): $desc" "$(state_json_replayed)" "$filter" "$@"
}
# The release VERSION is on this host's list of failed releases.
expect_failed_release() { # VERSION
    expect_state "records release $1 as failed" \
        '.failed | map(select(.version == $v and (.reason | length > 0))) | length == 1' --arg v "$1"
}

# ---------------------------------------------------------------- grubenv
expect_env() { # VAR=VALUE ...: grubenv on disk after the boot
    local list kv k v got fails=0
    list="$(env_list)"
    for kv in "$@"; do
        k="${kv%%=*}" v="${kv#*=}"
        got="$(env_val "$k" "$list")"
        if [ "$got" != "$v" ]; then bad "grubenv $k is '$got', expected '$v'"; fails=1; fi
    done
    [ "$fails" = 1 ] || ok "grubenv: $*"
}
expect_env_valid() {
    env_dump > "$W/grubenv.check"
    if [ "$(stat -c %s "$W/grubenv.check")" = 1024 ] && grub-editenv "$W/grubenv.check" list >/dev/null 2>&1 \
        && head -n 1 "$W/grubenv.check" | grep -q '^# GRUB Environment Block'; then
        ok "grubenv is a valid 1024-byte env block (grub-editenv list)"
    else
        bad "grubenv on disk is not a valid env block"; od -c "$W/grubenv.check" | head -n 8
    fi
}
expect_primary() { # SLOT: the slot GRUB boots next
    local first; first="$(primary_slot)"
    if [ "$first" = "$1" ]; then ok "GRUB boots $1 next (ORDER=$(env_val ORDER), first OK slot with TRY=0)"
    else bad "GRUB would boot '${first:-none}' next, expected $1 ($(env_vars))"; fi
}

# ---------------------------------------------------------------- slots
expect_slot_holds() { # SLOT VERSION [DESC]: byte for byte
    if slot_holds "$1" "$BUILD/rootfs-$2.img"; then ok "${3:-slot $1 holds release $2 byte for byte}"
    else bad "${3:-slot $1 holds release $2 byte for byte} (it does not)"; fi
}

# ---------------------------------------------------------------- one boot
# GRUB booted SLOT with the env that was on disk before the boot, set its TRY
# flag before starting it (the guest sees X_TRY=1), and the slot's init reported
# VERSION.
expect_boot() { # SLOT VERSION [HOW [panics]]
    local slot="$1" ver="$2" how="${3:-normal}" panics="${4:-}" line k v want
    expect_log "abupdate-grub: booting slot $slot \($how\)" "GRUB chose slot $slot ($how)"
    line="$(grep 'abupdate-grub: env ' "$LOG.txt" | head -n 3 | tr '\n' ' ' || true)"
    if [ -n "$line" ]; then
        local mism=""
        for k in ORDER A_OK A_TRY B_OK B_TRY A_LEFT B_LEFT; do
            v="$(sed -n "s/.* $k=\[\([^]]*\)\].*/\1/p" <<<"$line")"
            want="$(env_val "$k" "$PRE_ENV")"
            case "$k" in ORDER) want="${want:-A B}" ;; *_OK|*_TRY) want="${want:-0}" ;; esac
            [ "$v" = "$want" ] || mism+=" $k: GRUB=[$v] disk=[$want]"
        done
        if [ -z "$mism" ]; then ok "GRUB saw exactly the env on disk before the boot"; else bad "GRUB's env differs from the disk:$mism"; fi
    else
        bad "no 'abupdate-grub: env' line"; show_log
    fi
    if [ -n "$ver" ]; then
        expect_log "ABTEST: boot slot=$slot version=$ver " "slot $slot runs release $ver"
        if [ -z "$panics" ]; then
            expect_log "ABTEST: grubenv-at-boot .*${slot}_TRY=1( |$)" "${slot}_TRY=1 set by GRUB before booting $slot"
        fi
    fi
}
# After a passing health verdict: the booted slot and version, its record
# good (committed or re-blessed), GRUB's view of it good.
expect_healthy_status() { # SLOT VERSION
    expect_status "booted $1 $2, its record good, the bootloader's too" \
        '.booted_slot == $s and .booted_version == $v and .slots[$s].record.status == "good"
         and .slots[$s].record.version == $v and .slots[$s].bootloader_state == "good"' \
        --arg s "$1" --arg v "$2"
}
# A trial that failed: the slot's record is bad and names the release, and
# the bootloader will not boot it.
expect_retired_status() { # SLOT VERSION
    expect_status "slot $1 retired: its record bad with $2, the bootloader's bad" \
        '.slots[$s].record.status == "bad" and .slots[$s].record.version == $v
         and .slots[$s].bootloader_state == "bad"' --arg s "$1" --arg v "$2"
}
healthy_boot_checks() { # SLOT VERSION: a boot with nothing to install
    expect_boot "$1" "$2"
    expect_log 'ABTEST: health rc=0' "abupdate health exit 0"
    expect_healthy_status "$1" "$2"
    expect_status "nothing pending, $1 boots next" '.transaction == null and .primary_slot == $s' --arg s "$1"
    expect_log 'ABTEST: update rc=0' "abupdate update exit 0 (nothing to install)"
    expect_no_log 'ABTEST: reboot requested' "no reboot requested"
    expect_ended exit
}
install_boot_checks() { # SLOT VERSION: a healthy boot that installs and reboots
    expect_boot "$1" "$2"
    expect_log 'ABTEST: health rc=0' "abupdate health exit 0"
    expect_healthy_status "$1" "$2"
    expect_log 'ABTEST: update start' "abupdate update started"
    expect_log 'ABTEST: reboot requested' "update ran the reboot command"
    expect_no_log 'ABTEST: update rc=' "update did not return (it rebooted)"
    expect_ended exit
    expect_state_replayed "release $SERVED staged from $1 into the other slot" \
        '.transaction.phase == "staged" and .transaction.from == $s and .transaction.to != $s
         and .transaction.version == $v' --arg s "$1" --arg v "$SERVED"
}

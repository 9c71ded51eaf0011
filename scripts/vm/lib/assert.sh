# Sourced by scripts/vm-test.sh: the checks a scenario makes after a boot.
# Each prints "ok: WHAT" or "FAIL: WHAT (why)" and counts failures in ERRS;
# none stops the scenario, so one run shows every broken promise.
#
# The sources, each read as the structure it is:
#   the serial log   marker lines the guest prints ("ABTEST: ..."), GRUB's own
#                    "abupdate-grub: ..." lines, OVMF's "BdsDxe: ..." lines
#                    (expect_log, expect_boot)
#   grubenv          as grub-editenv reads it from the disk (expect_env)
#   NVRAM            the guest's OVMF_VARS copy, read back on the host with
#                    virt-fw-vars (expect_efi, expect_efi_entry)
#   the ESP          its loader/entries read with mtools, systemd-boot's choice
#                    as the real bootctl makes it (expect_entries, expect_sdboot_next)
#   --json status    the guest's `abupdate --json status`, with jq (expect_status)
#   state.json       read back from the data partition, with jq (expect_state)
#   the journal      the systemd guest's, with journalctl (expect_journal)

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

# ---------------------------------------------------------------- UEFI NVRAM
# expect_efi ORDER="B A" NEXT=A|none: the slots' entries in BootOrder, in
# their order (the firmware's own entries left out), and the slot BootNext
# names; read back from the NVRAM file after the boot.
expect_efi() {
    local list kv k v got fails=0
    list="$(nvram_list)"
    for kv in "$@"; do
        k="${kv%%=*}" v="${kv#*=}"
        case "$k" in
            ORDER) got="$(nvram_order_slots "$list")" ;;
            NEXT) got="$(nvram_val BootNext "$list")"
                  if [ -z "$got" ]; then got=none; else got="$(nvram_slot_of "$got" "$list")"; fi ;;
            *) die "expect_efi: no variable $k" ;;
        esac
        if [ "$got" != "$v" ]; then bad "NVRAM: $k is '$got', expected '$v' ($(nvram_vars))"; fails=1; fi
    done
    [ "$fails" = 1 ] || ok "NVRAM: $* ($(nvram_vars))"
}
# SLOT's Boot#### entry exists, active, and starts the slot's kernel from
# the ESP (HD(1,GPT,<ESP>,…)/\EFI\abupdate-x\vmlinuz.efi) with its command line.
expect_efi_entry() { # SLOT [NUM]
    local list n line l want
    list="$(nvram_list)"
    n="${2:-$(nvram_entry "$1" "$list")}"
    line="$(sed -n "s/^Boot$n=//p" <<<"$list")"
    l="$(slot_lower "$1")"
    want="abupdate $1|HD(1,GPT,$(tr A-F a-f <<<"$P1_GUID"),0x800,$(printf '%#x' $((P1_MB * 2048))))/\\EFI\\abupdate-$l\\vmlinuz.efi|$(slot_cmdline "$1")|active"
    if [ -n "$n" ] && [ "$line" = "$want" ]; then ok "Boot$n is slot $1's entry: $line"
    else bad "slot $1's entry Boot${n:-????} is '${line:-missing}', expected '$want'"; fi
}
# The entry the firmware boots next (BootNext, else BootOrder's first) is SLOT's.
expect_efi_next() { # SLOT
    local list n
    list="$(nvram_list)"; n="$(nvram_next_entry "$list")"
    if [ -n "$n" ] && [ "$(nvram_slot_of "$n" "$list")" = "$1" ]; then ok "the firmware boots Boot$n (slot $1) next"
    else bad "the firmware boots Boot${n:-none} next, expected slot $1's entry ($(nvram_vars))"; fi
}

# ---------------------------------------------------------------- the ESP
expect_entries() { # NAME...: loader/entries holds exactly these files
    local got want
    got="$(esp_entries | tr '\n' ' ' | sed 's/ $//')"
    want="$(printf '%s\n' "$@" | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')"
    if [ "$got" = "$want" ]; then ok "ESP loader/entries: $got"; else bad "ESP loader/entries: '$got', expected '$want'"; fi
}
expect_sdboot_next() { # SLOT: the real bootctl's default entry is SLOT's
    local d; d="$(bootctl_default)"
    if [ "$d" = "$1" ]; then ok "bootctl list: slot $1's entry is the default"
    else bad "bootctl list: the default entry is slot ${d:-none}'s, expected $1 ($(esp_entries | tr '\n' ' '))"; fi
}
expect_esp_clean() { # fsck.vfat -n finds nothing to repair on the ESP (but the dirty bit)
    local r; r="$(esp_fsck)"
    case "$r" in
        ok) ok "fsck.vfat -n: the ESP is clean" ;;
        ok-dirty) ok "fsck.vfat -n: the ESP is consistent (only the dirty bit of a vfat not unmounted)" ;;
        *) bad "fsck.vfat -n on the ESP: $r" ;;
    esac
}

# ---------------------------------------------------------------- the journal
expect_journal() { # REGEX DESC [JOURNALCTL-ARGS...]: a line of the guest's journal
    local re="$1" desc="$2"; shift 2
    if guest_journal -o cat "$@" | grep -qE "$re"; then ok "journal: $desc"
    else bad "journal: $desc (no /$re/ in journalctl $*)"; fi
}

expect_no_journal() { # REGEX DESC [JOURNALCTL-ARGS...]: no such line in the guest's journal
    local re="$1" desc="$2" hit; shift 2
    hit="$(guest_journal -o cat "$@" | grep -E -m1 "$re" || true)"
    if [ -z "$hit" ]; then ok "journal: $desc"; else bad "journal: $desc (found: $hit)"; fi
}

# ---------------------------------------------------------------- one boot
# expect_boot SLOT VERSION [HOW [panics]]: the bootloader booted SLOT as the
# state on disk before the boot (PRE_ENV) said it would, and the slot's init
# reported VERSION.  HOW is GRUB's (normal, new-round).
expect_boot() {
    case "$BOOT" in
        grub) expect_boot_grub "$@" ;;
        efi) expect_boot_efi "$@" ;;
        systemd-boot) expect_boot_sdboot "$@" ;;
    esac
    if [ -n "$2" ]; then
        expect_log "ABTEST: boot slot=$1 version=$2 " "slot $1 runs release $2"
    fi
}
# OVMF: the entry it started is the one the NVRAM named (BootNext, consumed
# before it starts the entry, else BootOrder's first), and the guest sees
# BootCurrent = that entry and BootNext gone.
expect_boot_efi() { # SLOT VERSION [HOW [panics]]
    local want next how="the first of BootOrder"
    want="$(nvram_next_entry "$PRE_ENV")" next="$(nvram_val BootNext "$PRE_ENV")"
    [ -z "$next" ] || how=BootNext
    if [ "$(nvram_slot_of "$want" "$PRE_ENV")" = "$1" ]; then
        ok "the NVRAM before the boot named slot $1's Boot$want ($how)"
    else
        bad "the NVRAM before the boot named Boot${want:-none}, not slot $1's"
    fi
    expect_log "BdsDxe: starting Boot$want \"abupdate $1\"" "OVMF started Boot$want \"abupdate $1\""
    if [ "${4:-}" != panics ] && [ -n "$2" ]; then
        expect_log "ABTEST: efi-at-boot BootCurrent=$want BootNext=none " \
            "the guest booted from Boot$want${next:+; the firmware deleted BootNext before starting it}"
    fi
}
# systemd-boot: it chose the entry the real bootctl chose from the ESP before
# the boot, and counted a trial down (LEFT-1, DONE+1) before starting it.
expect_boot_sdboot() { # SLOT VERSION [HOW [panics]]
    local d name rest l
    d="$(sed -n 's/^default=//p' <<<"$PRE_ENV")"
    if [ "$d" = "$1" ]; then ok "bootctl chose slot $1's entry before the boot"
    else bad "bootctl chose slot ${d:-none}'s entry before the boot, not $1's"; fi
    l="$(slot_lower "$1")"
    name="$(sed -n "s/^entry=\(abupdate-[0-9]*-$l\(+[0-9-]*\)\{0,1\}\.conf\)\$/\1/p" <<<"$PRE_ENV" | head -n 1)"
    if [[ "$name" =~ ^(abupdate-[0-9]+-[ab])\+([0-9]+)(-([0-9]+))?\.conf$ ]]; then
        rest="${BASH_REMATCH[1]}+$((BASH_REMATCH[2] - 1))-$(( ${BASH_REMATCH[4]:-0} + 1 )).conf"
        if [ "${4:-}" = panics ] || [ -z "$2" ]; then
            if esp_entries | grep -qxF "$rest"; then ok "systemd-boot counted $name down to $rest"
            else bad "systemd-boot did not count $name down to $rest ($(esp_entries | tr '\n' ' '))"; fi
        else
            expect_log "ABTEST: loader-at-boot selected=.* entries=(.*,)?${rest//+/\\+}(,|\$)" \
                "systemd-boot counted $name down to $rest before starting it"
        fi
    fi
}
# GRUB booted SLOT with the env that was on disk before the boot, set its TRY
# flag before starting it (the guest sees X_TRY=1).
expect_boot_grub() { # SLOT VERSION [HOW [panics]]
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
    if [ -n "$ver" ] && [ -z "$panics" ]; then
        expect_log "ABTEST: grubenv-at-boot .*${slot}_TRY=1( |\$)" "${slot}_TRY=1 set by GRUB before booting $slot"
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
    systemd_boot_checks
}
# The systemd guest: the shipped units did it (the timer fired update after
# health's verdict), abupdate's lines are in the journal.
systemd_boot_checks() {
    [ "$GUEST" = systemd ] || return 0
    expect_log 'ABTEST: boot slot=.* init=systemd' "PID 1 became systemd"
    expect_log 'ABTEST: update start.* by abupdate\.timer' "abupdate.service was fired by abupdate.timer"
    expect_journal '^abupdate: ' "abupdate's own lines, from abupdate-health.service" -u abupdate-health.service -b -0
    # Also on the boot whose update ran the reboot command, which stops
    # abupdate.service while abupdate waits for it.
    expect_no_journal 'Failed with result' "no abupdate unit failed" \
        -u abupdate.service -u abupdate-health.service -b -0
}
install_boot_checks() { # SLOT VERSION: a healthy boot that installs and reboots
    expect_boot "$1" "$2"
    expect_log 'ABTEST: health rc=0' "abupdate health exit 0"
    expect_healthy_status "$1" "$2"
    expect_log 'ABTEST: update start' "abupdate update started"
    expect_log 'ABTEST: reboot requested' "update ran the reboot command"
    expect_no_log 'ABTEST: update rc=' "update did not return (it rebooted)"
    expect_ended exit
    systemd_boot_checks
    expect_state_replayed "release $SERVED staged from $1 into the other slot" \
        '.transaction.phase == "staged" and .transaction.from == $s and .transaction.to != $s
         and .transaction.version == $v' --arg s "$1" --arg v "$SERVED"
}

# Sourced by scripts/vm-test.sh: the scenarios, which of them run, from which
# disk, and the count.
#
# A scenario is one file $SCENARIO_DIR/NN-name.sh that defines
#   TITLE       one line, as the README describes it
#   AFTER       the scenario whose end state it continues from ("" = the
#               factory disk: release 1.0 in slot A, B empty)
#   RELEASES    the releases it publishes: "VERSION:FLAVOR[:failpoints] ..."
#               (scripts/vm/lib/disk.sh builds the union of all of them)
#   GUESTS      the guests it runs with (default "busybox"; "busybox systemd")
#   scenario()  its boots and checks
# Sourcing one has no side effect.  A run sees only the scenarios of its
# GUEST.  After a scenario passes, the disk (with, for UEFI, its NVRAM) and
# what the server offers are saved as its checkpoint in $BUILD/checkpoints, so a
# chosen scenario starts from its AFTER's checkpoint; without a valid one, AFTER
# runs first (and is counted).  A checkpoint is valid for the build it was made
# with and while the files that shaped the disk (the scenario, its ancestors,
# the libs other than the checks) are unchanged.
#
# In: REPO, SCENARIO_DIR, SUITE_LETTER (s, g: in log names), BUILD, DISK,
# KEEP_GOING.

CHECKPOINT_VARS=(SERVED)

scenario_ids() { # every scenario of the suite that runs with GUEST, in file order
    local f id
    for f in "$SCENARIO_DIR"/[0-9][0-9]-*.sh; do
        [ -e "$f" ] || continue
        id="$(basename "$f" .sh)"
        load_scenario "$id"
        in_list "$GUEST" $GUESTS_OF && echo "$id"
    done
}
load_scenario() { # ID: its TITLE, AFTER, RELEASES, GUESTS and scenario()
    TITLE="" AFTER="" RELEASES_OF="" GUESTS_OF=""
    unset -f scenario
    local RELEASES="" GUESTS="busybox"
    # shellcheck source=/dev/null
    . "$SCENARIO_DIR/$1.sh"
    RELEASES_OF="$RELEASES" GUESTS_OF="$GUESTS"
    declare -F scenario >/dev/null || die "$SCENARIO_DIR/$1.sh defines no scenario()"
    [ -n "$TITLE" ] || die "$SCENARIO_DIR/$1.sh sets no TITLE"
    if [ -n "$AFTER" ] && [ ! -f "$SCENARIO_DIR/$AFTER.sh" ]; then
        die "$SCENARIO_DIR/$1.sh: AFTER=$AFTER is no scenario"
    fi
    if [ -n "$AFTER" ] && in_list "$GUEST" $GUESTS_OF \
        && ! in_list "$GUEST" $(load_scenario "$AFTER"; echo "$GUESTS_OF"); then
        die "$SCENARIO_DIR/$1.sh runs with the $GUEST guest, but AFTER=$AFTER does not"
    fi
}
# resolve_scenario NAME -> ID: "3", "03", "03-health-fails" or "health-fails".
resolve_scenario() {
    local id
    for id in $(scenario_ids); do
        if [ "$1" = "$id" ] || [ "$1" = "${id#*-}" ] \
            || { [[ "$1" =~ ^[0-9]+$ ]] && [ "$((10#$1))" = "$((10#${id%%-*}))" ]; }; then
            echo "$id"; return
        fi
    done
    die "no scenario '$1' for the $GUEST guest in $SCENARIO_DIR (scripts/vm-test.sh --list)"
}
list_scenarios() {
    local id
    for id in $(scenario_ids); do
        load_scenario "$id"
        printf '%-26s %s%s\n' "$id" "$TITLE" "${AFTER:+ (continues $AFTER)}"
    done
}
# The releases the chosen scenarios and the ones they continue from publish,
# 1.0 (the factory's) first: a run of one scenario builds only what it can
# boot (ensure_build adds the missing ones to an existing build).
suite_releases() { # ID...
    local id all=""
    for id in "$@"; do
        while [ -n "$id" ]; do load_scenario "$id"; all+=" $RELEASES_OF"; id="$AFTER"; done
    done
    tr ' ' '\n' <<<"$all" | grep -v '^$' | awk -F: '!seen[$1]++' | sort -t: -k1,1V | paste -sd' '
}

# ---------------------------------------------------------------- checkpoints
ckpt_dir() { echo "$BUILD/checkpoints"; }
# The files that shaped the disk at the end of ID: it, its ancestors, the libs.
chain_hash() { # ID
    local id="$1" files=()
    while [ -n "$id" ]; do
        files+=("$SCENARIO_DIR/$id.sh")
        id="$(load_scenario "$id"; echo "$AFTER")"
    done
    ( cd "$REPO/scripts/vm/lib" && ls ./*.sh | grep -vx './assert.sh' | xargs cat; cat "${files[@]}" ) | sha256sum | cut -c1-32
}
checkpoint_valid() { # ID
    local c; c="$(ckpt_dir)/$1"
    [ -s "$c.img" ] && [ -s "$c.vars" ] && [ "$(cat "$c.hash" 2>/dev/null)" = "$(chain_hash "$1")" ] \
        && { [ "$FIRMWARE" != ovmf ] || [ -s "$c.nvram" ]; }
}
checkpoint_drop() { rm -f "$(ckpt_dir)/$1".{img,vars,hash,nvram}; }
checkpoint_save() { # ID
    local c v; c="$(ckpt_dir)/$1"
    mkdir -p "$(ckpt_dir)"
    cp --sparse=always "$DISK" "$c.img"
    if [ "$FIRMWARE" = ovmf ]; then cp "$VARS" "$c.nvram"; fi
    for v in "${CHECKPOINT_VARS[@]}"; do printf '%s=%q\n' "$v" "${!v}"; done > "$c.vars"
    chain_hash "$1" > "$c.hash"
}
checkpoint_restore() { # ID
    local c; c="$(ckpt_dir)/$1"
    cp --sparse=always "$c.img" "$DISK"
    if [ "$FIRMWARE" = ovmf ]; then cp "$c.nvram" "$VARS"; fi
    # shellcheck source=/dev/null
    . "$c.vars"
    if [ -n "$SERVED" ]; then publish "$SERVED"; else publish_nothing; fi
    say "disk restored from the checkpoint after $1"
}

# ---------------------------------------------------------------- the plan
PLAN=() SELECTED=() PASSED=0 FAILED=0 SUMMARY_DONE=0
in_list() { local x="$1" y; shift; for y in "$@"; do [ "$x" = "$y" ] && return 0; done; return 1; }
plan_add() { # ID: it, after what it needs that no checkpoint provides
    local id="$1" after
    in_list "$id" "${PLAN[@]}" && return
    after="$(load_scenario "$id"; echo "$AFTER")"
    if [ -n "$after" ] && ! in_list "$after" "${SELECTED[@]}" && ! checkpoint_valid "$after"; then
        plan_add "$after"
    fi
    PLAN+=("$id")
}
make_plan() { # SELECTED -> PLAN, in file order
    local id
    PLAN=()
    for id in $(scenario_ids); do
        in_list "$id" "${SELECTED[@]}" && plan_add "$id"
    done
    # plan_add appends prerequisites before their dependants; file order is
    # that order too, as AFTER always names an earlier file.
    mapfile -t PLAN < <(printf '%s\n' "${PLAN[@]}" | sort)
}

# The count, also when the run dies half-way: what did not pass failed.
summary() {
    [ "$SUMMARY_DONE" = 1 ] && return
    SUMMARY_DONE=1
    local total=${#PLAN[@]}
    [ "$total" -gt 0 ] || total=${#SELECTED[@]}
    echo "$PASSED passed, $((total - PASSED)) failed"
}
# COUNTING: set once the run starts (argument errors exit 2 without a count).
COUNTING=0
scenario_exit_hook() { [ "$1" = 0 ] || [ "$COUNTING" = 0 ] || summary; }
on_exit scenario_exit_hook

run_plan() {
    local id last="" stop=0 b0 ms0 secs i role
    for id in "${PLAN[@]}"; do
        load_scenario "$id"
        role=""; in_list "$id" "${SELECTED[@]}" || role=" (prerequisite)"
        if [ "$stop" = 1 ]; then
            say "FAIL $id: $TITLE (not run: an earlier scenario failed)"
            FAILED=$((FAILED + 1)); continue
        fi
        say "=== $id$role: $TITLE"
        if [ -z "$AFTER" ]; then
            if [ -n "$last" ]; then factory_restore; say "disk: the factory image"; fi
        elif [ "$AFTER" != "$last" ]; then
            checkpoint_valid "$AFTER" || die "$id continues $AFTER, which has no checkpoint"
            checkpoint_restore "$AFTER"
        fi
        checkpoint_drop "$id"
        BOOT_PREFIX="$SUITE_LETTER$((10#${id%%-*}))-"
        ERRS=0 b0=$BOOTNO ms0=${#BOOT_MS[@]}
        scenario || bad "scenario() returned non-zero"
        secs=""
        for ((i = ms0; i < ${#BOOT_MS[@]}; i++)); do secs+="${secs:+, }$(ms2s "${BOOT_MS[$i]}")"; done
        if [ "$ERRS" = 0 ]; then
            say "PASS $id: $TITLE (boots $((b0 + 1))-$BOOTNO: ${secs} s)"
            PASSED=$((PASSED + 1))
            checkpoint_save "$id"
        else
            say "FAIL $id: $TITLE ($ERRS failed checks; logs in $LOGS)"
            FAILED=$((FAILED + 1))
            [ "$KEEP_GOING" = 1 ] || stop=1
        fi
        last="$id"
    done
}

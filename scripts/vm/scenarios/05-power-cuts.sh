# Power cuts (qemu killed, guest writes throttled) at 15%, 40% and 65% of
# writing v5, and at the reboot request (`poweroff -f -n`: no sync): the next boot is
# always a good slot, GRUB sees the env abupdate last wrote, and the install
# completes on a later boot.
TITLE="power cuts mid-install and at the reboot: always a good slot, install completes"
AFTER=04-never-comes-up
RELEASES="5.0:good"

# The cuts are placed by the write's own progress, as abupdate reports it on
# the (serial) terminal ("rootfs 5.0 [###   ]  40% 19/48 MiB"), not by time:
# under a loaded host a timed cut may land before the write or after the reboot.
at_least_pct() { # P -> a regex for a progress report of P% or more (P = 10..99)
    local t=$(($1 / 10)) u=$(($1 % 10)) alt="100"
    [ "$t" -lt 9 ] && alt+="|[$((t + 1))-9][0-9]"
    echo "rootfs 5\\.0 \\[[# ]*\\] +($alt|${t}[$u-9])%"
}

scenario() {
    publish 5.0
    local pct at mid=0
    for at in 15 40 65; do
        boot_vm "cut-$at" normal "$(at_least_pct "$at")" 0
        expect_boot B 2.0
        expect_log 'ABTEST: health rc=0' "health passed before the cut"
        expect_ended killed
        expect_no_log 'ABTEST: reboot requested' "cut landed before the reboot"
        expect_env_valid
        expect_env B_OK=1 A_OK=0
        expect_primary B
        pct="$(written_pct A "$BUILD/rootfs-4.0.img" "$BUILD/rootfs-5.0.img")"
        say "  power cut once abupdate reported $at% written: $pct% of slot A's new bytes were on disk"
        if [ "$pct" -gt 0 ] && [ "$pct" -lt 100 ]; then mid=$((mid + 1)); fi
    done
    if [ "$mid" -gt 0 ]; then ok "$mid of 3 power cuts landed mid-write"
    else bad "no power cut landed mid-write"; fi

    boot_vm cut-at-reboot cut-at-reboot
    expect_boot B 2.0
    expect_log 'ABTEST: reboot requested mode=cut-at-reboot' "install finished; reboot = poweroff -f -n (no sync)"
    expect_ended exit
    expect_env_valid
    expect_env ORDER="A B" A_OK=1 A_TRY=0 B_OK=1
    expect_slot_holds A 5.0 "slot A holds release 5.0 byte for byte despite the cut"

    boot_vm trial-v5 normal
    healthy_boot_checks A 5.0
    expect_env ORDER="A B" A_OK=1 A_TRY=0 B_OK=1
}

# GRUB sets TRY on every slot it boots and the good slot re-blesses itself on
# every healthy boot, over consecutive boots; a later failure of the other
# slot then falls straight back.
TITLE="TRY set on every boot, good slot re-blessed every healthy boot"
AFTER=05-power-cuts
RELEASES="6.0:panics"

scenario() {
    local i
    for i in 1 2 3; do
        boot_vm "healthy-$i" normal
        healthy_boot_checks A 5.0
        expect_env ORDER="A B" A_OK=1 A_TRY=0 B_OK=1 B_TRY=0
    done
    # What re-blessing buys: a later trial of the other slot that never comes
    # up sends GRUB straight back to A (A_TRY=0), with no "new round" that
    # would give the failed slot another try.
    publish 6.0
    boot_vm install-v6 normal
    install_boot_checks A 5.0
    expect_env ORDER="B A" B_OK=1 B_TRY=0 A_OK=1 A_TRY=0
    boot_vm trial-v6 normal
    expect_boot B 6.0 normal panics
    expect_log 'Kernel panic' "v6 never comes up"
    expect_ended exit
    expect_env ORDER="B A" A_OK=1 A_TRY=0 B_OK=1 B_TRY=1
    boot_vm back-to-A normal
    healthy_boot_checks A 5.0
    expect_env A_OK=1 A_TRY=0 B_OK=0
    expect_primary A
    expect_failed_release 6.0

    # The contrast, forged on the host: had A not re-blessed itself (A_TRY
    # still 1) when B's trial failed, no slot would qualify and the GRUB
    # script would start a new round (reset both TRY flags), which boots the
    # failed B once more.
    say "  contrast (env forged on the host): A not re-blessed (A_TRY=1) and B's trial failed (B_TRY=1)"
    host_env_edit set ORDER="B A" A_OK=1 A_TRY=1 B_OK=1 B_TRY=1
    boot_vm without-rebless probe
    expect_boot B 6.0 new-round panics
    expect_log 'Kernel panic' "without re-blessing, the failed slot B is booted again"
    expect_env A_TRY=0 B_TRY=1
}

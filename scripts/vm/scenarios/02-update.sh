# `update` finds v2, writes slot B, reboots; GRUB boots B; health commits it;
# B boots again.
TITLE="update to v2 into slot B, trial boot, commit, B boots again"
AFTER=01-first-boot
RELEASES="2.0:good"

scenario() {
    publish 2.0
    boot_vm install-v2 normal
    install_boot_checks A 1.0
    note_install_time
    expect_env ORDER="B A" B_OK=1 B_TRY=0 A_OK=1 A_TRY=0
    expect_slot_holds B 2.0

    boot_vm trial-v2 normal
    healthy_boot_checks B 2.0
    expect_env ORDER="B A" B_OK=1 B_TRY=0

    boot_vm next-boot normal
    healthy_boot_checks B 2.0
    expect_env ORDER="B A" B_OK=1 B_TRY=0
}

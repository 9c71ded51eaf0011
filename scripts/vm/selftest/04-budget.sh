# Budget mode (RAUC's X_LEFT): B_LEFT=2 counts down 2 -> 1 -> 0 without
# arithmetic in GRUB, then GRUB moves to A.
TITLE="budget mode: B_LEFT counts down 2, 1, 0, then GRUB moves to A"
AFTER=03-new-round

scenario() {
    host_env_edit set B_LEFT=2 B_TRY=0
    boot_vm budget-2 probe
    expect_boot B 1.0
    expect_env B_LEFT=1 B_TRY=1
    boot_vm budget-1 probe
    expect_boot B 1.0
    expect_env B_LEFT=0 B_TRY=1
    boot_vm budget-0 probe
    expect_boot A 1.0
    expect_env B_LEFT=0 A_TRY=1
}

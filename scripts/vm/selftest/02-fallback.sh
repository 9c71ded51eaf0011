# A was tried and never blessed (A_TRY=1), B is good: GRUB must take B.
TITLE="A tried and never blessed, B good: GRUB takes B"
AFTER=01-factory

scenario() {
    host_slot_write B 1.0
    host_env_edit set B_OK=1 B_TRY=0
    boot_vm fallback probe
    expect_boot B 1.0 normal
    expect_env ORDER="A B" A_OK=1 A_TRY=1 B_OK=1 B_TRY=1
}

# Damaged values read as GRUB's -eq reads them: A_OK=yes is not OK, B_TRY=x
# is 0 (untried).
TITLE="damaged values: A_OK=yes is not OK, B_TRY=x is untried"
AFTER=05-nothing-ok

scenario() {
    host_env_edit set A_OK=yes A_TRY=0 B_OK=1 B_TRY=x ORDER="A B"
    boot_vm garbage probe
    expect_boot B 1.0 normal
    expect_env A_OK=yes B_TRY=1
}

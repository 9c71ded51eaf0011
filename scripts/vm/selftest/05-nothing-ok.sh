# No slot OK at all: GRUB boots the first slot of ORDER and leaves the flags.
TITLE="nothing OK at all: first slot of ORDER, flags untouched"
AFTER=04-budget

scenario() {
    host_env_edit set A_OK=0 B_OK=0
    host_env_edit unset B_LEFT
    boot_vm nothing-ok probe
    expect_boot B 1.0 no-ok-slot
    expect_env ORDER="B A" A_OK=0 B_OK=0 A_TRY=1 B_TRY=1
}

# The harness itself: the factory disk boots slot A, the guest reaches nginx,
# and GRUB sets A_TRY=1 before booting A (probe boots: no abupdate runs).
TITLE="factory disk: GRUB boots A, sets its TRY flag; the guest reaches the server"
AFTER=""
RELEASES="1.0:good"

scenario() {
    boot_vm factory probe
    expect_boot A 1.0
    expect_log 'ABTEST: probe http ok' "guest reached nginx"
    expect_env ORDER="A B" A_OK=1 A_TRY=1 B_OK=0 B_TRY=0
}

# v1 in slot A boots; its health checks pass and commit it.
TITLE="v1 in slot A boots; health commits it"
AFTER=""
RELEASES="1.0:good"

scenario() {
    publish 1.0
    boot_vm v1 normal
    healthy_boot_checks A 1.0
    expect_env ORDER="A B" A_OK=1 A_TRY=0 B_OK=0
}

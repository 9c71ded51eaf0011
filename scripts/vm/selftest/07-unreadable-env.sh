# An unreadable grubenv (its block zeroed): GRUB warns, uses its defaults and
# boots the first slot of the default ORDER.
TITLE="unreadable grubenv: warning, defaults, first slot of ORDER"
AFTER=06-damaged-values

scenario() {
    host_env_zero
    boot_vm env-unreadable probe
    expect_log 'abupdate-grub: WARNING: cannot read grubenv' "GRUB warned about the env"
    expect_log 'abupdate-grub: booting slot A \(no-ok-slot\)' "GRUB booted the first slot of the default ORDER"
    expect_log 'ABTEST: boot slot=A version=1\.0 ' "slot A came up"
}

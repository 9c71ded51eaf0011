# Both slots tried, nobody blessed: a new round boots the first OK slot of
# ORDER and clears the other one's TRY.
TITLE="both tried, nobody blessed: new round, first OK slot of ORDER"
AFTER=02-fallback

scenario() {
    host_env_edit set ORDER="B A"
    boot_vm new-round probe
    expect_boot B 1.0 new-round
    expect_env ORDER="B A" A_OK=1 A_TRY=0 B_OK=1 B_TRY=1
}

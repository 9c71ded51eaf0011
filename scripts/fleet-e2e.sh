#!/usr/bin/env bash
# The fleet loop end to end, on real parts (issue #15 item 5):
#   HOSTS (default 50) real abupdate hosts, each with its own config, state
#   dir, file slots, GRUB env (the real grub-editenv), machine-id and
#   [report] labels; a real node_exporter per host reading the host's
#   textfile; a real Prometheus (Debian's) scraping them every second;
#   releases published to a real S3 implementation (moto) with Debian's
#   awscli; the controller (`abupdate fleet --prometheus`) run on a
#   schedule, its re-signed manifest published back to the bucket.
#   Timer ticks are `abupdate update --now --no-reboot`; a reboot is the
#   test playing GRUB (the first OK slot in ORDER not yet tried, TRY set)
#   and switching the host's cmdline, then `abupdate health`, as
#   tests/integration/update_loop.rs does.
# Scenarios, asserted from Prometheus's own answers (/api/v1/query), each
# host's `status --json` / `check --json` and the S3 server's request log:
#   0. before any host reports the release, the controller refuses to
#      decide (exit 1, manifest untouched); so it does with Prometheus down;
#   1. a good release advances 2 → 10 → 50 → 100 % as hosts commit; every
#      host ends on it;
#   2. a bad release (its health check fails everywhere) is paused inside
#      its first wave; no host outside it ever downloads it; the host that
#      installed it is rolled back; `check --json` on the others says paused;
#   3. a Prometheus restarted on an empty database in a wave no longer holds
#      the wave's start: the controller refuses to decide (exit 1, manifest
#      untouched) though the hosts it hears committed.
# One node_exporter per host, as in production (each host runs its own):
# the host's series then carry its `instance`, and 50 textfiles of the same
# series never meet in one collector.
# Usage: scripts/fleet-e2e.sh        (HOSTS=N JOBS=N to change the size;
#   HOSTS must be at least 50 for the waves 2/10/50/100 to hold 1/5/25/50 hosts)
# Runs as root on Debian 12 with scripts/deps.sh's packages; about 3 min.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

HOSTS=${HOSTS:-50}
JOBS=${JOBS:-4}
COMPATIBLE=acme-edge-e2e
work=$root/target/fleet-e2e
rm -rf "$work"
mkdir -p "$work"/{hosts,textfiles,www,images,logs,keys}
log() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# ---- processes this script starts (killed by pid on exit) ----------------
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
# A signal (CI's timeout, ^C) ends the script through its EXIT trap.
trap 'exit 143' TERM INT

free_ports() {
    /usr/bin/python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
wait_port() {
    local port=$1 what=$2
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    fail "$what did not start on port $port"
}

log "build"
# The same binary `cargo test --features failpoints` builds (no rebuild after
# the tests); its failpoints act only when ABUPDATE_FAILPOINT is set.
cargo build --quiet --features failpoints --bin abupdate
abu=$root/target/debug/abupdate
export abu

# ---- S3 -------------------------------------------------------------------
log "S3: moto server, bucket, awscli"
scripts/s3-venv.sh "$root/target/s3-venv"
# Every port the run listens on, chosen in one call so no two are the same
# (Prometheus once got a port a node_exporter chosen later already held).
read -r -a ports < <(free_ports $((3 + HOSTS)))
s3_port=${ports[0]} prom_port=${ports[1]} dead_port=${ports[2]}
ne_ports=("${ports[@]:3}")
PYTHONUNBUFFERED=1 "$root/target/s3-venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port" \
    >"$work/logs/moto.log" 2>&1 &
pids+=($!)
wait_port "$s3_port" "moto"
s3=http://127.0.0.1:$s3_port
aws() {
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 \
    AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_PAGER= \
    AWS_EC2_METADATA_DISABLED=true timeout 120 /usr/bin/aws --endpoint-url "$s3" "$@"
}
aws s3 mb s3://fleet >/dev/null
aws s3api put-bucket-policy --bucket fleet --policy \
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::fleet/*"}]}'
# The README's publish: payloads and signatures first, the manifest last.
publish() {
    aws s3 sync --no-progress --exclude release.json "$work/www/" s3://fleet/edge/stable/ >/dev/null
    aws s3 cp --no-progress "$work/www/release.json" s3://fleet/edge/stable/release.json >/dev/null
}
payload_gets() { # GETs of a payload file answered 200/206, from moto's log
    sed 's/\x1b\[[0-9;]*m//g' "$work/logs/moto.log" | grep -c "\"GET /fleet/edge/stable/$1 " || true
}
log_lines() { wc -l <"$work/logs/moto.log"; }
requests_since() { # the requests moto logged after line $1: "METHOD TARGET" STATUS
    tail -n +"$(($1 + 1))" "$work/logs/moto.log" | sed 's/\x1b\[[0-9;]*m//g' \
        | grep -o '"[A-Z]* [^ ]* HTTP/1.1" [0-9]*' | sed 's/ HTTP\/1.1"/"/'
}

# ---- hosts ----------------------------------------------------------------
log "keys and images"
"$abu" keygen --secret "$work/release.key" --public "$work/keys/release.pub" >/dev/null 2>&1
make_image() { # VERSION FILE: 256 KiB, its first line names the version
    { printf 'IMAGE_VERSION=%s\n' "$1"; head -c 262144 /dev/urandom; } | head -c 262144 >"$2"
}
for v in 1.0 2.0 3.0 4.0; do make_image "$v" "$work/images/$v.img"; done

# Machine ids chosen so that the hosts' positions (HMAC-SHA256 of the id,
# as abupdate computes it; cross-checked below against `check --json`) are
# one per 1/HOSTS of the fleet: the waves then hold exactly 2%, 10%, 50%
# of the hosts, and the first wave is host 0 alone.
/usr/bin/python3 - "$HOSTS" >"$work/machine-ids" <<'EOF'
import hashlib, hmac, sys
n = int(sys.argv[1]); found = {}; k = 0
while len(found) < n:
    mid = hashlib.sha256(f"fleet-e2e-{k}".encode()).hexdigest()[:32]; k += 1
    mac = hmac.new(bytes.fromhex(mid), b"abupdate-rollout", hashlib.sha256).digest()
    pos = (int.from_bytes(mac[:8], "big") >> 11) / 2**53
    found.setdefault(int(pos * n), (mid, pos))
for i in range(n):
    print(i, *found[i])
EOF

# GRUB's part, simplified (the full model of grub.cfg is
# tests/integration/common/grub.rs): the first slot in ORDER
# that is OK and not yet tried (else the first OK one), its TRY flag set,
# then "boot" it: cmdline, os-release from the slot's first line, boot id.
boot_host() {
    local h=$1 env order s chosen=
    env=$(grub-editenv "$h/grubenv" list)
    order=$(sed -n 's/^ORDER=//p' <<<"$env")
    var() { sed -n "s/^$1=//p" <<<"$env"; }
    for s in $order; do
        if [ "$(var "${s}_OK")" = 1 ] && [ "$(var "${s}_TRY")" != 1 ]; then chosen=$s; break; fi
    done
    if [ -z "$chosen" ]; then
        for s in $order; do [ "$(var "${s}_OK")" = 1 ] && { chosen=$s; break; }; done
    fi
    chosen=${chosen:-A}
    grub-editenv "$h/grubenv" set "${chosen}_TRY=1"
    local slot=$h/slot-a.img
    [ "$chosen" = B ] && slot=$h/slot-b.img
    echo "root=/dev/x ro abupdate.slot=$chosen quiet" >"$h/cmdline"
    printf 'ID=e2e\n%s\n' "$(head -n1 "$slot")" >"$h/os-release"
    cat /proc/sys/kernel/random/uuid >"$h/boot_id"
}
export -f boot_host

log "$HOSTS hosts"
while read -r i mid pos; do
    name=$(printf 'h%03d' "$i")
    site=$(printf 'store-%04d' "$((i + 1))")
    h=$work/hosts/$name
    mkdir -p "$h/health.d" "$work/textfiles/$name"
    echo "$mid" >"$h/machine-id"
    echo "$pos" >"$h/position"
    truncate -s 1M "$h/slot-a.img" "$h/slot-b.img"
    dd if="$work/images/1.0.img" of="$h/slot-a.img" conv=notrunc status=none
    printf '#!/bin/sh\necho reboot >> %s/reboots\n' "$h" >"$h/reboot.sh"
    # The application's own check: release 3.0 breaks it on every host.
    printf '#!/bin/sh\nif grep -q IMAGE_VERSION=3.0 %s/os-release; then echo "app: 3.0 does not start" >&2; exit 1; fi\n' \
        "$h" >"$h/health.d/10-app"
    chmod +x "$h/reboot.sh" "$h/health.d/10-app"
    grub-editenv "$h/grubenv" create
    grub-editenv "$h/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
    cat >"$h/config.toml" <<EOF
[update]
url = "$s3/fleet/edge/stable/release.json"
compatible = "$COMPATIBLE"
state_dir = "$h/state"
keys_dirs = ["$work/keys"]
connect_timeout = "5s"
read_timeout = "10s"

[system]
cmdline = "$h/cmdline"
os_release = "$h/os-release"
machine_id = "$h/machine-id"
boot_id = "$h/boot_id"
reboot = ["$h/reboot.sh"]

[bootloader]
kind = "grub"
grubenv = "$h/grubenv"

[slots.A]
rootfs = "$h/slot-a.img"
[slots.B]
rootfs = "$h/slot-b.img"

[health]
dir = "$h/health.d"
timeout = "10s"
check_timeout = "5s"
interval = "1s"

[report]
textfile = "$work/textfiles/$name/abupdate.prom"
labels = { site = "$site", region = "eu" }
EOF
    boot_host "$h"
    "$abu" --quiet --config "$h/config.toml" health >/dev/null
done <"$work/machine-ids"

# ---- node_exporter per host, Prometheus ------------------------------------
log "node_exporter x $HOSTS, Prometheus"
targets=
for i in $(seq 0 $((HOSTS - 1))); do
    name=$(printf 'h%03d' "$i")
    prometheus-node-exporter --web.listen-address="127.0.0.1:${ne_ports[$i]}" \
        --collector.disable-defaults --collector.textfile \
        --collector.textfile.directory="$work/textfiles/$name" \
        >"$work/logs/node-exporter-$name.log" 2>&1 &
    pids+=($!)
    targets+="'127.0.0.1:${ne_ports[$i]}',"
done
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: abupdate
    static_configs:
      - targets: [${targets%,}]
EOF
prom=http://127.0.0.1:$prom_port
start_prometheus() {
    prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus-data" \
        --web.listen-address="127.0.0.1:$prom_port" --log.level=warn \
        >>"$work/logs/prometheus.log" 2>&1 &
    prom_pid=$!
    pids+=("$prom_pid")
    wait_port "$prom_port" "prometheus"
    # The port answering is Prometheus's own: it runs and says it is ready
    # (another process on the port would answer the queries otherwise).
    for _ in $(seq 1 100); do
        curl -sf --max-time 2 "$prom/-/ready" >/dev/null && break
        kill -0 "$prom_pid" 2>/dev/null \
            || fail "prometheus exited: $(tail -n1 "$work/logs/prometheus.log")"
        sleep 0.2
    done
    curl -sf --max-time 2 "$prom/-/ready" >/dev/null || fail "prometheus on $prom is not ready"
}
start_prometheus
for p in "${ne_ports[@]}"; do wait_port "$p" "node_exporter"; done

# An instant query's single value ("" when it has no series).
query() {
    curl -sf --max-time 10 "$prom/api/v1/query" --data-urlencode "query=$1" \
        | jq -r 'if .status != "success" then error("query failed") else (.data.result[0].value[1] // "") end'
}
# Wait until Prometheus answers QUERY with WANT (it scrapes every second).
expect_prom() {
    local q=$1 want=$2 got=
    for _ in $(seq 1 30); do
        got=$(query "$q")
        [ "$got" = "$want" ] && return 0
        sleep 1
    done
    fail "Prometheus: $q = ${got:-<no series>}, expected $want"
}
expect_prom 'count(up{job="abupdate"} == 1)' "$HOSTS"
expect_prom 'count(abupdate_booted_info{version="1.0"})' "$HOSTS"
expect_prom 'sum(node_textfile_scrape_error)' 0

# Each host's position as abupdate computes it matches the one chosen.
"$abu" pack --secret "$work/release.key" --compatible "$COMPATIBLE" --version 1.5 \
    --image "rootfs=$work/images/2.0.img" --out "$work/probe-www" --percent 0 >/dev/null
for h in "$work"/hosts/h*; do
    got=$("$abu" --json --config "$h/config.toml" check "$work/probe-www/release.json" \
        | jq -r .rollout.position) || true
    awk -v a="$got" -v b="$(cat "$h/position")" 'BEGIN { exit !((a - b) ^ 2 < 1e-18) }' \
        || fail "$h: position $got, expected $(cat "$h/position")"
done
rm -rf "$work/probe-www"

# ---- the schedule ------------------------------------------------------------
# One timer tick on every host: update; a staged slot is booted and judged;
# a reboot the verdict asked for (a rollback) is played too.
tick_host() {
    local h=$1 c=$1/config.toml phase reboots
    "$abu" --quiet --config "$c" update --now --no-reboot >>"$h/ticks.log" 2>&1 || true
    phase=$("$abu" --json --config "$c" status | jq -r '.transaction.phase // empty')
    if [ "$phase" = staged ]; then
        reboots=$(cat "$h/reboots" 2>/dev/null | wc -l)
        boot_host "$h"
        "$abu" --quiet --config "$c" health >>"$h/ticks.log" 2>&1 || true
        if [ "$(cat "$h/reboots" 2>/dev/null | wc -l)" -gt "$reboots" ]; then
            boot_host "$h"
            "$abu" --quiet --config "$c" health >>"$h/ticks.log" 2>&1 || true
        fi
    fi
}
export -f tick_host
tick_all() {
    printf '%s\n' "$work"/hosts/h* | xargs -P "$JOBS" -n 1 bash -c 'tick_host "$0"'
}

# ---- the controller ------------------------------------------------------------
# What an operator's timer runs: decide from Prometheus, hosts of the
# release's compatible and region="eu"; a wave advances once every host it
# covers committed (no soak: the ticks are the clock here), one failure of
# the release pauses it. Its output (JSON) and exit code are kept; its
# wall time is appended to decision-ms.txt.
controller() { # [PROMETHEUS_URL]
    local t0 rc=0
    t0=$(date +%s%N)
    "$abu" --json fleet --manifest "$work/www/release.json" --secret "$work/release.key" \
        --keys "$work/keys" --prometheus "${1:-$prom}" --selector 'region="eu"' \
        --query-timeout 5s --advance-when 1.0 --max-failures 1 --min-reports 1 \
        >"$work/decision.json" 2>"$work/decision.err" || rc=$?
    echo $(( ($(date +%s%N) - t0) / 1000000 )) >>"$work/decision-ms.txt"
    return "$rc"
}
# One scheduled run: decide, and publish the re-signed manifest if it changed.
run_controller() {
    controller || fail "controller: $(cat "$work/decision.err")"
    if [ "$(jq -r .changed "$work/decision.json")" = true ]; then publish; fi
    jq -r '.action + ": " + .reason' "$work/decision.json"
}
# Never blind: the run must refuse (exit 1, one line naming the reason) and
# leave the signed manifest as it was.
expect_refusal() { # WHY-PATTERN [PROMETHEUS_URL]
    local before rc=0
    before=$(sha256sum "$work"/www/release.json* | sha256sum)
    controller "${2:-}" || rc=$?
    [ "$rc" = 1 ] || fail "controller exits $rc, expected 1: $(cat "$work/decision.err" "$work/decision.json")"
    grep -Eq "$1" "$work/decision.err" || fail "controller's refusal does not say /$1/: $(cat "$work/decision.err")"
    [ "$(wc -l <"$work/decision.err")" = 1 ] || fail "controller's refusal is not one line: $(cat "$work/decision.err")"
    [ "$before" = "$(sha256sum "$work"/www/release.json* | sha256sum)" ] \
        || fail "a refused controller run changed the manifest"
}
# Wait until Prometheus has scraped every host's latest word: N hosts with
# an outcome series of RELEASE (hosts say it after every verdict).
settle() { # RELEASE N
    expect_prom "count(count by (instance) (abupdate_release_outcome{release=\"$1\"})) or vector(0)" "$2"
}
hosts_that_tried() { # hosts whose state records RELEASE (installed it)
    local n=0 h
    for h in "$work"/hosts/h*; do
        "$abu" --json --config "$h/config.toml" status \
            | jq -e --arg v "$1" '.booted_version == $v or ([.failed[]?.version] | index($v) != null)' \
                >/dev/null && n=$((n + 1))
    done
    echo "$n"
}

count_on() { # hosts whose status says they booted VERSION
    local n=0 h
    for h in "$work"/hosts/h*; do
        [ "$("$abu" --json --config "$h/config.toml" status | jq -r .booted_version)" = "$1" ] \
            && n=$((n + 1))
    done
    echo "$n"
}
percent() { jq -r '.rollout.percent // "none"' "$work/www/release.json"; }

# ==== 1. a good release =========================================================
log "release 2.0, waves 2,10,50,100"
"$abu" pack --secret "$work/release.key" --compatible "$COMPATIBLE" --version 2.0 \
    --image "rootfs=$work/images/2.0.img" --out "$work/www" --waves 2,10,50,100 --level 3 >/dev/null
publish
# Nobody reports 2.0 yet, then Prometheus is down: no decision either time.
expect_refusal 'no host of .* reports release 2.0'
expect_refusal "127.0.0.1:$dead_port" "http://127.0.0.1:$dead_port"
log "controller: no series of 2.0, then Prometheus unreachable: exit 1, manifest untouched"
waves=(2)
printf '%-6s %-8s %-8s %s\n' round percent on_2.0 controller | tee "$work/timeline-good.txt"
for round in $(seq 1 12); do
    p=$(percent)
    [ "$p" != "${waves[-1]}" ] && waves+=("$p")
    tick_all
    on=$(count_on 2.0)
    # No host beyond the wave holds the release: host i sits at i/HOSTS.
    for h in "$work"/hosts/h*; do
        v=$("$abu" --json --config "$h/config.toml" status | jq -r .booted_version)
        pos=$(cat "$h/position")
        if [ "$v" = 2.0 ] && ! awk -v x="$pos" -v p="$p" 'BEGIN { exit !(x * 100 < p) }'; then
            fail "$h (position $pos) runs 2.0 at $p%"
        fi
    done
    expect_prom 'count(abupdate_booted_release_info{release="2.0"}) or vector(0)' "$on"
    settle 2.0 "$(hosts_that_tried 2.0)"
    decision=$(run_controller)
    [ "$(percent)" != "${waves[-1]}" ] && waves+=("$(percent)")
    printf '%-6s %-8s %-8s %s\n' "$round" "$p" "$on" "$decision" | tee -a "$work/timeline-good.txt"
    [ "$on" = "$HOSTS" ] && break
done
[ "${waves[*]}" = "2 10 50 100" ] || fail "waves went ${waves[*]}, expected 2 10 50 100"
[ "$(count_on 2.0)" = "$HOSTS" ] || fail "not every host runs 2.0"
expect_prom 'count(abupdate_booted_info{version="2.0"})' "$HOSTS"
expect_prom 'count(abupdate_release_outcome{release="2.0",outcome="committed",region="eu"})' "$HOSTS"
expect_prom 'sum(abupdate_commits_total)' "$HOSTS"
expect_prom 'sum(abupdate_rollbacks_total)' 0
expect_prom 'sum(abupdate_update_pending)' 0
[ "$(payload_gets rootfs-2.0.img.zst)" = "$HOSTS" ] || fail "2.0's payload was not fetched once per host"
log "good release: waves ${waves[*]}, all $HOSTS hosts committed 2.0"

# An idle fleet: after one tick that fetches the unchanged manifest in full
# (and keeps its ETag), a tick is one conditional GET per host, answered 304.
tick_all
mark=$(log_lines)
tick_all
idle=$(requests_since "$mark")
[ "$(grep -c . <<<"$idle")" = "$HOSTS" ] \
    && [ "$(grep -c '^"GET /fleet/edge/stable/release.json" 304$' <<<"$idle")" = "$HOSTS" ] \
    || fail "an idle tick is not one 304 per host: $(sort <<<"$idle" | uniq -c)"
log "idle tick: $HOSTS requests, each answered 304"

# ==== 2. a bad release ===========================================================
log "release 3.0 (its health check fails everywhere), waves 2,10,50,100"
"$abu" pack --secret "$work/release.key" --compatible "$COMPATIBLE" --version 3.0 \
    --image "rootfs=$work/images/3.0.img" --out "$work/www" --waves 2,10,50,100 --level 3 >/dev/null
publish
expect_refusal 'no host of .* reports release 3.0'
printf '%-6s %-8s %-8s %s\n' round paused rolled_back controller | tee "$work/timeline-bad.txt"
for round in $(seq 1 4); do
    tick_all
    settle 3.0 "$(hosts_that_tried 3.0)"
    decision=$(run_controller)
    rb=$(query 'count(abupdate_release_outcome{release="3.0",outcome="rolled_back"}) or vector(0)')
    printf '%-6s %-8s %-8s %s\n' "$round" "$(jq -r '.rollout.paused // false' "$work/www/release.json")" \
        "$rb" "$decision" | tee -a "$work/timeline-bad.txt"
done
[ "$(jq -r '.rollout.paused' "$work/www/release.json")" = true ] || fail "3.0 was not paused"
[ "$(jq -r '.rollout.percent' "$work/www/release.json")" = 2 ] || fail "3.0 left its first wave"
expect_prom 'count(abupdate_booted_info{version="2.0"})' "$HOSTS"
expect_prom 'count(abupdate_booted_info{version="3.0"}) or vector(0)' 0
expect_prom 'count(abupdate_rollbacks_total > 0)' 1
expect_prom 'count(abupdate_release_outcome{release="3.0",outcome="rolled_back"})' 1
expect_prom 'count(count by (instance) (abupdate_release_outcome{release="3.0"}))' 1
expect_prom 'sum(abupdate_update_pending)' 0
[ "$(payload_gets rootfs-3.0.img.zst)" = 1 ] || fail "3.0's payload left the first wave: $(payload_gets rootfs-3.0.img.zst) downloads"
for h in "$work"/hosts/h*; do
    c=$h/config.toml
    st=$("$abu" --json --config "$c" status)
    [ "$(jq -r .booted_version <<<"$st")" = 2.0 ] || fail "$h does not run 2.0"
    failed_3=$(jq -r '[.failed[]?.version] | index("3.0") != null' <<<"$st")
    if [ "$h" = "$work/hosts/h000" ]; then
        [ "$failed_3" = true ] || fail "$h: the canary did not record 3.0 as failed"
    else
        [ "$failed_3" = false ] || fail "$h installed 3.0 outside the first wave"
        ck=$("$abu" --json --config "$c" check) && rc=0 || rc=$?
        [ "$rc" = 0 ] || fail "$h: check exits $rc: $ck"
        [ "$(jq -r .rollout.paused <<<"$ck")" = true ] || fail "$h: check --json does not say paused: $ck"
    fi
done
log "bad release: paused in its first wave; 1 host installed it and was rolled back; $((HOSTS - 1)) hosts see it paused"
# ==== 3. a store that forgot the wave's start =====================================
# The first wave of 4.0 installs and commits it; then Prometheus is
# restarted on an empty database. It hears every host again, the canary's
# commit included, but no longer holds the wave's start: a host that had
# gone silent in the wave would be forgotten, so the controller refuses
# (where it would otherwise advance on the canary's commit).
log "release 4.0, waves 2,10,50,100; Prometheus restarted on an empty database in its first wave"
"$abu" pack --secret "$work/release.key" --compatible "$COMPATIBLE" --version 4.0 \
    --image "rootfs=$work/images/4.0.img" --out "$work/www" --waves 2,10,50,100 --level 3 >/dev/null
publish
tick_all
settle 4.0 1
[ "$(count_on 4.0)" = 1 ] || fail "the first wave of 4.0 is not the canary alone: $(count_on 4.0) hosts"
kill "$prom_pid"
wait "$prom_pid" 2>/dev/null || true
rm -rf "$work/prometheus-data"
start_prometheus
expect_prom 'count(up{job="abupdate"} == 1)' "$HOSTS"
expect_prom 'count(abupdate_release_outcome{release="4.0",outcome="committed"})' 1
expect_refusal 'holds no sample at .*, when the wave started'
[ "$(percent)" = 2 ] || fail "4.0 left its first wave on a store that forgot its start"
log "store restarted empty: the controller refuses (exit 1, manifest untouched); 4.0 stays at 2%"
sort -n "$work/decision-ms.txt" | awk '{a[NR] = $1} END {print "controller runs: " NR ", wall time median " a[int((NR + 1) / 2)] " ms, max " a[NR] " ms"}'
echo "fleet e2e: 4 passed, 0 failed"

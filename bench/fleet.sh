#!/usr/bin/env bash
# The fleet controller at scale: a real Prometheus (Debian's 2.42, started
# here on loopback with its own data dir) holding 10,000 hosts' series,
# backfilled with `promtool tsdb create-blocks-from openmetrics`; then
# `abupdate fleet --prometheus` deciding the release's wave (dry run, so
# every run decides the same), its decision time (median of RUNS) and
# Prometheus's peak RSS. See bench/README.md "Fleet controller at scale".
#
# Knobs (environment): HOSTS=10000, RUNS=7, MINUTES=30 (samples per series,
# one a minute, ending a minute ago), WAVE_AGE_MINUTES=120 (the release's
# `created`: the wave started that long ago, the queries' lookback),
# BENCH_DIR=target/bench-fleet,
# SKIP_BUILD=1 (use target/release/abupdate, or ABU=PATH, as it is).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=${BENCH_DIR:-$ROOT/target/bench-fleet}
HOSTS=${HOSTS:-10000}
RUNS=${RUNS:-7}
MINUTES=${MINUTES:-30}
WAVE_AGE_MINUTES=${WAVE_AGE_MINUTES:-120}
ABU=${ABU:-$ROOT/target/release/abupdate}

log() { printf '\033[1m[fleet-bench %(%H:%M:%S)T]\033[0m %s\n' -1 "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
for t in prometheus promtool python3 curl; do
    command -v "$t" >/dev/null || die "$t missing (scripts/deps.sh installs it)"
done

PROM_PID=
cleanup() { [ -n "$PROM_PID" ] && kill "$PROM_PID" 2>/dev/null && wait "$PROM_PID" 2>/dev/null; return 0; }
trap cleanup EXIT

[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet
rm -rf "$W" && mkdir -p "$W"/{data,rel,keys}
NOW=$(date +%s)

log "generating $HOSTS hosts' series ($MINUTES samples each)"
python3 - "$HOSTS" "$MINUTES" "$NOW" "$WAVE_AGE_MINUTES" > "$W/series.om" <<'PY'
# Each host as its textfile says it through node_exporter: instance, job,
# the operator's site and region, compatible; every abupdate_* family.
# Release 2.0 is in its 10% wave (hosts below position 0.1): 97% committed,
# 1.5% rolled back, 0.5% failed with hash_mismatch, 1% failed with network
# (not counted); every host committed 1.9 a month ago.
import hashlib, sys
hosts, minutes, now = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
# The scrapes' `up`, one sample every 4 minutes since before the wave
# started: the controller asks the store whether it remembers that instant.
wave_age = int(sys.argv[4])
up_times = list(range(now - 60 * (wave_age + 5), now, 240))
targets = []
times = [now - 60 * (minutes - k) for k in range(minutes)]
regions = ["eu-west", "eu-central", "us-east", "us-west", "ap-south", "ap-east", "sa-east", "af-south"]
fam = {}
def add(name, labels, value):
    fam.setdefault(name, []).append((labels, value))
for i in range(hosts):
    h = hashlib.sha256(b"host-%d" % i).digest()
    pos = int.from_bytes(h[:8], "big") / 2**64
    base = 'compatible="acme-edge-x86_64",instance="10.%d.%d.%d:9100",job="node",region="%s",site="store-%05d"' % (
        i >> 16 & 255, i >> 8 & 255, i & 255, regions[i % len(regions)], i)
    u = h[8] / 256
    targets.append('instance="10.%d.%d.%d:9100",job="node"' % (i >> 16 & 255, i >> 8 & 255, i & 255))
    add("abupdate_rollout_position", base, "%.6f" % pos)
    add("abupdate_release_outcome", base + ',release="1.9",outcome="installed"', now - 30 * 86400 - 600)
    add("abupdate_release_outcome", base + ',release="1.9",outcome="committed"', now - 30 * 86400)
    version, slot = "1.9", "A"
    if pos < 0.10:
        add("abupdate_release_outcome", base + ',release="2.0",outcome="installed"', now - 7200)
        if u < 0.97:
            add("abupdate_release_outcome", base + ',release="2.0",outcome="committed"', now - 6600)
            version, slot = "2.0", "B"
        elif u < 0.985:
            add("abupdate_release_outcome", base + ',release="2.0",outcome="rolled_back"', now - 6600)
        elif u < 0.99:
            add("abupdate_release_outcome", base + ',release="2.0",outcome="failed",kind="hash_mismatch"', now - 6600)
        else:
            add("abupdate_release_outcome", base + ',release="2.0",outcome="failed",kind="network"', now - 6600)
    add("abupdate_booted_release_info", base + ',release="%s",slot="%s"' % (version, slot), 1)
    add("abupdate_booted_info", base + ',slot="%s",version="%s"' % (slot, version), 1)
    add("abupdate_last_check_timestamp_seconds", base, now - 120)
    add("abupdate_last_success_timestamp_seconds", base, now - 6600 if version == "2.0" else now - 30 * 86400)
    add("abupdate_update_pending", base, 0)
    add("abupdate_installs_total", base, 2 if pos < 0.10 else 1)
    add("abupdate_commits_total", base, 2 if version == "2.0" else 1)
    add("abupdate_rollbacks_total", base, 0)
    add("abupdate_downloaded_bytes_total", base, 312000000)
    add("abupdate_failures_total", base + ',kind="network"', h[9] % 4)
out = sys.stdout
for name, series in fam.items():
    out.write("# TYPE %s gauge\n" % name)
    for labels, value in series:
        for t in times:
            out.write("%s{%s} %s %d\n" % (name, labels, value, t))
out.write("# TYPE up gauge\n")
for labels in targets:
    for t in up_times:
        out.write("up{%s} 1 %d\n" % (labels, t))
out.write("# EOF\n")
PY
SERIES=$(grep -vc '^#' "$W/series.om")
log "$((SERIES / MINUTES)) series, $SERIES samples; backfilling"
promtool tsdb create-blocks-from openmetrics "$W/series.om" "$W/data" > "$W/backfill.log"
rm -f "$W/series.om"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'global: {}\n' > "$W/prometheus.yml"
prometheus --config.file="$W/prometheus.yml" --storage.tsdb.path="$W/data" \
    --web.listen-address="127.0.0.1:$PORT" > "$W/prometheus.log" 2>&1 &
PROM_PID=$!
URL=http://127.0.0.1:$PORT
for _ in $(seq 300); do
    curl -fs "$URL/-/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs "$URL/-/ready" >/dev/null || die "Prometheus not ready: $(tail -3 "$W/prometheus.log")"
log "Prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}') ready on $URL"

"$ABU" keygen --secret "$W/keys/release.key" --public "$W/keys/release.pub" 2>/dev/null
head -c 65536 /dev/urandom > "$W/rootfs.img"
"$ABU" pack --secret "$W/keys/release.key" --compatible acme-edge-x86_64 --version 2.0 \
    --image "rootfs=$W/rootfs.img" --out "$W/rel" --level 3 --waves 10,50,100 \
    --created "$(date -u -d @$((NOW - WAVE_AGE_MINUTES * 60)) +%Y-%m-%dT%H:%M:%SZ)" 2>/dev/null

# Prometheus's CPU time (utime + stime of /proc/PID/stat, in clock ticks).
prom_cpu() { awk '{print $14 + $15}' "/proc/$PROM_PID/stat"; }
TICK=$(getconf CLK_TCK)
times=() cpu=()
p0=$(prom_cpu)
for r in $(seq "$RUNS"); do
    t0=$(date +%s%N)
    /usr/bin/time -f '%U %S' -o "$W/time.txt" \
        "$ABU" --json fleet --dry-run --manifest "$W/rel/release.json" --secret "$W/keys/release.key" \
        --prometheus "$URL" --soak 1h --max-failures 100 --max-failure-rate 0.05 > "$W/decision.json"
    t1=$(date +%s%N)
    times+=($(((t1 - t0) / 1000000)))
    cpu+=($(awk '{printf "%d", ($1 + $2) * 1000}' "$W/time.txt"))
done
p1=$(prom_cpu)
MEDIAN=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}')
RSS=$(awk '/VmHWM/ {print $2}' "/proc/$PROM_PID/status")
python3 - "$W/decision.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("decision: %s (%s)" % (d["action"], d["reason"]))
print("counted: %d committed, %d failed, %d installed, %d not counted; wave %s%% = %d hosts of %d" % (
    d["committed"], d["failed"], d["installed"], d["not_counted"], d["percent"], d["wave_hosts"], d["fleet_hosts"]))
for q in d["queries"]:
    print("  %s\n    -> %s" % (q["query"], ", ".join("%s %g" % (q2["labels"], q2["value"]) for q2 in q["answer"]) or "(no series)"))
PY
CPU=$(printf '%s\n' "${cpu[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}')
echo "hosts: $HOSTS; series: $((SERIES / MINUTES)); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "controller decision (verify, 6 queries at once, decide; wall time of the process): median ${MEDIAN} ms of $RUNS runs (${times[*]} ms)"
[ "$CPU" = 0 ] && CPU="<10" # /usr/bin/time counts in 10 ms steps
echo "CPU per decision: controller median ${CPU} ms; Prometheus $(( (p1 - p0) * 1000 / TICK / RUNS )) ms (its CPU time over the runs / $RUNS)"
echo "Prometheus peak RSS: $((RSS / 1024)) MiB"

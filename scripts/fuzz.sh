#!/usr/bin/env bash
# Short fuzz runs of every parser that reads untrusted or hand-edited input:
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default 60 s each, all targets)
# Targets (fuzz/fuzz_targets/): manifest (release.json, incl. the delta
# segment index), minisign (.pub, .key, .minisig), grubenv, ubootenv (one env
# copy), fw_env_config, config (config.toml), timefmt (RFC 3339, durations),
# prometheus (a Prometheus API answer, and `fleet --selector`), channel
# (channel.json, then its time rules and the host's choice).
# Each starts from its committed seed corpus fuzz/corpus/TARGET/ (real files:
# packed manifests, minisign's and our keys and signatures, grub-editenv and
# fw_setenv output, the README's config, channels as `abupdate channel` writes them); new inputs go to a scratch corpus so
# the committed one stays small (FUZZ_MERGE=1 merges the ones that add
# coverage into fuzz/corpus/, to commit). A crash fails the run and leaves
# its input in fuzz/artifacts/TARGET/.
#
# FUZZ_SEED=N makes a run repeatable (libFuzzer's -seed; the same inputs in
# the same order on the same build): CI fixes one (scripts/test.sh) so a green
# build stays green and a red one can be re-run; unset, each run draws a new
# seed and explores further, as long runs should (scripts/fuzz.sh 600).
#
# Stable Rust only: cargo-fuzz needs nightly flags, so RUSTC_BOOTSTRAP=1. No
# sanitizer (-s none): the parsers are safe Rust, what the runs look for are
# panics, overflows (debug assertions are on), hangs and memory blow-ups.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
seed=${FUZZ_SEED:-0}   # 0: libFuzzer draws one
shift || true
all=(manifest minisign grubenv ubootenv fw_env_config config timefmt prometheus channel)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

echo "== fuzz build"
(cd fuzz && cargo fuzz build -s none --debug-assertions)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
summary=()
for t in "${targets[@]}"; do
    echo "== fuzz $t for ${secs}s"
    mkdir -p "$scratch/$t"
    log="$scratch/$t.log"
    # -rss_limit_mb / -timeout: a memory blow-up or a hang is a failure too.
    if ! (cd fuzz && cargo fuzz run -s none --debug-assertions "$t" "$scratch/$t" "corpus/$t" -- \
            -max_total_time="$secs" -seed="$seed" -rss_limit_mb=1024 -timeout=10 -max_len=65536 \
            -print_final_stats=1) >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz $t: FAILED (input in fuzz/artifacts/$t/)"
        exit 1
    fi
    if [ "${FUZZ_MERGE:-0}" = 1 ]; then
        (cd fuzz && cargo fuzz run -s none --debug-assertions "$t" "corpus/$t" "$scratch/$t" -- \
            -merge=1 -max_len=65536) >>"$log" 2>&1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    corpus=$(find "$scratch/$t" -type f | wc -l)
    summary+=("$t: $runs runs, $cov, $corpus new inputs, 0 crashes")
    echo "fuzz $t: $runs runs, $cov, no crash"
done
echo "== fuzz summary (${secs}s each)"
printf '  %s\n' "${summary[@]}"

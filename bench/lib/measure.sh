# Sourced by bench/run.sh: the measured cases, the runs, the tables.

# Peak RSS (KiB), CPU seconds (user, system) and blocks written (512 B) of
# the measured command go here (GNU time).
TIME=(/usr/bin/time -f "%M %U %S %O" -o "$W/tmp/rss")

# sample NAME SETUP RUN [AFTER]: one timed run. SETUP runs untimed (and the
# machine's dirty pages are flushed before the clock starts); the timed window
# is RUN plus an fsync of slot B, so every tool is timed until its bytes are
# on the device. AFTER (untimed) may overwrite $W/tmp/rss (RAUC's service).
# Appends "wall_ms rss_kib cpu_ms written_kib" to $RES/NAME.tsv.
sample() {
    local name=$1 setup=$2 run=$3 after=${4:-}
    rm -f "$W/tmp/rss"
    $setup
    sync
    local t0 t1
    t0=$(date +%s%N)
    $run || die "$name: run failed"
    sync "$SLOT_B"
    t1=$(date +%s%N)
    [ -n "$after" ] && $after
    local line; line=$(tail -n1 "$W/tmp/rss" 2>/dev/null || echo "0 0 0 0")
    local rss cpu out
    read -r rss cpu out <<< "$(awk '{ printf "%d %d %d", $1, ($2 + $3) * 1000, $4 / 2 }' <<< "$line")"
    echo "$(( (t1 - t0) / 1000000 )) $rss $cpu $out $(cut -d' ' -f1 /proc/loadavg)" >> "$RES/$name.tsv"
    cut -d' ' -f1 /proc/loadavg >> "$RES/load.txt"
    log "$name: $(( (t1 - t0) / 1000000 )) ms, peak RSS $((rss / 1024)) MiB, CPU $cpu ms, wrote $((out / 1024)) MiB"
}

PSEG() { payload_of "$W/rel/rootfs-seg"; }
P27() { payload_of "$W/rel/rootfs-w27"; }
P23() { payload_of "$W/rel/rootfs-w23"; }
PSEGRL() { payload_of "$W/rel/rootfs-seg-rl"; }
none() { :; }
# The installs run the host build (no `pack`), as on a host.
HOST_BIN() { if [ -x "$W/abupdate-host" ]; then echo "$W/abupdate-host"; else echo "$ABU"; fi; }
# CPUS="0" (or "0,1") runs the measured command on those cores only.
pin() { if [ -n "${CPUS:-}" ]; then taskset -c "$CPUS" "$@"; else "$@"; fi; }

# ---- bounds: each stage alone
run_dd() { pin "${TIME[@]}" dd if="$W/img/rootfs.ext4" of="$SLOT_B" bs=4M oflag=direct conv=fsync status=none; }
run_zstdseg() { pin "${TIME[@]}" zstd -dcq "$(PSEG)" > /dev/null; }
run_zstd27() { pin "${TIME[@]}" zstd -dcq --long=27 "$(P27)" > /dev/null; }
run_zstd23() { pin "${TIME[@]}" zstd -dcq "$(P23)" > /dev/null; }
run_openssl() { "${TIME[@]}" openssl dgst -sha256 "$W/img/rootfs.ext4" > /dev/null; }
run_sha256sum() { "${TIME[@]}" sha256sum "$W/img/rootfs.ext4" > /dev/null; }

# ---- abupdate
# A fresh install each time: the slot's first segment overwritten, so the
# install does not find the image already in the slot (a segmented payload
# resumes after the segments the slot holds, and would write nothing).
reset_abu() { abu_reset 1.0; dd if=/dev/zero of="$SLOT_B" bs=4M count=1 oflag=direct conv=fsync status=none; }
reset_abu_old() { abu_reset 1.0; dd if="$W/img/rootfs-old.ext4" of="$SLOT_B" bs=4M oflag=direct conv=fsync status=none; }
reset_abu_same() { abu_reset 1.0; dd if="$W/img/rootfs.ext4" of="$SLOT_B" bs=4M oflag=direct conv=fsync status=none; }
abu_install() { pin "${TIME[@]}" "$(HOST_BIN)" --config "$W/abu/config.toml" --quiet install --no-reboot "$@" > /dev/null; }
run_abuseg() { abu_install "$W/rel/rootfs-seg/release.json"; }
run_abu27() { abu_install "$W/rel/rootfs-w27/release.json"; }
run_abu23() { abu_install "$W/rel/rootfs-w23/release.json"; }
run_abusegrl() { abu_install "$W/rel/rootfs-seg-rl/release.json"; }
run_abusegc() { abu_install --write=changed "$W/rel/rootfs-seg/release.json"; }

# ---- RAUC (the writing process is the service: its VmHWM)
rauc_rss() {
    local hwm ticks wb hz; hz=$(getconf CLK_TCK)
    hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$RAUC_PID/status")
    ticks=$(awk '{ print $14 + $15 }' "/proc/$RAUC_PID/stat")
    wb=$(awk '/^write_bytes/ { print $2 }' "/proc/$RAUC_PID/io")
    echo "$hwm $(awk -v t="$ticks" -v hz="$hz" 'BEGIN { print t / hz }') 0 $((wb / 512))" > "$W/tmp/rss"
    rauc_stop
}
run_rauc_zstd() { install_rauc zstd; }
run_rauc_gzip() { install_rauc gzip; }

# ---- SWUpdate, casync
run_swu_raw() { "${TIME[@]}" swupdate -i "$W/swu/raw.swu" -k "$W/rauc/ca.pem" -H bench:1.0 -M -m -l 3 > "$W/logs/swu.log" 2>&1 || { cat "$W/logs/swu.log" >&2; return 1; }; }
run_swu_zstd() { "${TIME[@]}" swupdate -i "$W/swu/zstd.swu" -k "$W/rauc/ca.pem" -H bench:1.0 -M -m -l 3 > "$W/logs/swu.log" 2>&1 || { cat "$W/logs/swu.log" >&2; return 1; }; }
run_casync() { "${TIME[@]}" casync extract --store="$W/casync/store.castr" --seed-output=no "$W/casync/rootfs.caibx" "$SLOT_B" > "$W/logs/casync.log" 2>&1 || { cat "$W/logs/casync.log" >&2; return 1; }; }

# name|label|setup|run|after
CASES=(
    "bound-dd|dd raw image → slot, O_DIRECT + fsync|none|run_dd"
    "bound-zstd-seg|zstd -dc → /dev/null (the default segmented payload)|none|run_zstdseg"
    "bound-zstd-w27|zstd -dc → /dev/null (one frame, --long=27)|none|run_zstd27"
    "bound-zstd-w23|zstd -dc → /dev/null (one frame, window 2^23)|none|run_zstd23"
    "bound-openssl|openssl dgst -sha256 of the image|none|run_openssl"
    "bound-sha256sum|coreutils sha256sum of the image|none|run_sha256sum"
    "abu-seg|**abupdate install, default segmented payload (parallel)**|reset_abu|run_abuseg"
    "abu-seg-rl|abupdate install, segmented payload at RAUC's zstd level, $RAUC_LEVEL (like for like)|reset_abu|run_abusegrl"
    "abu-w27|abupdate install, one frame --long=27 (releases before segments)|reset_abu|run_abu27"
    "abu-w23|abupdate install, one frame window 2^23|reset_abu|run_abu23"
    "abu-changed-old|abupdate --write=changed, slot holds the older image|reset_abu_old|run_abusegc"
    "abu-changed-same|abupdate --write=changed, slot already holds this image|reset_abu_same|run_abusegc"
    "rauc-zstd|RAUC 1.8, plain bundle, squashfs zstd (level $RAUC_LEVEL, mksquashfs's default)|rauc_start|run_rauc_zstd|rauc_rss"
    "rauc-gzip|RAUC 1.8, plain bundle, squashfs gzip (default)|rauc_start|run_rauc_gzip|rauc_rss"
    "swu-zstd|SWUpdate, CMS .swu, raw handler, zstd (--long=27)|none|run_swu_zstd"
    "swu-raw|SWUpdate, CMS .swu, raw handler, uncompressed|none|run_swu_raw"
    "casync|casync extract (zstd chunk store), full|none|run_casync"
)

# The bounds and every tool, RUNS rounds, alternating within each round.
cases() {
    local only=${CASES_ONLY:-} r c name label setup run after
    for c in "${CASES[@]}"; do IFS='|' read -r name _ <<< "$c"; rm -f "$RES/$name.tsv"; done
    rm -f "$RES/load.txt"
    for r in $(seq "$RUNS"); do
        log "round $r of $RUNS"
        for c in "${CASES[@]}"; do
            IFS='|' read -r name label setup run after <<< "$c"
            [ -n "$only" ] && [[ " $only " != *" $name "* ]] && continue
            sample "$name" "$setup" "$run" "$after"
        done
    done
    # The slot really holds the image after the abupdate runs (sanity).
    local run
    for run in run_abuseg run_abusegrl run_abu27; do
        reset_abu; $run
        cmp -n "$(stat -c %s "$W/img/rootfs.ext4")" "$W/img/rootfs.ext4" "$SLOT_B" || die "$run: slot B differs from the image"
    done
}

# ---- scaling: the same runs on 1 core and on 2 (taskset), dd as the ceiling
SCALE_CASES=(
    "bound-dd|dd raw image → slot, O_DIRECT (the ceiling)|none|run_dd"
    "bound-zstd-seg|zstd -dc of the segmented payload (single-threaded)|none|run_zstdseg"
    "abu-seg|abupdate install, default segmented payload|reset_abu|run_abuseg"
    "abu-w27|abupdate install, one frame --long=27|reset_abu|run_abu27"
)
scaling() {
    local r c name label setup run cpus
    rm -f "$RES"/scale-*.tsv "$RES/scale-load.txt"
    for r in $(seq "$RUNS"); do
        log "scaling round $r of $RUNS"
        for cpus in 0 0,1; do
            for c in "${SCALE_CASES[@]}"; do
                IFS='|' read -r name label setup run <<< "$c"
                CPUS=$cpus sample "scale-$cpus-$name" "$setup" "$run"
            done
        done
    done
}

# ---- HTTP from a local nginx, and the idle timer tick
nginx_start() {
    mkdir -p "$W/nginx/logs"
    NGINX_PORT=$(( 20000 + RANDOM % 20000 ))
    cat > "$W/nginx/nginx.conf" <<EOF
daemon on; pid $W/nginx/nginx.pid; error_log $W/nginx/error.log;
events {}
http { access_log $W/nginx/access.log; types {} default_type application/octet-stream;
  sendfile on;
  server { listen 127.0.0.1:$NGINX_PORT; root $W/rel; } }
EOF
    : > "$W/nginx/access.log"
    nginx -p "$W/nginx" -c "$W/nginx/nginx.conf"
}
nginx_stop() { [ -f "$W/nginx/nginx.pid" ] && kill "$(cat "$W/nginx/nginx.pid")" 2>/dev/null; rm -f "$W/nginx/nginx.pid"; }

run_abu_http() { abu_install "http://127.0.0.1:$NGINX_PORT/rootfs-seg/release.json"; }
# The receive alone, by a standard client, and the file read alone: what HTTP
# costs any client on this machine, beside what it costs the install.
run_curl_http() { "${TIME[@]}" curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/rootfs-seg/$(basename "$(PSEG)")"; }
run_cat_local() { "${TIME[@]}" cat "$(PSEG)" > /dev/null; }
# CPU ticks of the nginx master and its workers so far (the server shares the
# two cores with the client).
nginx_ticks() {
    local master p t=0; master=$(cat "$W/nginx/nginx.pid")
    for p in "$master" $(pgrep -P "$master"); do
        t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
# sample_served NAME SETUP RUN: `sample`, and nginx's CPU ms in that window to $RES/NAME-nginx.txt
sample_served() {
    local t0 t1 hz; hz=$(getconf CLK_TCK)
    t0=$(nginx_ticks)
    sample "$@"
    t1=$(nginx_ticks)
    echo $(( (t1 - t0) * 1000 / hz )) >> "$RES/$1-nginx.txt"
}

http_bench() {
    nginx_start
    rm -f "$RES"/{abu-http,abu-local,curl-http,cat-local}.tsv "$RES"/*-nginx.txt
    local r
    # Alternating with the same install from the local file, and the same
    # payload received by curl and read by cat.
    for r in $(seq "$RUNS"); do
        sample_served abu-http reset_abu run_abu_http
        sample abu-local reset_abu run_abuseg
        sample_served curl-http none run_curl_http
        sample cat-local none run_cat_local
    done
    # The idle tick: the booted version is the released one.
    local url="http://127.0.0.1:$NGINX_PORT/rootfs-seg/release.json"
    abu_config "$W/abu" "$url"
    abu_reset 2.0
    : > "$W/nginx/access.log"
    {
        echo "# abupdate check, twice, then update, with nothing new (booted 2.0 = released 2.0)"
        for cmd in check check update; do
            local before; before=$(wc -l < "$W/nginx/access.log")
            set +e; "$ABU" --config "$W/abu/config.toml" --json $cmd > "$W/tmp/tick.json" 2>/dev/null; local rc=$?; set -e
            sleep 0.2
            echo "## abupdate $cmd → exit $rc: $(tr -s ' \n' ' ' < "$W/tmp/tick.json")"
            tail -n +"$((before + 1))" "$W/nginx/access.log" | awk '{ print "   nginx: " $6 " " $7 " " $9 " body_bytes=" $10 }' | tr -d '"'
        done
    } > "$RES/idle-tick.txt"
    cat "$RES/idle-tick.txt" >&2
    abu_config "$W/abu"
    nginx_stop
}

# ---- the medium's part: the same install into a loop device over a file in
# RAM (tmpfs: the final fsync has nothing to write out), alternating with
# zstd -dc. On the disk-backed slot the fsync writes the whole image out of
# the loop device's backing file while nothing else can run; here only the
# pipeline (decode, write, read back, compare, hash) is left.
ram_bench() {
    rm -f "$RES/abu-ram.tsv" "$RES/zstd-ram.tsv"
    local saved=$SLOT_B r
    SLOT_B=$(attach "$RAM_SLOT" "$SIZE_MIB")
    # The file's pages allocated once, as a real slot's blocks exist.
    dd if="$W/img/rootfs-old.ext4" of="$SLOT_B" bs=4M oflag=direct status=none
    abu_config "$W/abu"
    for r in $(seq "$RUNS"); do
        sample abu-ram reset_abu run_abuseg
        sample zstd-ram none run_zstdseg
    done
    losetup -d "$SLOT_B"
    rm -f "$RAM_SLOT"
    SLOT_B=$saved
    abu_config "$W/abu"
}

# ---- peak RSS against image size (zstd -3 payloads: packing 4 GiB at -19 takes long)
rss_sweep() {
    : > "$RES/rss.tsv"
    local mib w saved=$SLOT_B
    for mib in $RSS_SIZES; do
        image "rss-$mib" "$mib"
        release "rss-$mib" 3 seg 2.0
        release "rss-$mib" 3 w27 2.0
        SLOT_B=$(attach "$W/slots/rss-$mib.img" "$mib")
        abu_config "$W/abu"
        for w in seg w27; do
            rm -f "$RES/rss-$mib-$w.tsv"
            eval "run_rss() { abu_install \"\$W/rel/rss-$mib-$w/release.json\"; }"
            sample "rss-$mib-$w" reset_abu run_rss
            sample "rss-$mib-$w" reset_abu run_rss
            echo "$mib $w $(sort -n -k2 "$RES/rss-$mib-$w.tsv" | tail -n1 | cut -d' ' -f2) $(du -b "$(payload_of "$W/rel/rss-$mib-$w")" | cut -f1)" >> "$RES/rss.tsv"
        done
        losetup -d "$SLOT_B"
        # Not cached: the 4 GiB image, its payloads and slot would fill a small disk.
        rm -rf "$W/slots/rss-$mib.img" "$W/img/rss-$mib.ext4" "$W/rel/rss-$mib-"*
        SLOT_B=$saved
        abu_config "$W/abu"
    done
}

# ---- binary + shared library sizes
size_of() { # PROGRAM → bytes of the binary plus every shared library it loads
    local bin; bin=$(readlink -f "$(command -v "$1" || echo "$1")")
    { echo "$bin"; ldd "$bin" 2>/dev/null | awk '/=>/ && $3 ~ /^\// { print $3 } /^\t\/.* \(/ { print $1 }'; } \
        | xargs -r readlink -f | sort -u | xargs -r stat -L -c %s | awk '{ s += $1 } END { print s }'
}
sizes() {
    {
        echo "abupdate $(stat -c %s "$(HOST_BIN)") static"
        echo "abupdate-pack $(stat -c %s "$ABU") static"
        local p
        for p in rauc swupdate casync zstd openssl dd sha256sum curl cat; do
            echo "$p $(size_of "$p") $(stat -L -c %s "$(command -v "$p")")"
        done
        echo "mksquashfs-note $(size_of unsquashfs) -"
    } > "$RES/sizes.txt"
}
size_for() { awk -v p="$1" '$1 == p { printf "%.2f", $2 / 1048576 }' "$RES/sizes.txt" 2>/dev/null; }

# ---- the tables
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) { print 0; exit } if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# The runs of two cases alternate (run i of one, then run i of the other), so
# run i of each saw the same moment of a shared machine: the median of the
# ratios run by run (NUM/DEN wall times), with the lowest and highest, as
# "MEDIAN MIN MAX"; empty when either case has no runs.
paired() {
    [ -s "$RES/$1.tsv" ] && [ -s "$RES/$2.tsv" ] || return 0
    paste -d' ' <(cut -d' ' -f1 "$RES/$1.tsv") <(cut -d' ' -f1 "$RES/$2.tsv") |
        awk '$1 > 0 && $2 > 0 { print $1 / $2 }' | sort -g |
        awk '{ a[NR] = $1 } END { if (NR == 0) exit; m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; print m, a[1], a[NR] }'
}
report() {
    [ -f "$RES/sizes.txt" ] || sizes
    local bytes; bytes=$(stat -c %s "$W/img/rootfs.ext4")
    # Empty (and a success: the report runs under `set -e`) for a case not run.
    med() { [ -s "$RES/$1.tsv" ] || return 0; cut -d' ' -f"${2:-1}" "$RES/$1.tsv" | median; }
    med_of() { [ -s "$1" ] || return 0; median < "$1"; }
    local ref; ref=$(med abu-seg)
    echo
    [ -s "$RES/load.txt" ] && echo "1-minute load average during the runs (other work on this shared machine), median: $(med_of "$RES/load.txt")"
    if [ -s "$RES/reporting.txt" ]; then
        local held kib
        held=$(sed -n 1p "$RES/reporting.txt"); kib=$(sed -n 2p "$RES/reporting.txt")
        echo "Free page reporting to the VM's host: ${held:-not held}; handed back during the run: ${kib:-?} KiB"
    fi
    echo "Machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n1), $(nproc) cores, $(free -g | awk '/^Mem/ { print $2 }') GiB, kernel $(uname -r), $(date -u +%Y-%m-%d)"
    echo "Image: $((bytes >> 20)) MiB ext4 of /usr files; zstd -$LEVEL payloads: default segmented (4 MiB segments) $(stat -c %s "$(PSEG)") bytes, one frame --long=27 $(stat -c %s "$(P27)"), one frame window 2^23 $(stat -c %s "$(P23)"); ${RUNS} runs each, alternating; medians."
    echo
    echo "| tool, mode | wall (s) | MB/s of image | ratio to abupdate | fastest run (s) | CPU (s) | peak RSS (MiB) | written (MiB) | binary + libs (MiB) | load |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    local c name label setup run after bin
    for c in "${CASES[@]}" "abu-http|abupdate install over HTTP from nginx (default segmented)" "abu-local|the same from the local file, alternating with it" \
        "curl-http|curl -o /dev/null of the same payload from the same nginx (the receive alone)" "cat-local|cat of the payload file → /dev/null (the read alone)" \
        "abu-ram|abupdate install, slot on a loop device over a file in RAM (its flush writes nothing out)" "zstd-ram|zstd -dc → /dev/null, alternating with it"; do
        IFS='|' read -r name label setup run after <<< "$c"
        [ -s "$RES/$name.tsv" ] || continue
        local ms rss cpu out best load
        ms=$(med "$name" 1); rss=$(med "$name" 2); cpu=$(med "$name" 3); out=$(med "$name" 4); load=$(med "$name" 5)
        best=$(cut -d' ' -f1 "$RES/$name.tsv" | sort -n | head -n1)
        case $name in
            abu*) bin=abupdate ;; rauc*) bin=rauc ;; swu*) bin=swupdate ;; casync) bin=casync ;; curl-http) bin=curl ;; cat-local) bin=cat ;;
            bound-dd) bin=dd ;; bound-zstd* | zstd-ram) bin=zstd ;; bound-openssl) bin=openssl ;; bound-sha256sum) bin=sha256sum ;;
        esac
        awk -v l="$label" -v ms="$ms" -v b="$bytes" -v ref="$ref" -v rss="$rss" -v cpu="$cpu" -v out="$out" -v best="$best" -v sz="$(size_for $bin)" -v load="$load" 'BEGIN {
            r = (ref > 0) ? sprintf("%.2f", ref / ms) : "-";
            printf "| %s | %.2f | %.0f | %s | %.2f | %.2f | %.1f | %.0f | %s | %s |\n", l, ms / 1000, b / 1e6 / (ms / 1000), r, best / 1000, cpu / 1000, rss / 1024, out / 1024, sz, load }'
    done
    if ls "$RES"/scale-*.tsv > /dev/null 2>&1; then
        echo
        echo "Scaling (taskset; MB/s of image, medians; load average in brackets):"
        echo
        echo "| run | 1 core | 2 cores |"
        echo "| --- | ---: | ---: |"
        for c in "${SCALE_CASES[@]}"; do
            IFS='|' read -r name label _ <<< "$c"
            local one two l1 l2
            one=$(med "scale-0-$name"); two=$(med "scale-0,1-$name")
            l1=$(med "scale-0-$name" 5); l2=$(med "scale-0,1-$name" 5)
            awk -v l="$label" -v a="${one:-0}" -v b="${two:-0}" -v l1="$l1" -v l2="$l2" -v bytes="$bytes" 'BEGIN {
                printf "| %s | %s | %s |\n", l, (a > 0) ? sprintf("%.0f (%s)", bytes / 1e6 / (a / 1000), l1) : "-", (b > 0) ? sprintf("%.0f (%s)", bytes / 1e6 / (b / 1000), l2) : "-" }'
        done
        local z1 z2 a1 a2
        z1=$(med scale-0-bound-zstd-seg); z2=$(med scale-0,1-bound-zstd-seg); a1=$(med scale-0-abu-seg); a2=$(med scale-0,1-abu-seg)
        awk -v z1="${z1:-0}" -v z2="${z2:-0}" -v a1="${a1:-0}" -v a2="${a2:-0}" 'BEGIN {
            if (a1 > 0 && a2 > 0) printf "\nabupdate (segmented) against single-threaded zstd -dc of the same payload: %.2fx on 1 core, %.2fx on 2 cores\n", z1 / a1, z2 / a2 }'
    fi
    if [ -s "$RES/rss.tsv" ]; then
        echo
        echo "Peak RSS of \`abupdate install\` against image size (zstd -3 payloads):"
        echo
        echo "| image | default segmented | one frame --long=27 |"
        echo "| ---: | ---: | ---: |"
        awk '{ r[$1, $2] = $3; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
             END { for (i = 1; i <= n; i++) { m = order[i]; printf "| %d MiB | %.1f MiB | %.1f MiB |\n", m, r[m, "seg"] / 1024, r[m, "w27"] / 1024 } }' "$RES/rss.tsv"
    fi
    if [ -s "$RES/idle-tick.txt" ]; then
        echo
        echo '```'
        cat "$RES/idle-tick.txt"
        echo '```'
    fi
    if [ -n "$ref" ]; then
        echo
        local best_rauc zseg http local_ rssmax
        local rauc_mode
        rauc_mode=$(for n in rauc-zstd rauc-gzip; do [ -s "$RES/$n.tsv" ] || continue; echo "$(med "$n") $n"; done | sort -n | head -n1 | cut -d' ' -f2)
        best_rauc=$([ -z "$rauc_mode" ] || med "$rauc_mode")
        zseg=$(med bound-zstd-seg); http=$(med abu-http); local_=$(med abu-local)
        local ram zram; ram=$(med abu-ram); zram=$(med zstd-ram)
        rssmax=$(awk '$2 == "seg" { if ($3 > m) m = $3 } END { print m + 0 }' "$RES/rss.tsv" 2>/dev/null || echo 0)
        local pz ph pr pb
        pz=$(paired bound-zstd-seg abu-seg); ph=$(paired abu-http abu-local); pr=$(paired zstd-ram abu-ram)
        local hc lc cc kc hn cn
        hc=$(med abu-http 3); lc=$(med abu-local 3); cc=$(med curl-http 3); kc=$(med cat-local 3)
        hn=$(med_of "$RES/abu-http-nginx.txt"); cn=$(med_of "$RES/curl-http-nginx.txt")
        pb=$([ -z "$rauc_mode" ] || paired "$rauc_mode" abu-seg)
        local rl prl prlb
        rl=$(med abu-seg-rl); prl=$([ -z "$rauc_mode" ] || paired "$rauc_mode" abu-seg-rl)
        prlb=$(stat -c %s "$(PSEGRL 2>/dev/null)" 2>/dev/null || echo 0)
        awk -v a="$ref" -v r="${best_rauc:-0}" -v z="${zseg:-0}" -v h="${http:-0}" -v lo="${local_:-0}" -v rss="$rssmax" \
            -v ram="${ram:-0}" -v zram="${zram:-0}" -v hc="$hc" -v lc="${lc:-0}" -v cc="$cc" -v kc="${kc:-0}" -v hn="${hn:-0}" -v cn="${cn:-0}" -v pz="$pz" -v ph="$ph" -v pr="$pr" -v pb="$pb" \
            -v rl="${rl:-0}" -v prl="$prl" -v prlb="$prlb" -v lrl="$RAUC_LEVEL" -v lv="$LEVEL" \
            -v s="$(stat -c %s "$(HOST_BIN)")" -v ps="$(stat -c %s "$(PSEG)")" -v p27="$(stat -c %s "$(P27)")" 'BEGIN {
            # Run by run: "MEDIAN MIN MAX" of the alternating pairs (`paired`).
            if (z > 0) printf "Target: full install ≥ 1.0x single-thread zstd -dc of the same payload: %.2fx%s\n", z / a, by_run(pz, "x");
            if (ram > 0 && zram > 0) printf "The same with a slot whose flush writes nothing out (loop device over a RAM file): %.2fx%s\n", zram / ram, by_run(pr, "x");
            if (r > 0) printf "Target: ≥ 4x RAUC best mode: %.2fx%s\n", r / a, by_run(pb, "x");
            if (r > 0 && rl > 0) printf "The same, abupdate packed at the zstd level of the RAUC bundle, %d (like for like; %d bytes, %+.1f%% against level %d): %.2fx%s\n", lrl, prlb, (prlb / ps - 1) * 100, lv, r / rl, by_run(prl, "x");
            if (h > 0 && lo > 0) printf "Target: over HTTP within 10%% of the local path: %+.1f%%%s\n", (h / lo - 1) * 100, by_run(ph, "%");
            if (hc != "" && cc != "") printf "What HTTP costs in CPU (medians): the install %+.2f CPU-s over the local file (%.2f against %.2f), nginx %.2f more; receiving the same payload, curl %.2f CPU-s against %.2f for cat of the file, nginx %.2f more\n", (hc - lc) / 1000, hc / 1000, lc / 1000, hn / 1000, cc / 1000, kc / 1000, cn / 1000;
            if (rss > 0) printf "Target: peak RSS ≤ 32 MiB for default payloads, 256 MiB to 4 GiB: at most %.1f MiB\n", rss / 1024;
            printf "Target: static host binary ≤ 3 MiB: %.2f MiB\n", s / 1048576;
            printf "Bytes: the segmented payload is %+.1f%% against one --long=27 frame\n", (ps / p27 - 1) * 100 }
            function by_run(p, unit,    f) {
                if (split(p, f, " ") < 3) return "";
                if (unit == "x") return sprintf(" (ratio of medians; run by run, alternating: median %.2fx, %.2fx to %.2fx)", f[1], f[2], f[3]);
                return sprintf(" (of medians; run by run, alternating: median %+.1f%%, %+.1f%% to %+.1f%%)", (f[1] - 1) * 100, (f[2] - 1) * 100, (f[3] - 1) * 100) }'
    fi
}

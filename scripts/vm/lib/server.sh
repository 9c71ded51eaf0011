# Sourced by scripts/vm-test.sh: the release server.  nginx on the host's
# loopback serves $W/www, which the guest reaches as 10.0.2.2:PORT (qemu user
# networking); `publish V` makes it offer release V from then on.
#
# In: W, BUILD.  Out: PORT, SERVED (the version on offer).

PORT="" NGINX_PID="" SERVED=""
NGINX_DIR="$W/nginx"
server_cleanup() { if [ -n "$NGINX_PID" ]; then kill "$NGINX_PID" 2>/dev/null; wait "$NGINX_PID" 2>/dev/null; fi; }
on_exit server_cleanup

server_stale_cleanup() {
    if [ -f "$NGINX_DIR/nginx.pid" ]; then
        local p; p="$(cat "$NGINX_DIR/nginx.pid" 2>/dev/null || true)"
        if [ -n "$p" ] && grep -qF "$NGINX_DIR/nginx.conf" "/proc/$p/cmdline" 2>/dev/null; then kill "$p" || true; fi
        rm -f "$NGINX_DIR/nginx.pid"
    fi
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# pick_port [PREFERRED]: the port is baked into the slot images' config, so a
# cached build keeps its port when it is still free.
pick_port() {
    local p
    for p in ${1:-} $(seq 18080 18180); do
        if port_free "$p"; then PORT=$p; return; fi
    done
    die "no free TCP port in 18080-18180"
}

start_nginx() {
    local n="$NGINX_DIR" i
    mkdir -p "$n/tmp" "$W/www"
    : > "$n/access.log"
    cat > "$n/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $n/nginx.pid;
error_log $n/error.log warn;
events { worker_connections 64; }
http {
    access_log $n/access.log;
    client_body_temp_path $n/tmp/body;
    proxy_temp_path $n/tmp/proxy;
    fastcgi_temp_path $n/tmp/fastcgi;
    uwsgi_temp_path $n/tmp/uwsgi;
    scgi_temp_path $n/tmp/scgi;
    types { application/json json; }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$PORT;
        root $W/www;
    }
}
EOF
    nginx -e "$n/error.log" -p "$n" -c "$n/nginx.conf" &
    NGINX_PID=$!
    for i in $(seq 50); do
        if ! port_free "$PORT"; then say "nginx serving $W/www on 127.0.0.1:$PORT (guest: 10.0.2.2:$PORT)"; return; fi
        kill -0 "$NGINX_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$n/error.log" >&2 || true
    die "nginx did not start"
}

publish() { # VERSION: what the update server offers from now on
    [ -d "$BUILD/releases/$1" ] || die "no release $1 was built (add it to a scenario's RELEASES)"
    rm -rf "$W/www"; mkdir -p "$W/www"
    cp -a "$BUILD/releases/$1/." "$W/www/"
    # A publish writes the manifest anew, as `abupdate publish` does: nginx's
    # ETag and Last-Modified are the file's mtime and size, and releases
    # packed within one second with manifests of one size would otherwise
    # look unchanged to a host's conditional GET (304).
    touch "$W/www"/release.json*
    SERVED="$1"
    say "server now offers release $1"
}

# An empty offer: a manifest no guest can use (the GRUB self-test's probe
# boots only check that HTTP works).
publish_nothing() {
    rm -rf "$W/www"; mkdir -p "$W/www"; echo '{}' > "$W/www/release.json"; SERVED=""
}

http_gets() { # PATH-REGEX: GETs of it in nginx's access log so far
    grep -cE "\"GET /$1 " "$NGINX_DIR/access.log" || true
}

#!/usr/bin/env bash
# switchyard's load benchmark against nginx and HAProxy, in one command.
#
#   benches/load/run.sh                      # ROUNDS=3 DURATION=5: about 4 minutes
#   ROUNDS=5 DURATION=10 benches/load/run.sh
#
# One nginx backend (two ports: the blue and the green slot) and three proxies
# (nginx, HAProxy, switchyard), each with ONE worker, all pinned to core 0;
# wrk pinned to core 1. For four scenarios (16 B / 16 KiB body, keep-alive /
# new connection per request) every proxy is driven in interleaved rounds
# (nginx haproxy switchyard nginx haproxy switchyard ...) so that drift of the
# machine hits all three alike. Then, switchyard alone under load: 100
# switches, 20 timed switches, 20 config reloads.
#
# Loopback only (127.0.0.1, kernel-chosen free ports); every load run is
# bounded by wrk's -d; everything started here is stopped on exit.
# See run.md next to this file for how to read the output.

set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}            # seconds per measured wrk run
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SWITCHYARD_BUILT=${SWITCHYARD:-$ROOT/target/release/switchyard}   # SY: our private copy of it
RESULTS_DIR=${RESULTS_DIR:-$ROOT/benches/results}
COMMAND_LINE="ROUNDS=$ROUNDS DURATION=$DURATION benches/load/run.sh"

PROXY_CORE=0                       # backend and every proxy: the same core
LOAD_CORE=1                        # wrk and the probes: the other one
CONNECTIONS=32
PROXIES=(nginx haproxy switchyard)
SCENARIOS=(16b-ka 16k-ka 16b-close 16k-close)
SWITCHES=100
TIMED_SWITCHES=20
RELOADS=20

# Debian puts nginx and haproxy in /usr/sbin, which a non-root PATH lacks.
export PATH=$PATH:/usr/sbin:/sbin
HELPERS=$HERE/helpers.py           # copied into $WORK once the run starts
helpers() { python3 "$HELPERS" "$@"; }
log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# ------------------------------------------------------------------ processes

STARTED_PIDS=()                    # everything we start, stopped by cleanup
WORK=""
declare -A PROXY_PID PROXY_PORT

is_running() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    read -r _ _ state _ < "/proc/$1/stat" || return 1
    [[ $state != Z ]]              # an exited child stays a zombie until reaped
}

# Stops each process we started by its pid: TERM, up to 5 s, then KILL.
# nginx workers are in the list too, in case their master dies first.
cleanup() {
    local status=$? pid i
    trap - EXIT INT TERM
    for pid in "${STARTED_PIDS[@]}"; do
        kill -TERM "$pid" 2> /dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}"; do
        for ((i = 0; i < 50; i++)); do is_running "$pid" || break; sleep 0.1; done
        kill -KILL "$pid" 2> /dev/null || true
    done
    if [[ -n $WORK ]]; then
        if ((status == 0)); then rm -rf "$WORK"; else log "stopped (exit $status); configs and logs kept in $WORK"; fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs "$@" in the background pinned to core $1; its pid ends up in $STARTED.
start_pinned() {
    local core=$1 log_file=$2
    shift 2
    taskset -c "$core" "$@" > "$log_file" 2>&1 &
    STARTED=$!
    STARTED_PIDS+=("$STARTED")
}

# nginx's master only forwards signals; the worker does the work.
nginx_worker_of() {
    local master=$1 worker i
    for ((i = 0; i < 100; i++)); do
        worker=$(pgrep -P "$master" | head -n1 || true)
        [[ -n $worker ]] && { echo "$worker"; return; }
        is_running "$master" || break
        sleep 0.05
    done
    return 1
}

cpu_ticks() {                      # utime + stime of the whole process, all threads
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# ------------------------------------------------------------------ checks

ensure_tools() {
    local missing=() tool
    for tool in nginx haproxy wrk; do
        command -v "$tool" > /dev/null || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        if [[ $(id -u) != 0 ]]; then
            die "missing ${missing[*]}; run as root, or install them: sudo apt-get install -y nginx-light haproxy wrk"
        fi
        log "installing nginx-light haproxy wrk (missing: ${missing[*]})"
        # Keep the packages' own services (nginx on 0.0.0.0:80, haproxy)
        # from starting: this benchmark listens on 127.0.0.1 only.
        local policy_made=0
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_made=1
        fi
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get install -y nginx-light haproxy wrk || { apt-get update && apt-get install -y nginx-light haproxy wrk; }; }; then
            ((policy_made)) && rm -f /usr/sbin/policy-rc.d
            die "apt-get install nginx-light haproxy wrk failed"
        fi
        if ((policy_made)); then rm -f /usr/sbin/policy-rc.d; fi
    fi
    for tool in taskset pgrep python3 getconf awk; do
        command -v "$tool" > /dev/null || die "$tool is missing (util-linux, procps, python3, libc-bin, gawk|mawk)"
    done
    taskset -c "$LOAD_CORE" true 2> /dev/null || die "needs 2 cores: cannot run on core $LOAD_CORE"
    [[ -x $SWITCHYARD_BUILT ]] || die "$SWITCHYARD_BUILT is missing; build it: cargo build --release -p switchyard"
    [[ $ROUNDS =~ ^[1-9][0-9]*$ && $DURATION =~ ^[1-9][0-9]*$ ]] || die "ROUNDS and DURATION must be positive integers"
    if ((ROUNDS < 3)); then
        log "ROUNDS=$ROUNDS < 3: a smoke test, not a result; nothing is written to $RESULTS_DIR"
    fi
}

# Other work on this 2-core machine (a cargo build, say) skews every figure.
warn_if_busy() {
    LOADAVG=$(cut -d' ' -f1 /proc/loadavg)
    if awk -v l="$LOADAVG" 'BEGIN { exit !(l > 0.5) }'; then
        log "WARNING: load average is $LOADAVG; other work on the machine will skew the figures"
    fi
}

# ------------------------------------------------------------------ configs

# Shared nginx settings. keepalive_requests is raised because nginx 1.22
# closes a client connection after 1000 requests; HAProxy and switchyard do
# not, and wrk's reconnects would be charged to nginx alone.
nginx_conf() {
    local dir=$1 http_block=$2
    mkdir -p "$dir/tmp"
    cat > "$dir/nginx.conf" << EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
$http_block
}
EOF
}

# The backend: one nginx, two ports (blue and green slot), each response
# naming its slot in X-Slot so a switch can be observed from the client.
write_backend_conf() {
    local dir=$WORK/backend slot port servers=""
    mkdir -p "$dir"
    head -c 16384 /dev/zero | tr '\0' x > "$dir/16k"
    chmod 644 "$dir/16k"
    for slot in blue green; do
        if [[ $slot == blue ]]; then port=$BLUE_PORT; else port=$GREEN_PORT; fi
        servers+="
    server {
        listen 127.0.0.1:$port;
        add_header X-Slot $slot;
        location = /16b { return 200 \"0123456789abcdef\"; }
        location = /16k { alias $dir/16k; }
    }"
    done
    nginx_conf "$dir" "$servers"
}

write_nginx_proxy_conf() {
    nginx_conf "$WORK/nginx" "
    upstream backend {
        server 127.0.0.1:$BLUE_PORT;
        keepalive 32;
    }
    server {
        listen 127.0.0.1:${PROXY_PORT[nginx]};
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }"
}

# No logging (like nginx's access_log off); connection reuse to the backend
# as with nginx's upstream keepalive.
write_haproxy_conf() {
    mkdir -p "$WORK/haproxy"
    cat > "$WORK/haproxy/haproxy.cfg" << EOF
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    http-reuse always

frontend front
    bind 127.0.0.1:${PROXY_PORT[haproxy]}
    default_backend back

backend back
    server blue 127.0.0.1:$BLUE_PORT
EOF
}

# $1: canary weight, or nothing for no canary. The reload test passes
# "{weight}" to make a template for helpers.py.
switchyard_conf_text() {
    cat << EOF
[server]
listen = ["127.0.0.1:${PROXY_PORT[switchyard]}"]
threads = 1
admin_socket = "$WORK/switchyard/admin.sock"
state_dir = "$WORK/switchyard/state"

[[route]]
name = "bench"
active = "blue"

[route.slots]
blue = ["127.0.0.1:$BLUE_PORT"]
green = ["127.0.0.1:$GREEN_PORT"]
EOF
    if [[ -n ${1:-} ]]; then
        printf '\n[route.canary]\nslot = "green"\nweight = %s\n' "$1"
    fi
}

# ------------------------------------------------------------------ start

start_everything() {
    local ports worker proxy
    read -r BLUE_PORT GREEN_PORT ports < <(helpers free-ports 5)
    read -r 'PROXY_PORT[nginx]' 'PROXY_PORT[haproxy]' 'PROXY_PORT[switchyard]' <<< "$ports"

    # nginx's workers run as an unprivileged user when started by root: they
    # must be able to read the 16 KiB file in our (mktemp: 0700) directory.
    chmod 755 "$WORK"

    write_backend_conf
    start_pinned "$PROXY_CORE" "$WORK/backend/stderr.log" \
        nginx -p "$WORK/backend/" -c "$WORK/backend/nginx.conf" -e "$WORK/backend/error.log"
    worker=$(nginx_worker_of "$STARTED") || die "backend nginx did not start: $(cat "$WORK/backend/error.log")"
    STARTED_PIDS+=("$worker")
    helpers check "$BLUE_PORT" blue
    helpers check "$GREEN_PORT" green

    write_nginx_proxy_conf
    start_pinned "$PROXY_CORE" "$WORK/nginx/stderr.log" \
        nginx -p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log"
    PROXY_PID[nginx]=$(nginx_worker_of "$STARTED") || die "nginx proxy did not start: $(cat "$WORK/nginx/error.log")"
    STARTED_PIDS+=("${PROXY_PID[nginx]}")

    write_haproxy_conf
    start_pinned "$PROXY_CORE" "$WORK/haproxy/stderr.log" haproxy -db -f "$WORK/haproxy/haproxy.cfg"
    PROXY_PID[haproxy]=$STARTED

    # A private copy of the binary: a `cargo build` finishing during the run
    # must not give `run` and the admin CLI different versions.
    mkdir -p "$WORK/switchyard"
    cp "$SWITCHYARD_BUILT" "$WORK/switchyard/switchyard"
    SY=$WORK/switchyard/switchyard
    ADMIN_SOCKET=$WORK/switchyard/admin.sock
    switchyard_conf_text > "$WORK/switchyard/switchyard.toml"
    start_pinned "$PROXY_CORE" "$WORK/switchyard/stderr.log" \
        "$SY" run -c "$WORK/switchyard/switchyard.toml"
    PROXY_PID[switchyard]=$STARTED
    wait_for_switchyard

    for proxy in "${PROXIES[@]}"; do
        is_running "${PROXY_PID[$proxy]}" || die "$proxy exited: $(tail -n 20 "$WORK/$proxy/stderr.log")"
        helpers check "${PROXY_PORT[$proxy]}" blue || die "$proxy does not serve the expected responses"
    done
    log "backend :$BLUE_PORT/:$GREEN_PORT; nginx :${PROXY_PORT[nginx]} (worker ${PROXY_PID[nginx]})," \
        "haproxy :${PROXY_PORT[haproxy]} (${PROXY_PID[haproxy]}), switchyard :${PROXY_PORT[switchyard]} (${PROXY_PID[switchyard]})"
}

wait_for_switchyard() {
    local i
    for ((i = 0; i < 300; i++)); do
        grep -q 'listening on http://' "$WORK/switchyard/stderr.log" && return
        if ! is_running "${PROXY_PID[switchyard]}"; then
            log "switchyard exited at start:"
            tail -n 20 "$WORK/switchyard/stderr.log" >&2
            if grep -q 'not yet implemented\|not implemented' "$WORK/switchyard/stderr.log"; then
                log "(an unfinished build: rebuild with cargo build --release -p switchyard)"
            fi
            exit 1
        fi
        sleep 0.05
    done
    die "switchyard did not log 'listening on' within 15 s: $(tail -n 20 "$WORK/switchyard/stderr.log")"
}

# ------------------------------------------------------------------ load

scenario_path() {
    if [[ $1 == 16b-* ]]; then echo /16b; else echo /16k; fi
}

# wrk on the load core. Extra arguments go before the URL.
run_wrk() {
    local seconds=$1 url=$2
    shift 2
    taskset -c "$LOAD_CORE" wrk -t1 "-c$CONNECTIONS" "-d${seconds}s" --latency "$@" "$url"
}

# One measured run: wrk's output to a file, and a line in runs.tsv with the
# proxy's CPU ticks over the run and its RSS afterwards.
measure_run() {
    local scenario=$1 proxy=$2 round=$3
    local pid=${PROXY_PID[$proxy]} out="$WORK/runs/$scenario.$proxy.$round.txt" extra=() before after
    if [[ $scenario == *-close ]]; then extra=(-H 'Connection: close'); fi
    before=$(cpu_ticks "$pid")
    run_wrk "$DURATION" "http://127.0.0.1:${PROXY_PORT[$proxy]}$(scenario_path "$scenario")" "${extra[@]}" > "$out"
    after=$(cpu_ticks "$pid")
    is_running "$pid" || die "$proxy died during $scenario: $(tail -n 20 "$WORK/$proxy/stderr.log")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$proxy" "$round" "$out" "$((after - before))" "$(rss_kib "$pid")" \
        >> "$WORK/runs.tsv"
    log "$(printf 'round %d  %-10s %-11s' "$round" "$scenario" "$proxy") $(helpers wrk-line "$out")"
}

# Unmeasured: fills the upstream connection pools and faults in memory so
# that the first measured round is not a cold outlier.
warm_up() {
    local proxy
    for proxy in "${PROXIES[@]}"; do
        run_wrk 1 "http://127.0.0.1:${PROXY_PORT[$proxy]}/16b" > /dev/null
    done
}

measure_all() {
    local round scenario proxy
    mkdir -p "$WORK/runs"
    : > "$WORK/runs.tsv"
    for ((round = 1; round <= ROUNDS; round++)); do
        for scenario in "${SCENARIOS[@]}"; do
            for proxy in "${PROXIES[@]}"; do
                measure_run "$scenario" "$proxy" "$round"
            done
        done
    done
}

# ------------------------------------------------------------------ switching

# Starts wrk on switchyard's 16 B path for at most 60 s; stop_background_load
# ends it early with SIGINT, on which wrk still prints its summary.
start_background_load() {
    taskset -c "$LOAD_CORE" wrk -t1 "-c$CONNECTIONS" -d60s "http://127.0.0.1:${PROXY_PORT[switchyard]}/16b" \
        > "$1" 2>&1 &
    LOAD_PID=$!
    STARTED_PIDS+=("$LOAD_PID")
    sleep 1
}

stop_background_load() {
    sleep 1
    kill -INT "$LOAD_PID" 2> /dev/null || true
    wait "$LOAD_PID" || true
}

admin() {
    timeout 15 taskset -c "$LOAD_CORE" "$SY" "$@" --socket "$ADMIN_SOCKET"
}

# "N non-2xx and S socket errors in R requests" of a wrk output.
load_errors() {
    local requests non2xx sock
    read -r requests non2xx sock < <(helpers wrk-summary "$1")
    echo "$non2xx non-2xx and $sock socket errors in $requests requests"
}

measure_switches() {
    local i target failed=0 started elapsed
    start_background_load "$WORK/switches.txt"
    started=$(date +%s.%N)
    for ((i = 0; i < SWITCHES; i++)); do
        if ((i % 2 == 0)); then target=green; else target=blue; fi
        admin switch bench "$target" --timeout 5s > /dev/null 2>> "$WORK/switch-errors.log" || failed=$((failed + 1))
    done
    elapsed=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    stop_background_load
    SWITCH_REPORT="- $SWITCHES switches (blue ⇄ green, back to back, ${elapsed} s) under wrk -c$CONNECTIONS load on /16b: $(load_errors "$WORK/switches.txt"); failed switch commands: $failed"
    log "${SWITCH_REPORT#- }"
}

measure_switch_timing() {
    local json
    start_background_load "$WORK/timed-switches.txt"
    json=$(timeout 120 taskset -c "$LOAD_CORE" python3 "$HELPERS" switch-timing \
        "${PROXY_PORT[switchyard]}" "$SY" "$ADMIN_SOCKET" "$TIMED_SWITCHES")
    stop_background_load
    TIMING_REPORT=$(python3 - "$json" "$(load_errors "$WORK/timed-switches.txt")" << 'EOF'
import json, sys
r = json.loads(sys.argv[1])
print(f"- {r['count']} timed switches under the same load: from `switch` returning to the first response from the "
      f"new slot (keep-alive client): median {r['after_return_median_ms']:.2f} ms, max {r['after_return_max_ms']:.2f} ms "
      f"(one request's round trip under this load, no switch: median {r['plain_request_median_ms']:.2f} ms); "
      f"the first request after the command returned went to the new slot {r['first_request_on_new_slot']}/{r['count']} "
      f"times ({r['stale_responses']} responses from the old slot in all); the `switch` command itself: "
      f"median {r['cli_median_ms']:.1f} ms, max {r['cli_max_ms']:.1f} ms; load: {sys.argv[2]}")
EOF
)
    log "${TIMING_REPORT#- }"
}

measure_reloads() {
    local json
    # The canary names green, so green must not be the active slot.
    admin switch bench blue --timeout 5s > /dev/null
    switchyard_conf_text '{weight}' > "$WORK/switchyard/template.toml"
    start_background_load "$WORK/reloads.txt"
    json=$(timeout 120 taskset -c "$LOAD_CORE" python3 "$HELPERS" reloads \
        "$WORK/switchyard/switchyard.toml" "$SY" "$ADMIN_SOCKET" "$RELOADS" "$WORK/switchyard/template.toml")
    stop_background_load
    RELOAD_REPORT=$(python3 - "$json" "$(load_errors "$WORK/reloads.txt")" << 'EOF'
import json, sys
r = json.loads(sys.argv[1])
applied = (f"new weight visible in `status` median {r['applied_median_ms']:.0f} ms, max {r['applied_max_ms']:.0f} ms "
           f"after the rename" if r["applied_median_ms"] is not None else "no reload became visible in `status`")
print(f"- {r['count']} config reloads (write + rename, a new canary weight each) under the same load: {sys.argv[2]}; "
      f"{applied}; reloads not applied within 5 s: {r['not_applied_within_5s']}")
EOF
)
    log "${RELOAD_REPORT#- }"
}

# ------------------------------------------------------------------ report

switchyard_log_summary() {
    local warnings
    warnings=$(grep -cE ' (WARN|ERROR) ' "$WORK/switchyard/stderr.log" || true)
    echo "- switchyard's log: $warnings WARN/ERROR lines over the whole benchmark"
    if ((warnings > 0)); then
        # Most frequent first, without the timestamp, cut to a readable width.
        grep -E ' (WARN|ERROR) ' "$WORK/switchyard/stderr.log" | sed -E 's/^[^ ]+ +//' | cut -c1-200 \
            | sort | uniq -c | sort -rn | head -n 5 | sed 's/^/    /'
    fi
}

write_report() {
    local commit dirty model out n
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo unknown)
    dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no 2> /dev/null | head -n1)
    model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    {
        echo "# Load benchmark $(date -u +%F)"
        echo
        echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "- machine: $(nproc) cores, ${model:-unknown CPU}, Linux $(uname -r); load average before the run: $LOADAVG"
        echo "- commit: $commit${dirty:+ (working tree has uncommitted changes)}; switchyard binary built $(date -u -r "$SWITCHYARD_BUILT" '+%Y-%m-%d %H:%M UTC')"
        echo "- versions: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v | head -n1 | awk '{ print "HAProxy " $3 }'), $(wrk --version 2>&1 | head -n1 | awk '{ print "wrk " $2 }')"
        echo "- command: \`$COMMAND_LINE\`"
        echo "- setup: nginx backend and each proxy with one worker on core $PROXY_CORE; wrk -t1 -c$CONNECTIONS on core $LOAD_CORE;" \
            "$ROUNDS interleaved rounds of $DURATION s per proxy and scenario; medians over rounds; ÷ nginx = ratio to nginx's" \
            "median in the same scenario of this run; CPU = the proxy process's utime+stime over the run ÷ its requests;" \
            "RSS = VmRSS after the run (nginx: the worker); errors summed over rounds"
        echo
        helpers table "$WORK/runs.tsv" "$(getconf CLK_TCK)"
        echo
        echo "Switching under load (switchyard only):"
        echo
        echo "$SWITCH_REPORT"
        echo "$TIMING_REPORT"
        echo "$RELOAD_REPORT"
        switchyard_log_summary
    } > "$WORK/report.md"

    echo
    cat "$WORK/report.md"
    if ((ROUNDS >= 3)); then
        mkdir -p "$RESULTS_DIR"
        # Never overwrite an earlier result of the same day and commit.
        out="$RESULTS_DIR/$(date -u +%F)-$commit.md"
        for ((n = 2; ; n++)); do
            [[ -e $out ]] || break
            out="$RESULTS_DIR/$(date -u +%F)-$commit-$n.md"
        done
        cp "$WORK/report.md" "$out"
        log "written to ${out#"$ROOT"/}"
    fi
}

# ------------------------------------------------------------------ main

main() {
    local runs seconds
    ensure_tools
    warn_if_busy
    runs=$((${#SCENARIOS[@]} * ${#PROXIES[@]} * ROUNDS))
    seconds=$((runs * (DURATION + 1) + 40))
    log "$runs measured runs of $DURATION s, then the switching tests: about $((seconds / 60)) min $((seconds % 60)) s"
    WORK=$(mktemp -d /tmp/switchyard-load.XXXXXX)
    # The run must not depend on the checkout staying as it is for minutes.
    cp "$HERE/helpers.py" "$WORK/helpers.py"
    HELPERS=$WORK/helpers.py
    start_everything
    warm_up
    measure_all
    measure_switches
    measure_switch_timing
    measure_reloads
    write_report
}

main "$@"

# Shell helpers shared by the end-to-end scripts (tests/e2e/run_e2e.sh,
# tests/shim/run_shim_e2e.sh): logging, bounded stops and waits, namespace
# removal. Source it after setting ID (the run's unique prefix, used in log
# lines). Every wait here is bounded; nothing sleeps without a condition.

log() { printf '[%s %s] %s\n' "$(date +%T.%3N)" "$ID" "$*"; }

# since START_EPOCH  -> seconds elapsed, two decimals
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}'; }

# stop_pid PID SIGNAL TIMEOUT_S  -- signal one of our children, wait bounded, then KILL
stop_pid() {
    local pid=$1 sig=$2 t=$3 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -"$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < t * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# del_netns NS  -- delete one namespace; anything still running inside it was started by us
del_netns() {
    local pid
    for pid in $(ip netns pids "$1" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$1" 2>/dev/null || true
}

# wait_until TIMEOUT_S DESCRIPTION CMD...  -- bounded polling
wait_until() {
    local t=$1 what=$2 i
    shift 2
    for ((i = 0; i < t * 20; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    log "timeout (${t}s) waiting for $what"
    return 1
}

# udp_listening NS ADDR:PORT
udp_listening() {
    ip netns exec "$1" ss -Hlun "src $2" | grep -q .
}

# call_topology NS_C NS_R NS_E  -- the e2e layout: caller 10.200.1.2 and
# callee 10.200.2.2, each on a veth (eth0) to the relay namespace, which
# routes between them and holds the proxy/relay address 10.200.0.1 on lo.
# The namespaces must not exist yet; the caller deletes them (del_netns).
call_topology() {
    local c=$1 r=$2 e=$3 ns
    for ns in "$c" "$r" "$e"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
    ip -n "$r" link add to-caller type veth peer name eth0 netns "$c"
    ip -n "$r" link add to-callee type veth peer name eth0 netns "$e"
    ip -n "$r" addr add 10.200.1.1/24 dev to-caller
    ip -n "$r" addr add 10.200.2.1/24 dev to-callee
    ip -n "$r" addr add 10.200.0.1/32 dev lo
    ip -n "$r" link set to-caller up
    ip -n "$r" link set to-callee up
    ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
    ip -n "$c" addr add 10.200.1.2/24 dev eth0
    ip -n "$c" link set eth0 up
    ip -n "$c" route add default via 10.200.1.1
    ip -n "$e" addr add 10.200.2.2/24 dev eth0
    ip -n "$e" link set eth0 up
    ip -n "$e" route add default via 10.200.2.1
}

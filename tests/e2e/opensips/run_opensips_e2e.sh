#!/bin/bash
# End-to-end test: a real OpenSIPS 3.4 (stock mediaproxy module in engage mode,
# dialog, mi_datagram)  <->  our mediaproxy binary (combined role), with real
# SIP (sipp) and RTP across three network namespaces:
#
#   caller ns  10.201.1.2/24 --veth-- 10.201.1.1/24  relay ns  10.201.2.1/24 --veth-- 10.201.2.2/24  callee ns
#                                     lo: 10.201.0.1/32 (opensips :5060, mediaproxy media ports 40000-40999)
#
# Modes:
#   call    normal call: RTP both ways through the relay, the caller hangs up
#           (BYE relayed by OpenSIPS); the module's remove ends the session
#           (record with timed_out false); no hang-up request is sent
#   hangup  the phones stop sending RTP mid-call (g711a.pcap ends after ~7 s)
#           and wait for a BYE: the relay expires the stream after
#           stream_timeout, our dispatcher sends OpenSIPS `dlg_end_dlg` over
#           mi_datagram (spec F.3, [OpenSIPS] socket_path), OpenSIPS BYEs both
#           phones; the hang-up is counted ok and the dialog is gone
#   mi      the OpenSIPS side of "hangup" without our hang-up client: long
#           stream_timeout; once the phones fell silent the runner itself
#           sends `dlg_end_dlg` over mi_datagram, first with the decimal
#           dialog_id the module sent the dispatcher (as spec F.3 says), then,
#           if OpenSIPS refuses that, with the dialog's ID from dlg_list
#           ("<rev-hex h_entry>.<rev-hex h_id>"); OpenSIPS must BYE both
#           phones. Both replies are kept (mi_end_*.json) and printed.
#
# Usage: run_opensips_e2e.sh [call|hangup|mi ...]   (default: call hangup)
# Environment:
#   MP_BIN=path               mediaproxy binary (default <repo>/build/mediaproxy)
#   OPENSIPS_BUILD=path       build script (default <repo>/../shared/tools/build-opensips.sh)
#   OPENSIPS_PREFIX=dir       install prefix passed to it (default: the script's own)
#   MPOS_STREAM_TIMEOUT=N     the relay's stream_timeout in s (default 3)
#   MPOS_FORWARDING=MODE      the relay's forwarding option (default userspace)
#   MPOS_SNOOP=1              put a logging proxy between OpenSIPS and the
#                             dispatcher socket (snoop.log: the module's bytes)
#   MPOS_KEEP=1               keep the artefact directory even on success
#   MPOS_STATS_TOL=N          allowed difference stats vs tcpdump (default 10)
# Exit: 0 every requested mode passed, 1 a mode failed, 2 usage/setup error,
#       77 skipped (not root, sipp/tcpdump missing, OpenSIPS cannot be built).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
MP_BIN=${MP_BIN:-$REPO/build/mediaproxy}
OPENSIPS_BUILD=${OPENSIPS_BUILD:-$REPO/../shared/tools/build-opensips.sh}
STREAM_TIMEOUT=${MPOS_STREAM_TIMEOUT:-3}
FORWARDING=${MPOS_FORWARDING:-userspace}
KEEP=${MPOS_KEEP:-0}
SNOOP=${MPOS_SNOOP:-0}
PY=/usr/bin/python3
UTIL="$HERE/os_util.py"
PCAP=/usr/share/sip-tester/g711a.pcap
RELAY_IP=10.201.0.1
CALLER_IP=10.201.1.2
CALLEE_IP=10.201.2.2
METRICS=127.0.0.1:9465   # inside the relay namespace
export PYTHONDONTWRITEBYTECODE=1

if [[ $# -gt 0 ]]; then MODES=("$@"); else MODES=(call hangup); fi
for m in "${MODES[@]}"; do
    [[ $m == call || $m == hangup || $m == mi ]] || { echo "unknown mode '$m' (call|hangup|mi)" >&2; exit 2; }
done

skip() { echo "run_opensips_e2e.sh: SKIP: $*" >&2; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "must run as root (network namespaces)"
for tool in ip sipp tcpdump ss timeout flock; do
    command -v "$tool" >/dev/null || skip "missing tool $tool"
done
[[ -r $PCAP ]] || skip "missing $PCAP (Debian sip-tester)"
[[ -x $MP_BIN ]] || { echo "run_opensips_e2e.sh: mediaproxy binary not found at $MP_BIN (set MP_BIN)" >&2; exit 2; }

ID="mpos-$$"
TMP=$(mktemp -d "/tmp/$ID.XXXXXX")
FAILED=0
MODE_PID=""

# shellcheck source=../../lib/e2e.sh
source "$REPO/tests/lib/e2e.sh"

cleanup() {
    local rc=$? ns
    set +e
    [[ -n $MODE_PID ]] && stop_pid "$MODE_PID" TERM 10
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$ID-"); do del_netns "$ns"; done
    if [[ ($rc -ne 0 && $rc -ne 77) || $FAILED -ne 0 || $KEEP == 1 ]]; then
        echo "artefacts kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# ---------------------------------------------------------- OpenSIPS build --
# Cached by the build script (an existing build of the same version is reused);
# the lock keeps two concurrent runs from building into the same prefix.
[[ -x $OPENSIPS_BUILD ]] || skip "OpenSIPS build script not found at $OPENSIPS_BUILD"
LOCK=/var/cache/mediaproxy-tests/.opensips-build.lock
mkdir -p "$(dirname "$LOCK")"
t0=$(date +%s.%N)
OS_PREFIX=""
if ! OS_PREFIX=$(flock -w 600 "$LOCK" "$OPENSIPS_BUILD" ${OPENSIPS_PREFIX:+"$OPENSIPS_PREFIX"} 2>"$TMP/opensips-build.err"); then
    tail -n 20 "$TMP/opensips-build.err" >&2
    skip "OpenSIPS 3.4 cannot be built with $OPENSIPS_BUILD (the tail of its output is above)"
fi
OS_PREFIX=$(printf '%s\n' "$OS_PREFIX" | tail -n 1)
OPENSIPS="$OS_PREFIX/sbin/opensips"
OS_MODULES="$OS_PREFIX/lib64/opensips/modules/"
[[ -x $OPENSIPS && -f $OS_MODULES/mediaproxy.so && -f $OS_MODULES/mi_datagram.so ]] ||
    skip "OpenSIPS build at '$OS_PREFIX' lacks sbin/opensips, mediaproxy.so or mi_datagram.so"
log "OpenSIPS: $("$OPENSIPS" -V 2>&1 | head -n 1) at $OS_PREFIX (ready after $(since "$t0")s)"

# =============================================================== one mode ===
MODE_NS=()
MODE_PIDS=()
MODE_DIR=""
DIAG_DONE=0

mode_diag() {
    local d=$MODE_DIR f
    [[ $DIAG_DONE == 1 ]] && return 0
    DIAG_DONE=1
    log "diagnostics (artefacts in $d):"
    for f in uac.out uas.out; do
        [[ -s $d/$f ]] && grep -aE 'Successful call|Failed call|rror|Abort|nexpected' "$d/$f" | tail -n 8 | sed "s/^/  $f| /"
    done
    for f in uac_errors.log uas_errors.log; do
        [[ -s $d/$f ]] && tail -n 15 "$d/$f" | sed "s/^/  $f| /"
    done
    [[ -f $d/opensips.log ]] && { grep -E 'ERROR|WARN|CRIT|E2E|mediaproxy|dialog' "$d/opensips.log" | tail -n 30 | sed 's/^/  opensips| /'; }
    [[ -f $d/mediaproxy.log ]] && tail -n 30 "$d/mediaproxy.log" | sed 's/^/  mediaproxy| /'
    return 0
}

mode_cleanup() {
    local rc=$? ns i
    set +e
    for ((i = ${#MODE_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${MODE_PIDS[i]}" TERM 3; done
    for ns in "${MODE_NS[@]}"; do del_netns "$ns"; done
    [[ $rc -ne 0 ]] && mode_diag
    exit "$rc"
}

# The e2e layout of tests/lib/e2e.sh's call_topology, on 10.201.x.x so that it
# never collides with the Kamailio e2e (10.200.x.x) running at the same time.
topology() {
    local c=$1 r=$2 e=$3 ns
    for ns in "$c" "$r" "$e"; do ip netns add "$ns"; MODE_NS+=("$ns"); ip -n "$ns" link set lo up; done
    ip -n "$r" link add to-caller type veth peer name eth0 netns "$c"
    ip -n "$r" link add to-callee type veth peer name eth0 netns "$e"
    ip -n "$r" addr add 10.201.1.1/24 dev to-caller
    ip -n "$r" addr add 10.201.2.1/24 dev to-callee
    ip -n "$r" addr add $RELAY_IP/32 dev lo
    ip -n "$r" link set to-caller up
    ip -n "$r" link set to-callee up
    ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
    ip -n "$c" addr add $CALLER_IP/24 dev eth0
    ip -n "$c" link set eth0 up
    ip -n "$c" route add default via 10.201.1.1
    ip -n "$e" addr add $CALLEE_IP/24 dev eth0
    ip -n "$e" link set eth0 up
    ip -n "$e" route add default via 10.201.2.1
    ip -n "$c" route get $RELAY_IP | grep -q "via 10.201.1.1"
    ip -n "$e" route get $RELAY_IP | grep -q "via 10.201.2.1"
    ip -n "$r" route get $RELAY_IP | grep -q "^local"
}

mi() {   # mi METHOD [PARAMS_JSON]  -> reply on stdout
    $PY "$UTIL" mi "$MI_SOCK" 3 "$@"
}

metrics_to() {   # metrics_to FILE
    ip netns exec "$NS_R" $PY "$UTIL" metrics "$METRICS" 3 >"$1" 2>&1 || true
}

metric_value() {   # metric_value FILE NAME_WITH_LABELS  -> value or empty
    awk -v n="$2" '$1 == n {print $2; exit}' "$1" 2>/dev/null || true
}

dlg_count() {   # number of dialogs OpenSIPS lists (empty on error)
    mi dlg_list 2>/dev/null | $PY -c 'import json,sys; print(len(json.load(sys.stdin)["result"]["Dialogs"]))' 2>/dev/null
}

dlg_confirmed() {
    mi dlg_list 2>/dev/null | $PY -c 'import json,sys
d=json.load(sys.stdin)["result"]["Dialogs"]; sys.exit(0 if len(d)==1 and d[0]["state"]==4 else 1)'
}

no_dialogs() { [[ $(dlg_count) == 0 ]]; }

module_connected() {
    metrics_to "$MODE_DIR/metrics_start.txt"
    local v
    v=$(metric_value "$MODE_DIR/metrics_start.txt" mediaproxy_module_connections)
    [[ $v =~ ^[0-9]+$ && $v -ge 1 ]]
}

hangup_counted() {
    metrics_to "$MODE_DIR/metrics_after.txt"
    grep -q '^mediaproxy_hangup_requests_total{proxy="opensips"' "$MODE_DIR/metrics_after.txt"
}

run_mode() {
    local mode=$1 rc=0
    local d="$TMP/$mode"
    MODE_DIR=$d
    local stream_timeout=$STREAM_TIMEOUT
    [[ $mode == mi ]] && stream_timeout=60   # the runner, not the relay, ends this call
    trap mode_cleanup EXIT
    trap 'exit 130' INT TERM HUP
    mkdir -p "$d/run" "$d/os-run"
    local t0 t1
    t0=$(date +%s.%N)
    log "== mode $mode (mediaproxy $MP_BIN, stream_timeout ${stream_timeout}s, forwarding $FORWARDING), artefacts in $d"

    NS_C="$ID-$mode-c" NS_R="$ID-$mode-r" NS_E="$ID-$mode-e"
    topology "$NS_C" "$NS_R" "$NS_E"
    log "namespaces up: $NS_C $NS_R $NS_E"

    local sock="$d/run/dispatcher.sock" os_sock="$d/run/dispatcher.sock"
    MI_SOCK="$d/os-run/mi.sock"

    # ---- our mediaproxy: combined role, short stream_timeout, hang-up to OpenSIPS ----
    cat >"$d/mp.ini" <<EOF
[General]
role = combined
runtime_dir = $d/run
log_level = debug

[Relay]
relay_ip = $RELAY_IP
port_range = 40000:41000
stream_timeout = $stream_timeout
forwarding = $FORWARDING

[Metrics]
listen = $METRICS

[OpenSIPS]
socket_path = $MI_SOCK

[Kamailio]
socket_path = none
EOF
    t1=$(date +%s.%N)
    ip netns exec "$NS_R" "$MP_BIN" --foreground --config "$d/mp.ini" >"$d/mediaproxy.log" 2>&1 &
    local mp_pid=$!
    MODE_PIDS+=("$mp_pid")
    $PY "$UTIL" wait-unix "$sock" 10 "$mp_pid"
    log "mediaproxy up (pid $mp_pid) after $(since "$t1")s"

    if [[ $SNOOP == 1 ]]; then
        os_sock="$d/run/snoop.sock"
        $PY "$UTIL" snoop "$os_sock" "$sock" "$d/snoop.log" 120 &
        MODE_PIDS+=("$!")
        $PY "$UTIL" wait-unix "$os_sock" 5
        log "snooping module traffic into $d/snoop.log"
    fi

    # ---- packet capture on both relay veths ----
    ip netns exec "$NS_R" tcpdump -i to-caller -nn -U -Z root --immediate-mode \
        -w "$d/to-caller.pcap" udp 2>"$d/tcpdump-caller.err" &
    MODE_PIDS+=("$!")
    ip netns exec "$NS_R" tcpdump -i to-callee -nn -U -Z root --immediate-mode \
        -w "$d/to-callee.pcap" udp 2>"$d/tcpdump-callee.err" &
    MODE_PIDS+=("$!")
    wait_until 10 "tcpdump (caller side)" grep -q "listening on" "$d/tcpdump-caller.err"
    wait_until 10 "tcpdump (callee side)" grep -q "listening on" "$d/tcpdump-callee.err"

    # ---- OpenSIPS ----
    sed -e "s|@MPATH@|$OS_MODULES|g" -e "s|@LISTEN_IP@|$RELAY_IP|g" \
        -e "s|@MP_SOCKET@|$os_sock|g" -e "s|@MI_SOCKET@|$MI_SOCK|g" \
        -e "s|@CALLEE_URI@|sip:$CALLEE_IP:5060|g" -e "s|@ENGAGE@|1|g" \
        "$HERE/opensips.cfg" >"$d/opensips.cfg"
    if grep -n '^[^#]*@[A-Z_]*@' "$d/opensips.cfg"; then log "unreplaced token in opensips.cfg"; exit 2; fi
    "$OPENSIPS" -c -f "$d/opensips.cfg" >"$d/opensips-check.log" 2>&1 ||
        { log "opensips config check failed:"; tail -n 30 "$d/opensips-check.log" | sed 's/^/  opensips| /'; exit 1; }
    t1=$(date +%s.%N)
    ip netns exec "$NS_R" "$OPENSIPS" -F -f "$d/opensips.cfg" -P "$d/opensips.pid" -w "$d" \
        -m 64 -M 8 >"$d/opensips.log" 2>&1 &
    local os_pid=$!
    MODE_PIDS+=("$os_pid")
    wait_until 15 "opensips on $RELAY_IP:5060" udp_listening "$NS_R" $RELAY_IP:5060
    wait_until 10 "opensips mi_datagram socket $MI_SOCK" test -S "$MI_SOCK"
    wait_until 10 "OpenSIPS's mediaproxy module connected to the dispatcher" module_connected
    log "opensips up (pid $os_pid) after $(since "$t1")s; module connections: $(metric_value "$d/metrics_start.txt" mediaproxy_module_connections)"
    mi version >"$d/mi_version.json" 2>&1 || { log "mi_datagram does not answer 'version'"; cat "$d/mi_version.json"; exit 1; }
    log "MI version: $(cat "$d/mi_version.json")"

    # ---- callee (uas) ----
    (cd "$d" && exec timeout -k 2 60 ip netns exec "$NS_E" sipp -sf "$HERE/uas.xml" \
        -i $CALLEE_IP -p 5060 -mi $CALLEE_IP -mp 6000 -m 1 -nostdin \
        -trace_msg -message_file "$d/uas_messages.log" \
        -trace_err -error_file "$d/uas_errors.log" \
        -timeout 55s -timeout_error) >"$d/uas.out" 2>&1 &
    local uas_pid=$!
    MODE_PIDS+=("$uas_pid")
    wait_until 10 "sipp uas on $CALLEE_IP:5060" udp_listening "$NS_E" $CALLEE_IP:5060

    # ---- caller (uac), bounded by timeout(1) ----
    local scen="$HERE/uac.xml"
    [[ $mode == hangup || $mode == mi ]] && scen="$HERE/uac_hangup.xml"
    t1=$(date +%s.%N)
    echo "uac start $(date +%s.%N)" >"$d/timeline.txt"
    (cd "$d" && exec timeout -k 2 60 ip netns exec "$NS_C" sipp -sf "$scen" \
        $RELAY_IP:5060 -s service \
        -i $CALLER_IP -p 5060 -mi $CALLER_IP -mp 6000 -m 1 -nostdin \
        -trace_msg -message_file "$d/uac_messages.log" \
        -trace_err -error_file "$d/uac_errors.log" \
        -timeout 55s -timeout_error) >"$d/uac.out" 2>&1 &
    local uac_pid=$!
    MODE_PIDS+=("$uac_pid")

    # ---- while the call is up: the dialog in OpenSIPS, the session in mediaproxy ----
    if wait_until 10 "a confirmed dialog in OpenSIPS (dlg_list)" dlg_confirmed; then
        echo "dialog confirmed $(date +%s.%N)" >>"$d/timeline.txt"
        sleep 1   # RTP flowing
        mi dlg_list >"$d/dlg_list_during.json" 2>&1 || true
        metrics_to "$d/metrics_during.txt"
        log "dialog during the call: $(head -c 300 "$d/dlg_list_during.json")"
    fi

    if [[ $mode == mi ]]; then
        # g711a.pcap lasts ~7.05 s from the ACK: wait until both phones are silent
        sleep 8
        local ids
        ids=$($PY -c 'import json,sys; d=json.load(open(sys.argv[1]))["result"]["Dialogs"][0]; print(d["db_id"], d["ID"])' \
              "$d/dlg_list_during.json" 2>/dev/null || true)
        local db_id=${ids%% *} did=${ids##* }
        echo "mi dlg_end_dlg $(date +%s.%N)" >>"$d/timeline.txt"
        mi dlg_end_dlg "[\"$db_id\"]" >"$d/mi_end_decimal.json" 2>&1 || true
        log "dlg_end_dlg [\"$db_id\"] (the module's decimal dialog_id) -> $(cat "$d/mi_end_decimal.json")"
        if ! grep -q '"result"' "$d/mi_end_decimal.json"; then
            mi dlg_end_dlg "[\"$did\"]" >"$d/mi_end_did.json" 2>&1 || true
            log "dlg_end_dlg [\"$did\"] (dlg_list ID) -> $(cat "$d/mi_end_did.json")"
        fi
    fi

    local uac_rc=0 uas_rc=0 i
    wait "$uac_pid" || uac_rc=$?
    echo "uac end $(date +%s.%N)" >>"$d/timeline.txt"
    log "uac finished rc=$uac_rc, call took $(since "$t1")s"
    for ((i = 0; i < 100; i++)); do kill -0 "$uas_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$uas_pid" 2>/dev/null; then log "uas still running, stopping it"; kill -TERM "$uas_pid" || true; fi
    wait "$uas_pid" || uas_rc=$?
    log "uas finished rc=$uas_rc"
    [[ $uac_rc -eq 0 ]] || { log "FAIL: sipp uac rc=$uac_rc"; rc=1; }
    [[ $uas_rc -eq 0 ]] || { log "FAIL: sipp uas rc=$uas_rc"; rc=1; }

    # ---- after the call ----
    mi dlg_list >"$d/dlg_list_end.json" 2>&1 || true   # right after the phones finished
    t1=$(date +%s.%N)
    # a dialog ended by BYE stays listed (state 5) until its BYE transactions
    # are freed: tm wait timer, 5 s by default
    wait_until 12 "no dialog left in OpenSIPS" no_dialogs || true
    mi dlg_list >"$d/dlg_list_after.json" 2>&1 || true
    log "dialogs left in OpenSIPS: $(dlg_count) ($(since "$t1")s after the phones finished)"
    if [[ $mode == hangup ]]; then
        wait_until 5 "the hang-up counted in the metrics" hangup_counted || true
    else
        sleep 0.5
        metrics_to "$d/metrics_after.txt"
    fi

    # ---- stop everything of this mode (mediaproxy last) ----
    t1=$(date +%s.%N)
    stop_pid "$os_pid" TERM 5
    log "opensips stopped after $(since "$t1")s"
    for ((i = ${#MODE_PIDS[@]} - 1; i >= 0; i--)); do
        [[ ${MODE_PIDS[i]} == "$mp_pid" ]] || stop_pid "${MODE_PIDS[i]}" INT 3
    done
    t1=$(date +%s.%N)
    stop_pid "$mp_pid" TERM 5
    log "mediaproxy stopped after $(since "$t1")s"

    # ---- evaluate ----
    log "checks ($mode):"
    $PY "$UTIL" check "$d" "$mode" "$stream_timeout" || rc=1
    [[ $rc -ne 0 ]] && mode_diag
    log "mode $mode took $(since "$t0")s"
    return $rc
}

# ================================================================== main ====
declare -A RESULT
T_ALL=$(date +%s.%N)
for mode in "${MODES[@]}"; do
    run_mode "$mode" &
    MODE_PID=$!
    mode_rc=0
    wait "$MODE_PID" || mode_rc=$?
    MODE_PID=""
    if [[ $mode_rc -eq 0 ]]; then RESULT[$mode]=PASS; else RESULT[$mode]=FAIL; FAILED=1; fi
done

echo "================ mediaproxy OpenSIPS e2e summary ($(since "$T_ALL")s) ================"
for mode in "${MODES[@]}"; do printf '%-7s %s\n' "$mode" "${RESULT[$mode]}"; done
exit $FAILED

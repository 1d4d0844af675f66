#!/bin/bash
# End-to-end test: stock Kamailio mediaproxy.so  <->  our mediaproxy binary,
# with real SIP (sipp) and RTP across three network namespaces.
#
#   caller ns  10.200.1.2/24 ----veth---- 10.200.1.1/24  relay ns  10.200.2.1/24 ----veth---- 10.200.2.2/24  callee ns
#                                          lo: 10.200.0.1/32 (kamailio :5060, mediaproxy media ports)
#
# Usage: run_e2e.sh [use|engage|rtpproxy|manage|hangup ...]   (default: use engage)
#   rtpproxy, manage: Kamailio's stock rtpproxy.so (rtpproxy_offer/answer, or
#   rtpproxy_manage) against mediaproxy's [Rtpproxy] front end
#   hangup: engage mode; the phones fall silent and never hang up, the relay
#   expires the stream (stream_timeout = 3) and the dispatcher asks Kamailio
#   (jsonrpcs datagram socket, dlg.end_dlg) to end the dialog: Kamailio must
#   BYE both phones (hangup_check.py evaluates it)
# Environment:
#   MP_BIN=path              mediaproxy binary (default <repo>/build/mediaproxy)
#   MPE2E_NO_MEDIAPROXY=1    plumbing only: do not start the binary, Kamailio
#                            never calls the mediaproxy functions, RTP flows
#                            directly between the phones
#   MPE2E_KEEP=1             keep the artefact directory even on success
#   MPE2E_STATS_TOL=N        allowed difference stats vs tcpdump (default 10)
#   MPE2E_FORWARDING=MODE    the relay's forwarding option (default userspace;
#                            kernel asserts that the kernel carried the call)
# Exit code 0 only if every requested mode passed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
MP_BIN=${MP_BIN:-$REPO/build/mediaproxy}
NO_MP=${MPE2E_NO_MEDIAPROXY:-0}
KEEP=${MPE2E_KEEP:-0}
PY=/usr/bin/python3
UTIL="$HERE/e2e_util.py"
PCAP=/usr/share/sip-tester/g711a.pcap

if [[ $# -gt 0 ]]; then MODES=("$@"); else MODES=(use engage); fi
for m in "${MODES[@]}"; do
    [[ $m == use || $m == engage || $m == rtpproxy || $m == manage || $m == hangup ]] ||
        { echo "unknown mode '$m' (use|engage|rtpproxy|manage|hangup)" >&2; exit 2; }
    if [[ $m == hangup && $NO_MP == 1 ]]; then
        echo "mode hangup needs mediaproxy (MPE2E_NO_MEDIAPROXY=1 given)" >&2; exit 2
    fi
done

[[ $(id -u) -eq 0 ]] || { echo "run_e2e.sh: must run as root (network namespaces)" >&2; exit 77; }
for tool in ip kamailio sipp tcpdump ss timeout; do
    command -v "$tool" >/dev/null || { echo "run_e2e.sh: missing tool $tool" >&2; exit 2; }
done
[[ -r $PCAP ]] || { echo "run_e2e.sh: missing $PCAP" >&2; exit 2; }
if [[ $NO_MP != 1 && ! -x $MP_BIN ]]; then
    echo "run_e2e.sh: mediaproxy binary not found at $MP_BIN (MPE2E_NO_MEDIAPROXY=1 for plumbing only)" >&2
    exit 2
fi

ID="mpe2e-$$"
TMP=$(mktemp -d "/tmp/$ID.XXXXXX")
FAILED=0
MODE_PID=""

# shellcheck source=../lib/e2e.sh
source "$REPO/tests/lib/e2e.sh"

# ------------------------------------------------------------ top cleanup --
cleanup() {
    local rc=$? ns
    set +e
    [[ -n $MODE_PID ]] && stop_pid "$MODE_PID" TERM 10
    # safety net: namespaces carrying this run's unique prefix
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$ID-"); do del_netns "$ns"; done
    if [[ $rc -ne 0 || $FAILED -ne 0 || $KEEP == 1 ]]; then
        echo "artefacts kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# ============================================================ one mode =====
# run_mode runs in its own background subshell (so errexit stays active in
# it); its EXIT trap stops everything it started and deletes its namespaces.
MODE_NS=()
MODE_PIDS=()
MODE_DIR=""
DIAG_DONE=0

mode_diag() {
    local d=$MODE_DIR f
    [[ $DIAG_DONE == 1 ]] && return 0
    DIAG_DONE=1
    log "diagnostics (artefacts in $d):"
    for f in uac.out uas.out; do   # sipp screen dumps: keep the verdict lines only
        [[ -s $d/$f ]] && grep -aE 'Successful call|Failed call|rror|Abort|nexpected' "$d/$f" | tail -n 8 | sed "s/^/  $f| /"
    done
    for f in uac_errors.log uas_errors.log; do
        [[ -s $d/$f ]] && tail -n 15 "$d/$f" | sed "s/^/  $f| /"
    done
    [[ -f $d/kamailio.log ]] && { grep -E 'ERROR|WARN|E2E|mediaproxy' "$d/kamailio.log" | tail -n 25 | sed 's/^/  kamailio| /'; }
    [[ -f $d/mediaproxy.log ]] && tail -n 40 "$d/mediaproxy.log" | sed 's/^/  mediaproxy| /'
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

setup_netns() {   # setup_netns PREFIX  -> NS_C NS_R NS_E
    NS_C="$1-caller" NS_R="$1-relay" NS_E="$1-callee"
    MODE_NS+=("$NS_C" "$NS_R" "$NS_E")  # mode_cleanup deletes them, however far this gets
    call_topology "$NS_C" "$NS_R" "$NS_E"

    # routing sanity (no ping on these machines; the SIP call proves reachability)
    ip -n "$NS_C" route get 10.200.0.1 | grep -q "via 10.200.1.1"
    ip -n "$NS_E" route get 10.200.0.1 | grep -q "via 10.200.2.1"
    ip -n "$NS_R" route get 10.200.0.1 | grep -q "^local"
}

run_mode() {
    local mode=$1 with_mp=1 rc=0
    local d="$TMP/$1"
    MODE_DIR=$d
    trap mode_cleanup EXIT
    trap 'exit 130' INT TERM HUP
    [[ $NO_MP == 1 ]] && with_mp=0
    mkdir -p "$d/run" "$d/kam-run"
    local t0 t1
    t0=$(date +%s.%N)
    log "== mode $mode (mediaproxy: $([[ $with_mp == 1 ]] && echo "$MP_BIN" || echo disabled)), artefacts in $d"

    setup_netns "$ID-$mode"
    log "namespaces up: $NS_C $NS_R $NS_E ($(since "$t0")s)"

    local sock="$d/run/dispatcher.sock" mp_pid="" kam_pid tcpd_c tcpd_e uas_pid
    # ---- mediaproxy ----
    if [[ $with_mp == 1 ]]; then
        # spec D.1: both ends even, the end itself unused -> ports 40000..40999
        cat >"$d/mp.ini" <<EOF
[General]
role = combined
runtime_dir = $d/run
log_level = debug

[Relay]
relay_ip = 10.200.0.1
port_range = 40000:41000
forwarding = ${MPE2E_FORWARDING:-userspace}
EOF
        if [[ $mode == rtpproxy || $mode == manage ]]; then
            printf '\n[Rtpproxy]\nlisten = udp:10.200.0.1:22222\n' >>"$d/mp.ini"
        fi
        if [[ $mode == hangup ]]; then   # still in [Relay]: short silence limit
            printf 'stream_timeout = 3\n\n[Kamailio]\nsocket_path = %s\n\n[OpenSIPS]\nsocket_path = none\n\n[Metrics]\nlisten = 127.0.0.1:9465\n' \
                "$d/kam-run/kamailio_rpc.sock" >>"$d/mp.ini"
        fi
        t1=$(date +%s.%N)
        ip netns exec "$NS_R" "$MP_BIN" --foreground --config "$d/mp.ini" \
            >"$d/mediaproxy.log" 2>&1 &
        mp_pid=$!
        MODE_PIDS+=("$mp_pid")
        $PY "$UTIL" wait-unix "$sock" 10 "$mp_pid"
        log "mediaproxy up (pid $mp_pid): $sock accepts connections after $(since "$t1")s"
    fi

    # ---- packet capture on both relay veths ----
    ip netns exec "$NS_R" tcpdump -i to-caller -nn -U -Z root --immediate-mode \
        -w "$d/to-caller.pcap" udp 2>"$d/tcpdump-caller.err" &
    tcpd_c=$!
    MODE_PIDS+=("$tcpd_c")
    ip netns exec "$NS_R" tcpdump -i to-callee -nn -U -Z root --immediate-mode \
        -w "$d/to-callee.pcap" udp 2>"$d/tcpdump-callee.err" &
    tcpd_e=$!
    MODE_PIDS+=("$tcpd_e")
    wait_until 10 "tcpdump (caller side)" grep -q "listening on" "$d/tcpdump-caller.err"
    wait_until 10 "tcpdump (callee side)" grep -q "listening on" "$d/tcpdump-callee.err"

    # ---- kamailio ----
    local kdefs=(-A "MP_SOCKET=\"$sock\"" -A 'CALLEE_URI="sip:10.200.2.2:5060"'
                 -A 'RTPP_SOCK="udp:10.200.0.1:22222"')
    [[ $with_mp == 1 ]] && kdefs+=(-A WITH_MEDIAPROXY)
    [[ $mode == hangup ]] && kdefs+=(-A "RPC_SOCKET=\"$d/kam-run/kamailio_rpc.sock\"")
    local uas_xml="$HERE/uas.xml" uac_xml="$HERE/uac.xml"
    [[ $mode == hangup ]] && uas_xml="$HERE/uas-hangup.xml" uac_xml="$HERE/uac-hangup.xml"
    kamailio -c -f "$HERE/kamailio-$mode.cfg" "${kdefs[@]}" >"$d/kamailio-check.log" 2>&1 ||
        { log "kamailio config check failed:"; tail -n 30 "$d/kamailio-check.log" | sed 's/^/  kamailio| /'; exit 1; }
    t1=$(date +%s.%N)
    ip netns exec "$NS_R" kamailio -DD -E -f "$HERE/kamailio-$mode.cfg" "${kdefs[@]}" \
        -P "$d/kamailio.pid" -Y "$d/kam-run" -w "$d" >"$d/kamailio.log" 2>&1 &
    kam_pid=$!
    MODE_PIDS+=("$kam_pid")
    wait_until 10 "kamailio on 10.200.0.1:5060" udp_listening "$NS_R" 10.200.0.1:5060
    sleep 0.3   # SIP workers connect to the dispatcher in child_init
    log "kamailio up (pid $kam_pid) after $(since "$t1")s"

    # ---- callee (uas) ----
    (cd "$d" && exec timeout -k 2 40 ip netns exec "$NS_E" sipp -sf "$uas_xml" \
        -i 10.200.2.2 -p 5060 -mi 10.200.2.2 -mp 6000 -m 1 -nostdin \
        -trace_msg -message_file "$d/uas_messages.log" \
        -trace_err -error_file "$d/uas_errors.log" \
        -timeout 35s -timeout_error) >"$d/uas.out" 2>&1 &
    uas_pid=$!
    MODE_PIDS+=("$uas_pid")
    wait_until 10 "sipp uas on 10.200.2.2:5060" udp_listening "$NS_E" 10.200.2.2:5060

    # ---- caller (uac), bounded by timeout(1) ----
    t1=$(date +%s.%N)
    local uac_rc=0 uas_rc=0 i
    (cd "$d" && exec timeout -k 2 40 ip netns exec "$NS_C" sipp -sf "$uac_xml" \
        10.200.0.1:5060 -s service \
        -i 10.200.1.2 -p 5060 -mi 10.200.1.2 -mp 6000 -m 1 -nostdin \
        -trace_msg -message_file "$d/uac_messages.log" \
        -trace_err -error_file "$d/uac_errors.log" \
        -timeout 35s -timeout_error) >"$d/uac.out" 2>&1 &
    local uac_pid=$!
    MODE_PIDS+=("$uac_pid")
    wait "$uac_pid" || uac_rc=$?     # (an interruptible wait, unlike a foreground command)
    log "uac finished rc=$uac_rc, call took $(since "$t1")s"
    for ((i = 0; i < 100; i++)); do kill -0 "$uas_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$uas_pid" 2>/dev/null; then log "uas still running, stopping it"; kill -TERM "$uas_pid" || true; fi
    wait "$uas_pid" || uas_rc=$?
    log "uas finished rc=$uas_rc"
    [[ $uac_rc -eq 0 ]] || { log "FAIL: sipp uac rc=$uac_rc"; rc=1; }
    [[ $uas_rc -eq 0 ]] || { log "FAIL: sipp uas rc=$uas_rc"; rc=1; }

    # ---- the session must be gone after the BYE: ask the dispatcher ourselves ----
    if [[ $with_mp == 1 ]]; then
        sleep 0.3
        local ids=() cid="" ft="" tt=""
        mapfile -t ids < <($PY "$UTIL" dialog "$d" || true)
        cid=${ids[0]-} ft=${ids[1]-} tt=${ids[2]-}
        log "remove for the finished call (expect error):"
        $PY "$UTIL" request "$sock" 2 remove "call_id=$cid" "from_tag=$ft" "to_tag=$tt" \
            >"$d/remove_after_bye.txt" 2>&1 || true
        sed 's/^/  /' "$d/remove_after_bye.txt"
        if [[ $mode == hangup ]]; then   # the hang-up counters, before mediaproxy stops
            ip netns exec "$NS_R" $PY -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:9465/metrics", timeout=5).read().decode())' \
                >"$d/metrics.txt" 2>&1 || log "metrics fetch failed: $(tail -n 1 "$d/metrics.txt")"
        fi
    fi

    # ---- stop everything of this mode (mediaproxy last) ----
    sleep 0.2
    stop_pid "$kam_pid" TERM 5
    stop_pid "$tcpd_c" INT 3
    stop_pid "$tcpd_e" INT 3
    if [[ -n $mp_pid ]]; then
        t1=$(date +%s.%N)
        stop_pid "$mp_pid" TERM 5
        log "mediaproxy stopped after $(since "$t1")s"
    fi

    # ---- evaluate ----
    log "checks:"
    if [[ $mode == hangup ]]; then
        $PY "$HERE/hangup_check.py" "$d" "$with_mp" || rc=1
    else
        $PY "$UTIL" check "$d" "$mode" "$with_mp" || rc=1
    fi
    if [[ $rc -ne 0 ]]; then mode_diag; fi
    log "mode $mode took $(since "$t0")s"
    return $rc
}

# ================================================================= main ====
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

echo "================ mediaproxy e2e summary ($(since "$T_ALL")s) ================"
for mode in "${MODES[@]}"; do
    note=""
    [[ $NO_MP == 1 ]] && note=" (plumbing only: mediaproxy disabled)"
    printf '%-7s %s%s\n' "$mode" "${RESULT[$mode]}" "$note"
done
exit $FAILED

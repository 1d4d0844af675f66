#!/bin/bash
# run_shim_e2e.sh - end-to-end test of libmediaproxy-shim: Kamailio 5.6 with
# app_python3 running the example KEMI script (plugin-shim/examples), which
# drives our mediaproxy binary through the shim (ctypes) instead of the stock
# mediaproxy.so; a sipp call with RTP both ways across three network
# namespaces, the same layout and checks as tests/e2e (whose e2e_util.py
# helpers and sipp scenarios it reuses):
#
#   caller ns 10.200.1.2 --- [10.200.1.1 | relay ns | 10.200.2.1] --- 10.200.2.2 callee ns
#                             lo 10.200.0.1: kamailio :5060, mediaproxy 40000-40999
#
# Checks (e2e_util.py check ... use 1): both phones got SDP naming the relay,
# >= 200 RTP packets relayed each way and none bypassing it, the script's
# use_media_proxy()/end_media_session() calls returned 1, the relay's own
# statistics (packet counters) match tcpdump, and a `remove` sent after the
# BYE is answered `error` (the session is gone).
#
# MPSHIM_E2E_MODE=engage runs the script in engage mode (MPSHIM_MODE=engage,
# the dialog module, two SIP workers sharing the shim's dialog table) with
# the re-INVITE scenarios uac-reinvite.xml and uas-reinvite.xml and also
# checks: the initial INVITE, the re-INVITE, both 200s and the BYE were
# reported to the dialog table with rc 1; the dispatcher's management
# interface (`sessions`, plain TCP) lists the call after the re-INVITE and no
# session after the BYE.
# MPSHIM_E2E_MODE=hangup: engage mode as above (one SIP worker) with
# tests/e2e's hang-up scenarios: the phones fall silent and never hang up, the relay expires the
# stream (stream_timeout 3), the dispatcher ends the dialog over Kamailio's
# jsonrpcs socket (dlg.end_dlg h_entry h_id, the ids the shim sent), Kamailio
# BYEs both phones, and the dialog module's dialog:end event, run in the RPC
# process, makes the shim send the `remove`; evaluated by tests/e2e's
# hangup_check.py.
# MPSHIM_E2E_MODE=bridge: IPv4 caller, IPv6 callee (fd00:200:2::2; its
# namespace and the relay namespace get IPv6 addresses with nodad, the relay
# and Kamailio also fd00:200::1), mediaproxy with `relay_ip = 10.200.0.1,
# fd00:200::1`, the script in use mode choosing peer_family from the next
# hop's family (IPv6 for the INVITE to the callee, IPv4 for its 200 back);
# the shim's connection goes through a socat tap (dispatcher-tap.log) so that
# the requests it sends can be checked. bridge-engage: the same in engage
# mode (dialog module, two SIP workers) with the callee sending a re-INVITE
# 3 s into the call (uac-callee-reinvite.xml, uas-callee-reinvite.xml).
# ipv6: caller and callee both on IPv6 (fd00:200:1::2, fd00:200:2::2), use
# mode. These three are evaluated by bridge_check.py.
#
# Environment: MP_BIN (default <repo>/build/mediaproxy), MPSHIM_LIB (default
# <repo>/build/plugin-shim/libmediaproxy-shim.so.1), MPE2E_KEEP=1 (keep the
# artefacts; always kept on failure), MPE2E_FORWARDING (the relay's forwarding
# option, default userspace, checked by e2e_util.py as in tests/e2e). Needs root; installs the Debian package
# kamailio-python3-modules when app_python3.so is missing. Exit 0 = PASS.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
E2E="$REPO/tests/e2e"
UTIL="$E2E/e2e_util.py"
MP_BIN=${MP_BIN:-$REPO/build/mediaproxy}
MPSHIM_LIB=${MPSHIM_LIB:-$REPO/build/plugin-shim/libmediaproxy-shim.so.1}
SCRIPT="$REPO/plugin-shim/examples/kamailio-mediaproxy-shim.py"
CFG="$REPO/plugin-shim/examples/kamailio.cfg"
KEEP=${MPE2E_KEEP:-0}
MODE=${MPSHIM_E2E_MODE:-use}
UAC_SF="$E2E/uac.xml" UAS_SF="$E2E/uas.xml" KMODE=use
if [[ $MODE == engage ]]; then
    UAC_SF="$HERE/uac-reinvite.xml" UAS_SF="$HERE/uas-reinvite.xml" KMODE=engage
elif [[ $MODE == hangup ]]; then
    UAC_SF="$E2E/uac-hangup.xml" UAS_SF="$E2E/uas-hangup.xml" KMODE=engage
elif [[ $MODE == bridge-engage ]]; then
    UAC_SF="$HERE/uac-callee-reinvite.xml" UAS_SF="$HERE/uas-callee-reinvite.xml" KMODE=engage
elif [[ $MODE != use && $MODE != engage && $MODE != bridge && $MODE != ipv6 ]]; then
    echo "run_shim_e2e.sh: unknown MPSHIM_E2E_MODE $MODE" >&2; exit 2
fi
# IPv6 modes: the addresses of the relay (and Kamailio), caller and callee
V6=0 RELAY6=fd00:200::1 CALLER6=fd00:200:1::2 CALLEE6=fd00:200:2::2
[[ $MODE == bridge || $MODE == bridge-engage || $MODE == ipv6 ]] && V6=1
CALLER_IP=10.200.1.2 CALLEE_IP=10.200.2.2 PROXY=10.200.0.1:5060
[[ $V6 == 1 ]] && CALLEE_IP=$CALLEE6
[[ $MODE == ipv6 ]] && CALLER_IP=$CALLER6 PROXY="[$RELAY6]:5060"
PY=/usr/bin/python3
PCAP=/usr/share/sip-tester/g711a.pcap
APP_PYTHON3=/usr/lib/x86_64-linux-gnu/kamailio/modules/app_python3.so

[[ $(id -u) -eq 0 ]] || { echo "run_shim_e2e.sh: must run as root (network namespaces)" >&2; exit 77; }
for tool in ip kamailio sipp tcpdump ss timeout $([[ $V6 == 1 ]] && echo socat); do
    command -v "$tool" >/dev/null || { echo "run_shim_e2e.sh: missing tool $tool" >&2; exit 2; }
done
[[ -r $PCAP ]] || { echo "run_shim_e2e.sh: missing $PCAP" >&2; exit 2; }
[[ -x $MP_BIN ]] || { echo "run_shim_e2e.sh: mediaproxy binary not found at $MP_BIN" >&2; exit 2; }
[[ -r $MPSHIM_LIB ]] || { echo "run_shim_e2e.sh: shim library not found at $MPSHIM_LIB" >&2; exit 2; }
if [[ ! -e $APP_PYTHON3 ]]; then
    echo "run_shim_e2e.sh: installing kamailio-python3-modules (app_python3)"
    policy=/usr/sbin/policy-rc.d created=0
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; created=1; fi
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        kamailio-python3-modules >/dev/null || true
    [[ $created == 1 ]] && rm -f "$policy"
    [[ -e $APP_PYTHON3 ]] || { echo "run_shim_e2e.sh: app_python3.so unavailable" >&2; exit 2; }
fi

ID="mpshim-$$"
TMP=$(mktemp -d "/tmp/$ID.XXXXXX")
NS_C="$ID-caller" NS_R="$ID-relay" NS_E="$ID-callee"
PIDS=()
RC=0

# shellcheck source=../lib/e2e.sh
source "$REPO/tests/lib/e2e.sh"

diag() {
    log "diagnostics (artefacts in $TMP):"
    local f
    for f in uac_errors.log uas_errors.log; do
        [[ -s $TMP/$f ]] && tail -n 15 "$TMP/$f" | sed "s/^/  $f| /"
    done
    [[ -f $TMP/kamailio.log ]] && grep -E 'ERROR|WARN|E2E|mediaproxy|Traceback|Error' "$TMP/kamailio.log" | tail -n 30 | sed 's/^/  kamailio| /'
    [[ -f $TMP/mediaproxy.log ]] && tail -n 30 "$TMP/mediaproxy.log" | sed 's/^/  mediaproxy| /'
    return 0
}

cleanup() {
    local rc=$? i ns
    set +e
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}" TERM 3; done
    for ns in "$NS_C" "$NS_R" "$NS_E"; do del_netns "$ns"; done
    [[ $rc -ne 0 || $RC -ne 0 ]] && diag
    if [[ $rc -ne 0 || $RC -ne 0 || $KEEP == 1 ]]; then echo "artefacts kept in $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

T0=$(date +%s.%N)
# ---- namespaces (the tests/e2e layout) ----
call_topology "$NS_C" "$NS_R" "$NS_E"
if [[ $V6 == 1 ]]; then
    # IPv6 beside IPv4: the relay namespace's lo and veths, the callee and
    # the caller (which uses it in ipv6 mode only); nodad: usable at once
    ip -n "$NS_R" addr add "$RELAY6/128" dev lo nodad
    ip -n "$NS_R" addr add fd00:200:1::1/64 dev to-caller nodad
    ip -n "$NS_R" addr add fd00:200:2::1/64 dev to-callee nodad
    ip -n "$NS_E" addr add "$CALLEE6/64" dev eth0 nodad
    ip -n "$NS_E" -6 route add default via fd00:200:2::1
    ip -n "$NS_C" addr add "$CALLER6/64" dev eth0 nodad
    ip -n "$NS_C" -6 route add default via fd00:200:1::1
    # the veths' link-local addresses still go through DAD (~1 s), and until
    # then neighbour discovery cannot run: Kamailio's INVITE to the callee
    # would wait in the neighbour queue and leave with its retransmission
    no_tentative() {
        local ns
        for ns in "$NS_C" "$NS_R" "$NS_E"; do
            [[ -z $(ip -n "$ns" -6 addr show tentative) ]] || return 1
        done
    }
    wait_until 10 "IPv6 link-local addresses past DAD" no_tentative
fi

# ---- mediaproxy (dispatcher + relay) ----
mkdir -p "$TMP/run" "$TMP/kam-run"
SOCK="$TMP/run/dispatcher.sock"
cat >"$TMP/mp.ini" <<EOF
[General]
role = combined
runtime_dir = $TMP/run
log_level = debug

[Relay]
relay_ip = 10.200.0.1$([[ $V6 == 1 ]] && printf ', %s' "$RELAY6")
port_range = 40000:41000
forwarding = ${MPE2E_FORWARDING:-userspace}
$([[ $MODE == hangup ]] && printf 'stream_timeout = 3\n\n[Kamailio]\nsocket_path = %s\n\n[OpenSIPS]\nsocket_path = none\n\n[Metrics]\nlisten = 127.0.0.1:9465\n' "$TMP/kam-run/kamailio_rpc.sock")

[Dispatcher]
listen_management = 127.0.0.1:25061
management_use_tls = no
EOF
ip netns exec "$NS_R" "$MP_BIN" --foreground --config "$TMP/mp.ini" >"$TMP/mediaproxy.log" 2>&1 &
MP_PID=$!
PIDS+=("$MP_PID")
$PY "$UTIL" wait-unix "$SOCK" 10 "$MP_PID"
log "mediaproxy up (pid $MP_PID)"
SHIM_SOCK=$SOCK
if [[ $V6 == 1 ]]; then
    # the shim talks to the dispatcher through a tap that logs the requests
    SHIM_SOCK="$TMP/run/tap.sock"
    ip netns exec "$NS_R" socat -v "UNIX-LISTEN:$SHIM_SOCK,fork" "UNIX-CONNECT:$SOCK" \
        2>"$TMP/dispatcher-tap.log" &
    PIDS+=($!)
    $PY "$UTIL" wait-unix "$SHIM_SOCK" 10 "$!"
fi

# ---- packet capture on both relay veths ----
ip netns exec "$NS_R" tcpdump -i to-caller -nn -U -Z root --immediate-mode \
    -w "$TMP/to-caller.pcap" udp 2>"$TMP/tcpdump-caller.err" &
PIDS+=($!)
ip netns exec "$NS_R" tcpdump -i to-callee -nn -U -Z root --immediate-mode \
    -w "$TMP/to-callee.pcap" udp 2>"$TMP/tcpdump-callee.err" &
PIDS+=($!)
wait_until 10 "tcpdump (caller side)" grep -q "listening on" "$TMP/tcpdump-caller.err"
wait_until 10 "tcpdump (callee side)" grep -q "listening on" "$TMP/tcpdump-callee.err"

# ---- kamailio + app_python3 + the example script + the shim ----
KDEFS=(-A "SHIM_SCRIPT=\"$SCRIPT\"")
# use mode: tests/e2e's phones send a 180, which a second SIP worker could
# forward after the 200 (sipp fails on that): one worker
[[ $MODE == use || $MODE == bridge || $MODE == ipv6 ]] && KDEFS+=(-A "CHILDREN=1")
# engage mode: the dialog module (its ids, its end events); hang-up: its RPC
[[ $KMODE == engage ]] && KDEFS+=(-A WITH_DIALOG)
# hang-up: tests/e2e's phones send a 180, which a second SIP worker could
# forward after the 200 (sipp fails on that); the end still comes from
# another process (the RPC process's dialog:end)
[[ $MODE == hangup ]] && KDEFS+=(-A "RPC_SOCKET=\"$TMP/kam-run/kamailio_rpc.sock\"" -A "CHILDREN=1")
kamailio -c -f "$CFG" "${KDEFS[@]}" >"$TMP/kamailio-check.log" 2>&1 ||
    { log "kamailio config check failed:"; tail -n 30 "$TMP/kamailio-check.log"; exit 1; }
KLISTEN=(-l udp:10.200.0.1:5060)
[[ $V6 == 1 ]] && KLISTEN+=(-l "udp:[$RELAY6]:5060")
FORWARD_TO="sip:10.200.2.2:5060"
[[ $V6 == 1 ]] && FORWARD_TO="sip:[$CALLEE6]:5060"
ip netns exec "$NS_R" env MPSHIM_LIB="$MPSHIM_LIB" MPSHIM_SOCKET="$SHIM_SOCK" \
    MPSHIM_FORWARD_TO="$FORWARD_TO" MPSHIM_TIMEOUT_MS=500 MPSHIM_MODE="$KMODE" \
    kamailio -DD -E -f "$CFG" "${KDEFS[@]}" "${KLISTEN[@]}" \
    -P "$TMP/kamailio.pid" -Y "$TMP/kam-run" -w "$TMP" >"$TMP/kamailio.log" 2>&1 &
PIDS+=($!)
wait_until 10 "kamailio on 10.200.0.1:5060" udp_listening "$NS_R" 10.200.0.1:5060
if [[ $V6 == 1 ]]; then
    wait_until 10 "kamailio on [$RELAY6]:5060" udp_listening "$NS_R" "[$RELAY6]:5060"
fi
log "kamailio up"

# ---- callee and caller (the tests/e2e scenarios) ----
(cd "$TMP" && exec timeout -k 2 40 ip netns exec "$NS_E" sipp -sf "$UAS_SF" \
    -i "$CALLEE_IP" -p 5060 -mi "$CALLEE_IP" -mp 6000 -m 1 -nostdin \
    -trace_msg -message_file "$TMP/uas_messages.log" \
    -trace_err -error_file "$TMP/uas_errors.log" -timeout 35s -timeout_error) >"$TMP/uas.out" 2>&1 &
UAS_PID=$!
PIDS+=("$UAS_PID")
if [[ $V6 == 1 ]]; then UAS_ADDR="[$CALLEE_IP]:5060"; else UAS_ADDR="$CALLEE_IP:5060"; fi
wait_until 10 "sipp uas" udp_listening "$NS_E" "$UAS_ADDR"
T1=$(date +%s.%N)
UAC_RC=0 UAS_RC=0
(cd "$TMP" && exec timeout -k 2 40 ip netns exec "$NS_C" sipp -sf "$UAC_SF" \
    "$PROXY" -s service -i "$CALLER_IP" -p 5060 -mi "$CALLER_IP" -mp 6000 -m 1 -nostdin \
    -trace_msg -message_file "$TMP/uac_messages.log" \
    -trace_err -error_file "$TMP/uac_errors.log" -timeout 35s -timeout_error) >"$TMP/uac.out" 2>&1 &
UAC_PID=$!
PIDS+=("$UAC_PID")
# management `sessions` (one JSON line) into a file
sessions() {
    ip netns exec "$NS_R" $PY - "$1" <<'PYEOF'
import socket, sys
with socket.create_connection(("127.0.0.1", 25061), timeout=5) as s:
    s.sendall(b"sessions\r\n")
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
open(sys.argv[1], "wb").write(data)
PYEOF
}
reinvite_answered() {
    [[ $(grep -c "E2E dialog_reply(reply 200) rc=1" "$TMP/kamailio.log") -ge 2 ]]
}
if [[ $MODE == engage || $MODE == bridge-engage ]]; then
    # during the call, after the re-INVITE's 200 went through the shim
    if wait_until 15 "the re-INVITE's 200 in kamailio.log" reinvite_answered; then
        sessions "$TMP/sessions_during.json" || log "FAIL: management sessions during the call"
    fi
fi
wait "$UAC_PID" || UAC_RC=$?
log "uac finished rc=$UAC_RC after $(since "$T1")s"
for ((i = 0; i < 100; i++)); do kill -0 "$UAS_PID" 2>/dev/null || break; sleep 0.1; done
kill -TERM "$UAS_PID" 2>/dev/null || true
wait "$UAS_PID" || UAS_RC=$?
[[ $UAC_RC -eq 0 ]] || { log "FAIL: sipp uac rc=$UAC_RC"; RC=1; }
[[ $UAS_RC -eq 0 ]] || { log "FAIL: sipp uas rc=$UAS_RC"; RC=1; }

# ---- the session must be gone after the BYE ----
if [[ $MODE == hangup ]]; then
    # the shim's remove comes from the dialog:end event, which Kamailio runs
    # when a BYE it sent is answered: wait for it (bounded) instead of a guess
    wait_until 5 "the dialog:end event in kamailio.log" \
        grep -q "E2E dialog_end(dialog:end)" "$TMP/kamailio.log" || true
else
    sleep 0.3
fi
mapfile -t IDS < <($PY "$UTIL" dialog "$TMP" || true)
$PY "$UTIL" request "$SOCK" 2 remove "call_id=${IDS[0]-}" "from_tag=${IDS[1]-}" \
    "to_tag=${IDS[2]-}" >"$TMP/remove_after_bye.txt" 2>&1 || true

[[ $MODE == engage || $MODE == bridge-engage ]] && { sessions "$TMP/sessions_after.json" ||
    log "FAIL: management sessions after the BYE"; }
if [[ $MODE == hangup ]]; then   # the hang-up counters, before mediaproxy stops
    ip netns exec "$NS_R" $PY -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:9465/metrics", timeout=5).read().decode())' \
        >"$TMP/metrics.txt" 2>&1 || log "metrics fetch failed: $(tail -n 1 "$TMP/metrics.txt")"
fi

# ---- stop (mediaproxy last, so that it logs the statistics) and check ----
for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    [[ ${PIDS[i]} == "$MP_PID" ]] && continue
    stop_pid "${PIDS[i]}" TERM 5
done
stop_pid "$MP_PID" TERM 5
PIDS=()
log "checks:"
if [[ $V6 == 1 ]]; then
    $PY "$HERE/bridge_check.py" "$TMP" "$MODE" || RC=1
elif [[ $MODE == hangup ]]; then
    $PY "$E2E/hangup_check.py" "$TMP" 1 || RC=1
    grep -q "E2E dialog_end(dialog:end) rc=1" "$TMP/kamailio.log" ||
        { log "FAIL: the dialog:end event did not send an answered remove"; RC=1; }
elif [[ $MODE == engage ]]; then
    $PY "$UTIL" check "$TMP" shim-engage 1 || RC=1
    $PY - "$TMP" <<'PYEOF' || RC=1
import json, os, re, sys
d = sys.argv[1]
call_id = open(os.path.join(d, "dialog.txt")).read().split("\n")[0]
klog = open(os.path.join(d, "kamailio.log"), errors="replace").read()
rcs = re.findall(r"E2E (\S+\(.*?\)) rc=(-?\d+)", klog)
bad = 0
def ok(cond, what):
    global bad
    print(("  ok    " if cond else "  FAIL  ") + what)
    bad += not cond
ok(rcs.count(("dialog_request(INVITE)", "1")) == 2, "INVITE and re-INVITE relayed (rc 1)")
ok(rcs.count(("dialog_reply(reply 200)", "1")) == 2, "both 200s relayed (rc 1)")
ends = [rc for f, rc in rcs if f in ("dialog_request(BYE)", "dialog_end(dialog:end)")]
ok(ends.count("1") == 1, "one answered remove at the end: the dialog module's dialog:end "
   "event or the BYE, whichever came first, the other rc 0 (%s)" % ends)
def ids(name):
    try:
        return [s.get("call_id") for s in json.loads(open(os.path.join(d, name)).read())]
    except (OSError, ValueError) as e:
        return ["unreadable: %s" % e]
during, after = ids("sessions_during.json"), ids("sessions_after.json")
ok(call_id in during, "dispatcher lists the call after the re-INVITE (%s)" % during)
ok(call_id not in after and not after, "no session after the BYE (%s)" % after)
sys.exit(1 if bad else 0)
PYEOF
else
    $PY "$UTIL" check "$TMP" use 1 || RC=1
fi
# The version the library reports is the one its header declares.
HDR=$REPO/plugin-shim/include/mediaproxy-shim.h
SHIM_VERSION=$(for part in MAJOR MINOR PATCH; do
    sed -n "s/^#define MPSHIM_VERSION_$part \([0-9]*\).*/\1/p" "$HDR"
done | paste -sd.)
grep -q "mediaproxy-shim $SHIM_VERSION loaded" "$TMP/kamailio.log" ||
    { log "FAIL: the KEMI script did not load the shim $SHIM_VERSION"; RC=1; }
grep -q "client_nat_test(7) = " "$TMP/kamailio.log" ||
    { log "FAIL: client_nat_test was not called"; RC=1; }
if grep -E "Traceback|Error:" "$TMP/kamailio.log" | grep -v "^$" >/dev/null; then
    log "FAIL: Python errors in kamailio.log"; RC=1
fi
log "$( [[ $RC -eq 0 ]] && echo PASS || echo FAIL ) in $(since "$T0")s"
exit $RC

#!/bin/bash
# Forwarding benchmark: plain IP routing vs mediaproxy (kernel, userspace) vs rtpengine 10.5,
# over IPv4 or (--family 6) IPv6.
# See bench/README.md.
#
#   bench/run.sh [--quick] [--out FILE.json] [--build] [other options of bench/bench.py]
#
# Needs root (network namespaces). Builds three namespaces of its own (sender, relay, receiver)
# with unique names, runs everything inside them and always removes them (trap), together with
# every process left in them.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
MEDIAPROXY=${MEDIAPROXY:-$ROOT/build/mediaproxy}
RTPENGINE=${RTPENGINE:-$(command -v rtpengine || true)}

BUILD=0
ARGS=()
for a in "$@"; do
  case "$a" in
    --build) BUILD=1 ;;
    -h|--help)
      sed -n '2,10p' "$0"; echo
      echo "bench.py options: --quick --out FILE --family 4|6"
      echo "  --modes baseline,kernel,userspace,rtpengine[,bridge]"
      echo "  --streams 1,1000,10000 --duration S --steps K --burst B --prime K --fixed-pps R"
      echo "  --overload-streams N --overload-duration S --overload-calls K --no-overload"
      echo "  --per-stream-rx"
      echo "environment: MEDIAPROXY, RTPENGINE, SENDER_CPU, RELAY_CPU, RECEIVER_CPU, NICE"
      exit 0 ;;
    *) ARGS+=("$a") ;;
  esac
done

[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (network namespaces)" >&2; exit 1; }
for t in ip cc taskset nice python3; do
  command -v "$t" >/dev/null || { echo "run.sh: $t not found" >&2; exit 1; }
done

# Our relay binary. Missing: build the project's build/ as usual. With --build: build the current
# sources into a private build directory outside the tree (others may be building build/ at the
# same time), falling back to the existing binary if the tree does not build right now.
if [ "$BUILD" = 1 ]; then
  BUILD_DIR=${MPB_BUILD_DIR:-/tmp/mediaproxy-bench-build}
  echo "building mediaproxy into $BUILD_DIR ..." >&2
  if ( cd "$ROOT" && { [ -d "$BUILD_DIR" ] || meson setup "$BUILD_DIR" >&2; } &&
       ninja -C "$BUILD_DIR" mediaproxy >&2 ); then
    MEDIAPROXY=$BUILD_DIR/mediaproxy
  else
    echo "run.sh: private build failed; using $MEDIAPROXY" >&2
  fi
elif [ ! -x "$MEDIAPROXY" ]; then
  echo "building mediaproxy ..." >&2
  ( cd "$ROOT" && { [ -d build ] || meson setup build; } && ninja -C build ) >&2 ||
    echo "run.sh: build failed; mediaproxy modes will be reported as not available" >&2
fi

# rtpengine: install it if missing, never letting the package start its service.
if [ -z "$RTPENGINE" ] && [ "${NO_INSTALL:-0}" != 1 ]; then
  echo "installing rtpengine-daemon (service start refused by policy-rc.d) ..." >&2
  POLICY=/usr/sbin/policy-rc.d
  CREATED_POLICY=0
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$POLICY"; chmod +x "$POLICY"; CREATED_POLICY=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rtpengine-daemon \
    >&2 || true
  [ "$CREATED_POLICY" = 1 ] && rm -f "$POLICY"
  RTPENGINE=$(command -v rtpengine || true)
fi

# ethtool turns off UDP segmentation offload on the benchmark's veths (below).
if ! command -v ethtool >/dev/null && [ "${NO_INSTALL:-0}" != 1 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ethtool >&2 || true
fi

WORK=$(mktemp -d /tmp/mpbench.XXXXXX)
TAG=mpb$$
NS_SND=$TAG-snd
NS_RLY=$TAG-rly
NS_RCV=$TAG-rcv

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for ns in "$NS_SND" "$NS_RLY" "$NS_RCV"; do
    if ip netns list 2>/dev/null | grep -qw "^$ns"; then
      # only processes inside our own namespaces: all of them were started by this script
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    fi
  done
  sleep 0.2
  for ns in "$NS_SND" "$NS_RLY" "$NS_RCV"; do
    ip netns delete "$ns" 2>/dev/null || true
  done
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cc -O2 -Wall -o "$WORK/blast" "$HERE/blast.c"

# sender 10.201.1.2 --- 10.201.1.1 [relay, 10.201.0.1 on lo] 10.201.2.1 --- 10.201.2.2 receiver
# and the same in IPv6 (fd00:201:1::2 --- fd00:201:1::1 [fd00:201::1 on lo] fd00:201:2::1 ---
# fd00:201:2::2), used by --family 6 and the bridge mode; an IPv4 run leaves it idle.
SND_IP=10.201.1.2
RCV_IP=10.201.2.2
RELAY_IP=10.201.0.1
SND_IP6=fd00:201:1::2
RCV_IP6=fd00:201:2::2
RELAY_IP6=fd00:201::1
for ns in "$NS_SND" "$NS_RLY" "$NS_RCV"; do
  ip netns add "$ns"
  # No duplicate-address detection on the interfaces made below (link-local addresses too):
  # IPv6 addresses are usable at once instead of "tentative" for a second or two.
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  ip -n "$ns" link set lo up
done
ip link add name v-snd netns "$NS_SND" type veth peer name v-s netns "$NS_RLY"
ip link add name v-rcv netns "$NS_RCV" type veth peer name v-r netns "$NS_RLY"
ip -n "$NS_SND" addr add $SND_IP/24 dev v-snd
ip -n "$NS_RLY" addr add 10.201.1.1/24 dev v-s
ip -n "$NS_RLY" addr add 10.201.2.1/24 dev v-r
ip -n "$NS_RLY" addr add $RELAY_IP/32 dev lo
ip -n "$NS_RCV" addr add $RCV_IP/24 dev v-rcv
ip -n "$NS_SND" addr add $SND_IP6/64 dev v-snd nodad
ip -n "$NS_RLY" addr add fd00:201:1::1/64 dev v-s nodad
ip -n "$NS_RLY" addr add fd00:201:2::1/64 dev v-r nodad
ip -n "$NS_RLY" addr add $RELAY_IP6/128 dev lo nodad
ip -n "$NS_RCV" addr add $RCV_IP6/64 dev v-rcv nodad
for l in "$NS_SND v-snd" "$NS_RLY v-s" "$NS_RLY v-r" "$NS_RCV v-rcv"; do
  set -- $l; ip -n "$1" link set "$2" up
  # No UDP segmentation offload: a relay's GSO send is cut into datagrams in
  # software on its own CPU, as on a NIC without USO (issue 14), and the
  # receiver counts datagrams, not super-packets. (One feature for UDP over
  # IPv4 and IPv6 alike: NETIF_F_GSO_UDP_L4.)
  ip netns exec "$1" ethtool -K "$2" tx-udp-segmentation off 2>/dev/null ||
    echo "warning: cannot turn off tx-udp-segmentation on $2 (ethtool missing?)" >&2
done
ip -n "$NS_SND" route add default via 10.201.1.1
ip -n "$NS_RCV" route add default via 10.201.2.1
ip -n "$NS_SND" -6 route add default via fd00:201:1::1
ip -n "$NS_RCV" -6 route add default via fd00:201:2::1
ip netns exec "$NS_RLY" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
for ns in "$NS_SND" "$NS_RLY" "$NS_RCV"; do
  ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
done
# Wait (bounded: 50 x 0.1 s) until no IPv6 address is tentative in any namespace, instead of
# sleeping a guessed time: a tentative address cannot be bound or used as a source.
for i in $(seq 50); do
  tentative=""
  for ns in "$NS_SND" "$NS_RLY" "$NS_RCV"; do
    tentative+=$(ip -n "$ns" -6 addr show tentative)
  done
  [ -z "$tentative" ] && break
  [ "$i" = 50 ] && { echo "run.sh: IPv6 addresses still tentative after 5 s: $tentative" >&2; exit 1; }
  sleep 0.1
done

export MPB_NS_SND=$NS_SND MPB_NS_RCV=$NS_RCV MPB_SND_IP=$SND_IP MPB_RCV_IP=$RCV_IP \
  MPB_RELAY_IP=$RELAY_IP MPB_SND_IP6=$SND_IP6 MPB_RCV_IP6=$RCV_IP6 MPB_RELAY_IP6=$RELAY_IP6 \
  MPB_BLAST=$WORK/blast MPB_MEDIAPROXY=$MEDIAPROXY \
  MPB_RTPENGINE=$RTPENGINE MPB_WORK=$WORK
# In the background + wait, so that INT/TERM run the trap at once instead of after the benchmark.
ip netns exec "$NS_RLY" python3 "$HERE/bench.py" "${ARGS[@]}" &
wait $!

#!/bin/bash
# Kernel forwarding designs compared with plain routing, without mediaproxy:
# rulesets written by gen.py (nft syntax) and kxrule.c (libnftnl, for the
# rules nft's syntax cannot express), traffic from ../blast.c, in three
# namespaces kx-snd / kx-rly / kx-rcv (10.211.x.x) removed on exit.
# Usage: sudo bench/kernel-designs/run.sh [N list] [rounds] [designs]
#   default: 1,1000,10000 3 d1,ip1s,nd2   (about 15 minutes)
# Each design trial sits between two baseline trials; results.jsonl and the
# printed ratios are against their mean. See README.md for the designs.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export KX_WORK="${KX_WORK:-/tmp/kx-work}"
mkdir -p "$KX_WORK"
cc -O2 -o "$KX_WORK/blast" "$HERE/../blast.c"
cc -O2 -o "$KX_WORK/kxrule" "$HERE/kxrule.c" -lnftnl -lmnl
bash "$HERE/cleanup.sh"
trap 'bash "$HERE/cleanup.sh"' EXIT
bash "$HERE/setup.sh"
python3 "$HERE/kx.py" matrix "${1:-1,1000,10000}" "${2:-3}" "${3:-d1,ip1s,nd2}"
python3 "$HERE/summ.py" "$KX_WORK/results.jsonl" || true

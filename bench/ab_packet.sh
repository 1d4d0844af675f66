#!/bin/bash
# Paired A/B of the userspace relay's CPU per packet: two mediaproxy binaries,
# one trial each at the same fixed offered rate, alternated K times (A B, B A,
# A B, ... so that neither always runs first), each pair in fresh namespaces.
# The VM this project runs on changes speed by up to 1.5x within minutes; a
# pair's two trials run seconds apart, so the per-pair ratio cancels most of
# that, where two separate bench runs (or the zero-loss search, whose best
# trials of two binaries may sit at different rates) do not.
#
#   bench/ab_packet.sh A_BINARY B_BINARY [PAIRS [STREAMS [PPS]]]
#
# Defaults: 8 pairs, 1,000 streams, 150,000 pps (below the relay's limit on
# the team's VM: both binaries carry the same load). A_MODE and B_MODE (bench
# modes, default userspace) compare configurations instead, e.g. one binary
# with A_MODE=userspace B_MODE=syscalls (io_uring or not). METRIC picks the
# per-packet figure compared (default relay_proc_us_per_pkt; machine_us_per_pkt,
# every CPU's busy time, compares the kernel path with plain routing:
# A_MODE=baseline B_MODE=kernel). A_RELAY and B_RELAY add [Relay] lines to
# each side's configuration (';'-separated, e.g. B_RELAY="media_coalesce = 0").
# AB_ARGS adds bench.py options to every trial (e.g. AB_ARGS=--delay with
# METRIC=delay_p99_us compares the delay through the relay).
# Prints each trial's figure, the B/A ratio of each pair, the median ratio, and in
# how many pairs B used less CPU. Needs root (bench/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2 PAIRS=${3:-8} STREAMS=${4:-1000} PPS=${5:-150000}
A_MODE=${A_MODE:-userspace} B_MODE=${B_MODE:-userspace} METRIC=${METRIC:-relay_proc_us_per_pkt}
A_RELAY=${A_RELAY:-} B_RELAY=${B_RELAY:-}
declare -a ratios
trial() {  # trial BINARY MODE [RELAY_LINES] -> METRIC (us per packet) and the trial's note
  MPB_RELAY_EXTRA=${3:-} MEDIAPROXY=$1 bash bench/run.sh --modes "$2" --streams "$STREAMS" --fixed-pps "$PPS" \
    --duration 3 --prime 2 --no-overload ${AB_ARGS:-} --out /tmp/ab_packet.$$.json >/dev/null 2>&1 || true
  python3 - /tmp/ab_packet.$$.json "$METRIC" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))["results"][0]
    z = r.get("zero_loss") or {}
    print(z.get(sys.argv[2]) or "nan", (r.get("note") or "").replace(" ", "_") or "-")
except Exception as e:
    print("nan", type(e).__name__)
PY
}
for ((k = 0; k < PAIRS; k++)); do
  if ((k % 2 == 0)); then
    read -r a an < <(trial "$A" "$A_MODE" "$A_RELAY"); read -r b bn < <(trial "$B" "$B_MODE" "$B_RELAY")
  else
    read -r b bn < <(trial "$B" "$B_MODE" "$B_RELAY"); read -r a an < <(trial "$A" "$A_MODE" "$A_RELAY")
  fi
  r=$(python3 -c "print(round($b / $a, 3))" 2>/dev/null || echo nan)
  ratios+=("$r")
  echo "pair $((k + 1)): A $a us  B $b us  B/A $r  ${an#-} ${bn#-}"
done
python3 - "$METRIC" "${ratios[@]}" <<'PY'
import statistics, sys
rs = [float(x) for x in sys.argv[2:] if x != "nan"]
if rs:
    print(f"B/A {sys.argv[1]}: median {statistics.median(rs):.3f} over {len(rs)} pairs "
          f"(range {min(rs):.3f}-{max(rs):.3f}); B cheaper in {sum(r < 1 for r in rs)} of {len(rs)}")
PY
rm -f /tmp/ab_packet.$$.json

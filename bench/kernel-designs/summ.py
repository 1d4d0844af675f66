#!/usr/bin/env python3
"""Summary of kx.py results: median ratio to the baseline per design and N."""
import json, sys, statistics as st
from collections import defaultdict
rows = defaultdict(list); base = defaultdict(list)
for f in sys.argv[1:]:
    for l in open(f):
        t = json.loads(l)
        if "ratio" in t: rows[(t["design"], t["n"])].append(t)
        elif t["design"] == "base": base[t["n"]].append(t)
ds = []
for (d, n) in rows:
    if d not in ds: ds.append(d)
ns = sorted({n for (_, n) in rows})
print(f"{'design':13}" + "".join(f" | N={n:<5} fwd kpps  ratio med [min-max]  us/pkt (base us)" for n in ns))
for n in ns:
    b = base[n]; print(f"  base N={n}: fwd median {st.median(x['fwd'] for x in b)/1e3:.0f}k  us {st.median(x['us'] for x in b):.2f}  trials {len(b)}")
for d in ds:
    s = f"{d:13}"
    for n in ns:
        r = rows.get((d, n), [])
        if not r: s += " | -"; continue
        rat = [x["ratio"] for x in r]
        s += f" | {st.median(x['fwd'] for x in r)/1e3:6.0f}k  {st.median(rat):.3f} [{min(rat):.2f}-{max(rat):.2f}] n={len(r)} {st.median(x['us'] for x in r):5.2f}us"
    print(s)

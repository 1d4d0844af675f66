#!/usr/bin/env python3
"""Ruleset text for design D and N streams. Stream i: 10.211.1.2:30000+i -> relay 10.211.0.1:20000+4i,
out: 10.211.0.1:20000+4i+2 -> 10.211.2.2:9000. id = i+1, mark = 0x6d000000|id."""
import sys
R, S, D, DPORT = "10.211.0.1", "10.211.1.2", "10.211.2.2", 9000
NEEDS_KXRULE = {"ip1": "ip1", "nd1": "nd1", "nd1t": "nd1t"}

def elems(n, fmt):
    return ", ".join(fmt(i) for i in range(n))

def keyof(i):
    return f"{S} . {30000+i} . {20000+4*i}"

def mark(i):
    return f"0x{0x6d000000 | (i+1):08x}"

def gen(d, n):
    o = ["flush ruleset"]
    if d == "base":
        return "\n".join(o) + "\n"
    if d in ("empty", "empty_pre", "empty_post"):
        o.append("table ip kx {")
        if d != "empty_post":
            o.append("  chain prerouting { type filter hook prerouting priority raw; policy accept; }")
        if d != "empty_pre":
            o.append("  chain postrouting { type filter hook postrouting priority srcnat; policy accept; }")
        o.append("}")
        return "\n".join(o) + "\n"
    if d.startswith("d1"):
        cnt = "" if d == "d1_nocnt" else " counter;"
        size = " size 65536;" if d in ("d1_size",) else ""
        prio = "filter" if d == "d1_prio0" else "raw"
        o.append("table ip kx {")
        o.append(f"  map fwd_map {{ type ipv4_addr . inet_service . inet_service : mark;{size}{cnt}")
        o.append("    elements = { " + elems(n, lambda i: f"{keyof(i)} : {mark(i)}") + " } }")
        if d != "d1_const":
            o.append(f"  map out_sport {{ type mark : inet_service;{size} elements = {{ " + elems(n, lambda i: f"{mark(i)} : {20000+4*i+2}") + " } }")
            o.append(f"  map out_daddr {{ type mark : ipv4_addr;{size} elements = {{ " + elems(n, lambda i: f"{mark(i)} : {D}") + " } }")
            o.append(f"  map out_dport {{ type mark : inet_service;{size} elements = {{ " + elems(n, lambda i: f"{mark(i)} : {DPORT}") + " } }")
            rw = "udp sport set meta mark map @out_sport ip daddr set meta mark map @out_daddr udp dport set meta mark map @out_dport"
        else:
            rw = f"udp sport set 20002 ip daddr set {D} udp dport set {DPORT}"
        nt = "" if d == "d1_nonotrack" else " notrack"
        o.append(f"  chain prerouting {{ type filter hook prerouting priority {prio}; policy accept;")
        o.append(f"    ip daddr {R} meta l4proto udp meta mark set ip saddr . udp sport . udp dport map @fwd_map{nt} {rw}\n  }}")
        if d != "d1_nopost":
            o.append("  chain postrouting { type filter hook postrouting priority srcnat; policy accept;")
            o.append(f"    meta mark & 0xff000000 == 0x6d000000 ip saddr set {R}\n  }}")
        o.append("}")
        return "\n".join(o) + "\n"
    if d in ("ip1", "ip1_nocnt"):
        cnt = "" if d == "ip1_nocnt" else " counter;"
        o.append("table ip kx {")
        o.append(f"  map fwdm {{ type ipv4_addr . inet_service . inet_service : mark . ipv4_addr . inet_service . inet_service;{cnt}")
        o.append("    elements = { " + elems(n, lambda i: f"{keyof(i)} : {mark(i)} . {D} . {20000+4*i+2} . {DPORT}") + " } }")
        o.append("  chain prerouting { type filter hook prerouting priority raw; policy accept; }")
        o.append("  chain postrouting { type filter hook postrouting priority srcnat; policy accept;")
        o.append(f"    meta mark & 0xff000000 == 0x6d000000 ip saddr set {R}\n  }}")
        o.append("}")
        return "\n".join(o) + "\n"
    if d in ("nd2k", "nd2kn", "nd2ke"):
        # the key carries the relay address too (no separate daddr compare) and both ports
        # as one 4-byte field: two payload loads fill it
        def kp(i):
            sp, dp = 30000 + i, 20000 + 4*i
            return f"{sp >> 8}.{sp & 255}.{dp >> 8}.{dp & 255}"
        def pp(i):
            sp, dp = 20000 + 4*i + 2, DPORT
            return f"{sp >> 8}.{sp & 255}.{dp >> 8}.{dp & 255}"
        o.append("table netdev kx {")
        if d in ("nd2k", "nd2kn"):
            cnt = "" if d == "nd2kn" else " counter;"
            o.append(f"  map fwdm {{ type ipv4_addr . ipv4_addr . ipv4_addr : ipv4_addr . ipv4_addr . ipv4_addr . ipv4_addr . iface_index;{cnt}")
            o.append("    elements = { " + elems(n, lambda i: f"{S} . {R} . {kp(i)} : {R} . {D} . {pp(i)} . {D} . \"v-r\"") + " } }")
        else:
            macs = open(f"/tmp/kx-work/macs").read().strip()  # dst . src MAC as three ipv4_addr
            # (nft's concatenations stop at 5 fields: MACs and output device (little-endian
            # ifindex) are written as one IPv6 address)
            o.append("  map fwdm { type ipv4_addr . ipv4_addr . ipv4_addr : ipv4_addr . ipv4_addr . ipv4_addr . ipv6_addr; counter;")
            o.append("    elements = { " + elems(n, lambda i: f"{S} . {R} . {kp(i)} : {R} . {D} . {pp(i)} . {macs}") + " } }")
        o.append('  chain in { type filter hook ingress devices = { "v-s", "v-r" } priority 0; policy accept; }')
        o.append("}")
        return "\n".join(o) + "\n"
    if d in ("ip1p", "ip1s", "nd2", "nd2e", "nd2p"):
        def pp(i):  # sport|dport as 4 bytes shown as an ipv4_addr (network order)
            sp, dp = 20000 + 4*i + 2, DPORT
            return f"{sp >> 8}.{sp & 255}.{dp >> 8}.{dp & 255}"
        if d == "nd2e":
            mac = lambda s: ".".join(str(int(x, 16)) for x in s.split(":"))
            m = "22:a1:4f:d7:86:4d:8e:ff:3a:63:db:e4".split(":")
            macs = " . ".join(mac(":".join(m[j:j+4])) for j in (0, 4, 8))
            o.append("table netdev kx {")
            o.append("  map fwdm { type ipv4_addr . inet_service . inet_service : ipv4_addr . ipv4_addr . ipv4_addr . iface_index; counter;")
            o.append("    elements = { " + elems(n, lambda i: f"{keyof(i)} : {R} . {D} . {pp(i)} . \"v-r\"") + " } }")
            o.append('  chain in { type filter hook ingress devices = { "v-s", "v-r" } priority 0; policy accept; }')
            o.append("}")
            return "\n".join(o) + "\n"
        if d in ("nd2", "nd2p"):
            o.append("table netdev kx {")
            o.append("  map fwdm { type ipv4_addr . inet_service . inet_service : ipv4_addr . ipv4_addr . ipv4_addr . ipv4_addr . iface_index; counter;")
            o.append("    elements = { " + elems(n, lambda i: f"{keyof(i)} : {R} . {D} . {pp(i)} . {D} . \"v-r\"") + " } }")
            o.append('  chain in { type filter hook ingress devices = { "v-s", "v-r" } priority 0; policy accept; }')
            o.append("}")
            return "\n".join(o) + "\n"
        o.append("table ip kx {")
        if d == "ip1p":
            o.append("  map fwdm { type ipv4_addr . inet_service . inet_service : mark . ipv4_addr . ipv4_addr; counter;")
            o.append("    elements = { " + elems(n, lambda i: f"{keyof(i)} : {mark(i)} . {D} . {pp(i)}") + " } }")
        else:
            o.append("  map fwdm { type ipv4_addr . inet_service . inet_service : ipv4_addr . ipv4_addr . ipv4_addr; counter;")
            o.append("    elements = { " + elems(n, lambda i: f"{keyof(i)} : {R} . {D} . {pp(i)}") + " } }")
        o.append("  chain prerouting { type filter hook prerouting priority raw; policy accept; }")
        if d == "ip1p":
            o.append("  chain postrouting { type filter hook postrouting priority srcnat; policy accept;")
            o.append(f"    meta mark & 0xff000000 == 0x6d000000 ip saddr set {R}\n  }}")
        o.append("}")
        return "\n".join(o) + "\n"
    if d in ("nd1", "nd1t"):
        o.append("table netdev kx {")
        o.append("  map fwdm { type ipv4_addr . inet_service . inet_service : ipv4_addr . inet_service . inet_service . ipv4_addr . iface_index; counter;")
        o.append("    elements = { " + elems(n, lambda i: f"{keyof(i)} : {D} . {20000+4*i+2} . {DPORT} . {D} . \"v-r\"") + " } }")
        o.append('  chain in { type filter hook ingress devices = { "v-s", "v-r" } priority 0; policy accept; }')
        o.append("}")
        return "\n".join(o) + "\n"
    if d in ("nd4", "nd4c"):
        # nft-syntax netdev: mark-id design with ip saddr rewrite + fwd, next hop = new daddr (on-link)
        o.append("table netdev kx {")
        o.append("  map fwd_map { type ipv4_addr . inet_service . inet_service : mark; counter;")
        o.append("    elements = { " + elems(n, lambda i: f"{keyof(i)} : {mark(i)}") + " } }")
        o.append("  map out_sport { type mark : inet_service; elements = { " + elems(n, lambda i: f"{mark(i)} : {20000+4*i+2}") + " } }")
        o.append("  map out_daddr { type mark : ipv4_addr; elements = { " + elems(n, lambda i: f"{mark(i)} : {D}") + " } }")
        o.append("  map out_dport { type mark : inet_service; elements = { " + elems(n, lambda i: f"{mark(i)} : {DPORT}") + " } }")
        o.append("  map out_dev { type mark : iface_index; elements = { " + elems(n, lambda i: f"{mark(i)} : \"v-r\"") + " } }")
        dev = '"v-r"' if d == "nd4c" else "meta mark map @out_dev"
        o.append('  chain in { type filter hook ingress devices = { "v-s", "v-r" } priority 0; policy accept;')
        o.append(f"    ip daddr {R} meta l4proto udp meta mark set ip saddr . udp sport . udp dport map @fwd_map"
                 f" udp sport set meta mark map @out_sport ip daddr set meta mark map @out_daddr udp dport set meta mark map @out_dport"
                 f" ip saddr set {R} fwd ip to ip daddr device {dev}\n  }}")
        o.append("}")
        return "\n".join(o) + "\n"
    raise SystemExit(f"unknown design {d}")

if __name__ == "__main__":
    d, n = sys.argv[1], int(sys.argv[2])
    sys.stdout.write(gen(d, n))

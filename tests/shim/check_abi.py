#!/usr/bin/python3
"""check_abi.py - checks the ABI of the built libmediaproxy-shim.so: it
exports exactly the functions the public header declares (nm -D
--defined-only), each under the version node the version script
(mediaproxy-shim.map, next to include/) gives it (MEDIAPROXY_SHIM_1.0 for
the 1.0 functions, which must never move; a function listed in a newer
node too is exported as name@@NEWER and keeps name@MEDIAPROXY_SHIM_1.0 for
older programs, as mpshim_message_init since 1.3), has the
SONAME libmediaproxy-shim.so.1 with the usual symlink, needs only libc (plus
the sanitizer runtimes in a sanitizer build), and references no C++ runtime.

    check_abi.py LIBRARY HEADER
"""
import os
import re
import subprocess
import sys


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


# The ABI of 1.0: these symbols keep the version node MEDIAPROXY_SHIM_1.0.
ABI_1_0 = ["mpshim_version", "mpshim_config_init", "mpshim_message_init",
           "mpshim_nat_info_init", "mpshim_client_new", "mpshim_client_free",
           "mpshim_client_last_error", "mpshim_client_connected",
           "mpshim_use_media_proxy", "mpshim_end_media_session",
           "mpshim_client_nat_test", "mpshim_fix_contact", "mpshim_free"]


def version_nodes(path):
    """({symbol: newest node}, {symbol: [older nodes]}) from the version
    script's global: lists; a function listed in several nodes (a struct it
    initialises grew) has its default version in the newest and keeps the
    older ones for programs linked before."""
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)
    nodes, older = {}, {}
    for node, body in re.findall(r"(MEDIAPROXY_SHIM_[\d.]+)\s*\{(.*?)\}", text, re.S):
        glob = body.split("local:")[0].replace("global:", "")
        for name in re.findall(r"(mpshim_\w+)\s*;", glob):
            if name in nodes:
                older.setdefault(name, []).append(nodes[name])
            nodes[name] = node
    return nodes, older


def main(lib, header):
    failures = []
    with open(header, encoding="utf-8") as f:
        text = f.read()
    declared = set(re.findall(r"MPSHIM_API[^;(]*?\b(mpshim_\w+)\s*\(", text, re.S))
    defined = {}
    for line in run("nm", "-D", "--defined-only", lib).splitlines():
        parts = line.split()
        if len(parts) >= 3:
            defined[parts[2]] = parts[1]
    functions = {n.split("@")[0] for n, t in defined.items() if t in "TtWi"}
    other = {n for n, t in defined.items() if t not in "TtWiA"}
    if functions != declared:
        failures.append(f"exported {sorted(functions ^ declared)} differ from the header")
    if other:
        failures.append(f"unexpected exported objects: {sorted(other)}")
    nodes, older = version_nodes(
        os.path.join(os.path.dirname(header), "..", "mediaproxy-shim.map"))
    if set(nodes) != declared:
        failures.append(f"version script lists {sorted(set(nodes) ^ declared)} unlike the header")
    # every 1.0 function stays reachable as name@MEDIAPROXY_SHIM_1.0 (the
    # default version, or the one kept for 1.0-1.2 programs)
    missing_1_0 = [n for n in ABI_1_0
                   if f"{n}@@MEDIAPROXY_SHIM_1.0" not in defined
                   and f"{n}@MEDIAPROXY_SHIM_1.0" not in defined]
    if missing_1_0:
        failures.append(f"1.0 functions not in MEDIAPROXY_SHIM_1.0: {missing_1_0}")
    expected = {f"{n}@@{node}" for n, node in nodes.items()}
    expected |= {f"{n}@{node}" for n, olds in older.items() for node in olds}
    exported = {n for n, t in defined.items() if t in "TtWi"}
    if exported != expected:
        failures.append(f"symbols not under their version nodes: {sorted(exported ^ expected)}")
    dyn = run("readelf", "-d", lib)
    soname = re.findall(r"\(SONAME\).*\[(.*)\]", dyn)
    needed = re.findall(r"\(NEEDED\).*\[(.*)\]", dyn)
    if soname != ["libmediaproxy-shim.so.1"]:
        failures.append(f"SONAME is {soname}")
    allowed = re.compile(r"^(libc\.so\.6|ld-linux.*|lib(a|ub|l|t)san\.so.*|libm\.so\.6|"
                         r"libpthread\.so\.0|libdl\.so\.2|librt\.so\.1)$")
    extra = [n for n in needed if not allowed.match(n)]
    if extra:
        failures.append(f"links more than libc: {extra}")
    undefined = run("nm", "-D", "--undefined-only", lib)
    cxx = [l for l in undefined.splitlines()
           if "_Z" in l or "GLIBCXX" in l or "CXXABI" in l or "__gxx" in l
           or ("__cxa" in l and "__cxa_finalize" not in l)]
    if cxx:
        failures.append(f"C++ runtime references: {cxx}")
    link = os.path.join(os.path.dirname(lib), "libmediaproxy-shim.so.1")
    if not os.path.exists(link):
        failures.append(f"missing {link}")
    for f in failures:
        print("FAIL " + f)
    print(f"{len(declared)} API functions exported, SONAME {soname}, NEEDED {needed}")
    print(f"{1 if not failures else 0} passed, {1 if failures else 0} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

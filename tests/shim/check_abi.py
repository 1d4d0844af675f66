#!/usr/bin/python3
"""check_abi.py - checks the ABI of the built libmediaproxy-shim.so: it
exports exactly the functions the public header declares (nm -D
--defined-only), all under the MEDIAPROXY_SHIM_1.0 version node, has the
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
    unversioned = [n for n, t in defined.items()
                   if t in "TtWi" and not n.endswith("@@MEDIAPROXY_SHIM_1.0")]
    if unversioned:
        failures.append(f"symbols without the MEDIAPROXY_SHIM_1.0 version: {unversioned}")
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

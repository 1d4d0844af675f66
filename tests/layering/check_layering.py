#!/usr/bin/env python3
"""The house rules on who may include whom, checked on the source tree.

  protocol/    includes only common/ (and itself): parsers stay pure;
  relay/       never includes dispatcher/ (a relay host has no dispatcher);
  dispatcher/  never includes kernel/ or relay/, not even through a header:
               the dispatcher knows relays only through the RelayLink
               interface; the combined role joins them in app/;
  accounting/  includes only common/, metrics/ and itself.

Includes are followed transitively through every project header (src/ and
include/), so a rule broken two headers away is still found. Exit 1 with
one line per broken rule: the file, the forbidden header and the chain.
"""

import re
import sys
from pathlib import Path

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2]
SEARCH = [ROOT / "src", ROOT / "include"]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)

# folder -> (allowed top folders, or None) and forbidden top folders
RULES = {
    "protocol": ({"common", "protocol"}, set()),
    "relay": (None, {"dispatcher"}),
    "dispatcher": (None, {"kernel", "relay"}),
    "accounting": ({"common", "metrics", "accounting"}, set()),
}


def resolve(name, here):
    for base in [here.parent] + SEARCH:
        p = base / name
        if p.is_file():
            return p.resolve()
    return None  # a system header in quotes, or generated: not ours


def top_folder(path):
    for base in SEARCH:
        try:
            rel = path.relative_to(base.resolve())
        except ValueError:
            continue
        return rel.parts[0] if len(rel.parts) > 1 else ""
    return ""


_cache = {}


def direct_includes(path):
    if path not in _cache:
        found = []
        for name in INCLUDE.findall(path.read_text(errors="replace")):
            p = resolve(name, path)
            if p:
                found.append(p)
        _cache[path] = found
    return _cache[path]


def closure(path):
    """Every project header reachable from `path`, with the chain to it."""
    seen = {path: [path]}
    todo = [path]
    while todo:
        cur = todo.pop()
        for inc in direct_includes(cur):
            if inc not in seen:
                seen[inc] = seen[cur] + [inc]
                todo.append(inc)
    del seen[path]
    return seen


def main():
    src = (ROOT / "src").resolve()
    problems = []
    checked = 0
    for folder, (allowed, forbidden) in RULES.items():
        for f in sorted((src / folder).glob("*.[ch]*")):
            checked += 1
            for inc, chain in closure(f.resolve()).items():
                top = top_folder(inc)
                if not top or top == "mediaproxy":
                    continue  # include/mediaproxy: public interfaces
                if top in forbidden or (allowed is not None and top not in allowed):
                    via = " -> ".join(str(p.relative_to(ROOT)) for p in chain)
                    problems.append(f"{f.relative_to(ROOT)}: {folder}/ must not include "
                                    f"{top}/ ({via})")
    for p in problems:
        print(p)
    print(f"check_layering: {checked} files, {len(problems)} broken rule(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Fails when a crate version pinned in a Cargo.lock has been yanked from crates.io.

Offline: it reads the sparse index entries cargo cached while resolving and fetching the
lock file (`cargo fetch --locked`, which .ci/run runs first), under
$CARGO_HOME/registry/index/index.crates.io-*/.cache/. On a fresh machine those entries are
as new as the fetch; on a long-lived one they are as new as cargo's last index update.
cargo-deny's own yanked check sits in its advisories check, which needs the RustSec database
from GitHub, so it cannot run offline.

    scripts/check-yanked.py [Cargo.lock ...]        (default: Cargo.lock fuzz/Cargo.lock)

Exit 0 when nothing is yanked, 1 when something is, 2 when it cannot tell (a lock file
entry with no cached index entry: run `cargo fetch --locked` first).

The cache format (cargo's `registry/index/.../.cache` files): one byte of cache version,
four bytes of index version, a NUL-terminated revision string, then pairs of
NUL-terminated strings: a version and its index line (JSON with "yanked").
"""

import glob
import json
import os
import re
import sys

CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"


def cache_roots():
    home = os.environ.get("CARGO_HOME") or os.path.expanduser("~/.cargo")
    return glob.glob(os.path.join(home, "registry", "index", "index.crates.io-*", ".cache"))


def index_path(name):
    n = name.lower()
    if len(n) == 1:
        return os.path.join("1", n)
    if len(n) == 2:
        return os.path.join("2", n)
    if len(n) == 3:
        return os.path.join("3", n[0], n)
    return os.path.join(n[0:2], n[2:4], n)


def cached_versions(roots, name):
    """{version: yanked} from the first cache holding the crate, or None."""
    for root in roots:
        path = os.path.join(root, index_path(name))
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        parts = data[5:].split(b"\0")
        # parts[0] is the revision; then version, line, version, line, ...
        out = {}
        for i in range(1, len(parts) - 1, 2):
            try:
                line = json.loads(parts[i + 1])
            except ValueError:
                continue
            out[parts[i].decode()] = bool(line.get("yanked", False))
        return out
    return None


def lock_packages(path):
    """The [[package]] entries of a Cargo.lock (name, version, source): its format is fixed
    and flat, so no TOML library is needed (Python before 3.11 has none)."""
    packages, cur = [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line == "[[package]]":
                cur = {}
                packages.append(cur)
            elif line.startswith("["):
                cur = None
            elif cur is not None:
                m = re.fullmatch(r'(name|version|source) = "(.*)"', line)
                if m:
                    cur[m.group(1)] = m.group(2)
    return packages


def main(argv):
    locks = argv or [p for p in ("Cargo.lock", "fuzz/Cargo.lock") if os.path.exists(p)]
    roots = cache_roots()
    yanked, unknown, checked = [], [], 0
    for lock in locks:
        for p in lock_packages(lock):
            if p.get("source") != CRATES_IO:
                continue
            versions = cached_versions(roots, p["name"])
            if versions is None or p["version"] not in versions:
                unknown.append(f'{p["name"]} {p["version"]} ({lock})')
                continue
            checked += 1
            if versions[p["version"]]:
                yanked.append(f'{p["name"]} {p["version"]} ({lock})')
    for y in yanked:
        print(f"yanked: {y}")
    for u in unknown:
        print(f"no cached index entry: {u}")
    if yanked:
        print(f"{len(yanked)} yanked crate version(s) in {', '.join(locks)}: update them")
        return 1
    if unknown:
        print("cannot tell: run `cargo fetch --locked` (for each lock file) first")
        return 2
    print(f"no yanked crate among {checked} pinned versions in {', '.join(locks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

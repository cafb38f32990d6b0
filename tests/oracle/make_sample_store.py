#!/usr/bin/env python3
"""Regenerate samples/store/: a tiny registry store written by the real
Debian docker-registry 2.8.2.

    python3 tests/oracle/make_sample_store.py [--out samples/store]
    python3 tests/oracle/make_sample_store.py --check   # is samples/store current?

Pushes fixtures.sample_fixtures() (demo/hello:latest with an empty-layer
history entry, demo/hello:v1, and the 2-platform list demo/multi:latest) over
raw HTTP, stops the registry, and copies its docker/registry/v2 tree without
the `_uploads` directories (in-progress upload state, which readers ignore
and which would only add empty directories git cannot track anyway).

Every byte is deterministic (fixed layer tars, gzip mtime 0, hand-made
configs), so rerunning it reproduces the same files. Nothing here GETs a
manifest without Accept, so the registry does not add the empty-tar blob.
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile

# No __pycache__ next to the sources (it is not git-ignored).
sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import fixtures  # noqa: E402
from registry import Registry  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "samples", "store"))
    ap.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temp dir and compare with --out instead of writing it (exit 1 if different)",
    )
    args = ap.parse_args()
    if args.check:
        return check(args.out)
    return generate(args.out)


def tree_files(root):
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            path = os.path.join(dirpath, n)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def check(out):
    tmp = tempfile.mkdtemp(prefix="registryfs-sample-check-")
    try:
        fresh = os.path.join(tmp, "store")
        generate(fresh)
        want, have = tree_files(fresh), tree_files(out)
        diff = sorted(set(want) ^ set(have)) + sorted(k for k in set(want) & set(have) if want[k] != have[k])
        if diff:
            print(f"{out} is stale; rerun scripts/make-sample-store.sh. Differences: {diff[:10]}")
            return 1
        print(f"{out} is up to date")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def generate(out):
    """Push the sample fixtures into a fresh registry and copy its tree to out."""

    # Signals raise, so the finally below stops the registry by its PID.
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    tmp = tempfile.mkdtemp(prefix="registryfs-sample-")
    reg = Registry(tmp)
    try:
        reg.start()
        for fx in fixtures.sample_fixtures():
            for i, p in enumerate(fx.pushes):
                fixtures.push(reg, p, os.path.join(tmp, f"layout-{i}"))
                print(f"pushed {p.repo}:{p.tag} {p.obj.digest}")
        reg.stop()  # the store must be quiescent before copying

        src = os.path.join(reg.root, "docker", "registry", "v2")
        dst = os.path.join(os.path.abspath(out), "docker", "registry", "v2")
        if os.path.exists(out):
            shutil.rmtree(out)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("_uploads"))
        total = files = 0
        for dirpath, _dirs, names in os.walk(out):
            for n in names:
                files += 1
                total += os.path.getsize(os.path.join(dirpath, n))
        print(f"wrote {out}: {files} files, {total} bytes")
    finally:
        reg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Reproducer: a tag link rewritten in place, as registry 2.8.2 writes it, read through the mount.

    python3 tests/load/link_race.py [--registryfs target/debug/registryfs] [--seconds 3] [--gap 0.01]

Registry 2.8.2's filesystem driver writes every link (a tag's current/link, its index
link, the revision link) in place: open(O_WRONLY|O_CREAT), ftruncate(0), write
(strace of a manifest PUT by tag; distribution 3 writes a temporary file and renames
it). Each push therefore leaves, for a moment, an empty current/link, even when the tag
does not move. This script mounts a copy of samples/store with --tag-ttl 0, rewrites
demo/hello's current/link with the same content in a separate process exactly that way
(every --gap seconds), and reads demo/hello/manifests/latest/schema2 through the mount
in a loop. Each read must give the manifest; it prints how many did not, and exits 1 if
any failed. (The registry itself answers 500 UNKNOWN to a GET in that window; through
nginx the mount's EIO makes the `-f` tests false, i.e. 404 MANIFEST_UNKNOWN.)

Stdlib only; everything it starts is stopped by PID and the mount is unmounted.
"""

import argparse
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "oracle"))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "httpd"))
from servers import mounted  # noqa: E402

WRITER = """
import os, sys, time
link, gap, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
content = open(link, "rb").read()
n = 0
end = time.monotonic() + seconds
while time.monotonic() < end and n < 10_000_000:
    fd = os.open(link, os.O_WRONLY | os.O_CREAT, 0o666)  # the registry's Writer(..., append=false)
    os.ftruncate(fd, 0)
    os.write(fd, content)
    os.close(fd)
    n += 1
    if gap:
        time.sleep(gap)
print(n)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registryfs", default=os.path.join(REPO_ROOT, "target", "debug", "registryfs"))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--gap", type=float, default=0.01, help="seconds between two rewrites (default 0.01)")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="registryfs-link-race-")
    store, mnt = os.path.join(tmp, "store"), os.path.join(tmp, "mnt")
    os.mkdir(mnt)
    shutil.copytree(os.path.join(REPO_ROOT, "samples", "store"), store)
    link = os.path.join(store, "docker/registry/v2/repositories/demo/hello/_manifests/tags/latest/current/link")
    log = open(os.path.join(tmp, "mount.log"), "wb")
    daemon = subprocess.Popen([args.registryfs, "mount", store, mnt, "--tag-ttl", "0"], stdin=subprocess.DEVNULL,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    writer = None
    failed = {}
    reads = 0
    try:
        deadline = time.monotonic() + 10
        while not os.path.ismount(mnt):
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit("registryfs mount did not come up")
            time.sleep(0.02)
        target = os.path.join(mnt, "demo/hello/manifests/latest/schema2")
        with open(target, "rb") as f:
            good = f.read()
        writer = subprocess.Popen([sys.executable, "-c", WRITER, link, str(args.gap), str(args.seconds + 1)],
                                  stdout=subprocess.PIPE, start_new_session=True)
        end = time.monotonic() + args.seconds
        while time.monotonic() < end and reads < 10_000_000:
            reads += 1
            try:
                with open(target, "rb") as f:
                    outcome = "ok" if f.read() == good else "wrong bytes"
            except OSError as e:
                outcome = errno.errorcode.get(e.errno, str(e.errno))
            if outcome != "ok":
                failed[outcome] = failed.get(outcome, 0) + 1
        out, _ = writer.communicate(timeout=args.seconds + 30)
        rewrites = int(out or 0)
        writer = None
    finally:
        for p in (writer, daemon):
            if p is not None and p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait(timeout=5)
        if mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True, timeout=10)
        log.close()
        with open(os.path.join(tmp, "mount.log"), "rb") as f:
            warnings = [line for line in f.read().decode("utf-8", "replace").splitlines() if "bad link" in line]
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{reads} reads through the mount while the link was rewritten in place {rewrites} times: "
          f"{sum(failed.values())} failed {failed or ''}")
    if warnings:
        print(f"{len(warnings)} log lines like: {warnings[0][:300]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

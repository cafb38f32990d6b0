#!/usr/bin/env python3
"""`registryfs ls/cat s3://BUCKET/ROOT` against registry 2.8.2 on the same bucket.

    python3 tests/s3/store_oracle.py --registryfs target/debug/registryfs
    python3 tests/s3/store_oracle.py --garage PATH --filter multi --keep

What it does:
  1. starts a single-node Garage (garage.py) and docker-registry 2.8.2 with its s3
     driver on the bucket (s3registry.py, rootdirectory /registry);
  2. pushes the oracle fixtures (tests/oracle/fixtures.py) and the S3 fact fixtures
     (tag order `year-0000-offset` / `year-0000`, a repository whose tags were all
     deleted) through the registry;
  3. runs the filesystem oracle's checks (tests/oracle/run.py Checker: tags/list bytes,
     every manifest kind by tag and digest, schema1 equal but for signatures and
     verified with libtrust, blobs, absent things) with `registryfs` reading
     `s3://BUCKET/registry` through only the standard AWS variables (key, AWS_REGION,
     AWS_ENDPOINT_URL=http://...), and a cache folder of its own;
  4. checks the S3 facts: tags/list bytes in the bucket's raw key order, and a
     repository without tags is absent (the registry answers 404 NAME_UNKNOWN);
  5. prints "ok ..."/"FAIL ..." and "s3-store: N passed, M failed".

The oracle's checks look at the store's folders for revisions and links; here they
read a local copy of the bucket's keys (never given to registryfs). Exits 77 (skip)
when Garage is not installed and --garage/$GARAGE_BIN is not given: building it takes
about 10 minutes (scripts/install-garage.sh). Everything started here is stopped by
PID, also on failure and signals.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
ORACLE = os.path.join(REPO_ROOT, "tests", "oracle")
sys.path.insert(0, HERE)
sys.path.insert(0, ORACLE)
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "httpd"))

import fixtures  # noqa: E402
from garage import Garage, GarageError  # noqa: E402
from harness import SetupError, ensure_verifier, finish, stop_cleanly_on_signals  # noqa: E402
from registry import RegistryError  # noqa: E402
from run import Checker, RegistryFS, Report, resolve_binary  # noqa: E402
from s3client import S3Error  # noqa: E402
from s3registry import S3Registry  # noqa: E402
from servers import Mount, ServerError  # noqa: E402

SKIP = 77
ORDER_REPO = "facts/tag-order"
ORDER_TAGS = ["year-0000", "year-0000-offset", "v1", "v1.0", "v1_x", "v1-rc"]
ALL_DELETED_REPO = "facts/all-deleted"


def installed_garage():
    """$GARAGE_BIN, or the binary scripts/install-garage.sh caches, without building."""
    if os.environ.get("GARAGE_BIN"):
        return os.environ["GARAGE_BIN"]
    roots = [os.environ.get("REGISTRYFS_GARAGE_CACHE"), "/var/cache/registryfs/garage-2.5.0"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    roots.append(os.path.join(cache, "registryfs", "garage-2.5.0"))
    for root in filter(None, roots):
        binary = os.path.join(root, "bin", "garage")
        if os.access(binary, os.X_OK):
            return binary
    return None


def small_image(seed):
    layers = fixtures.L(seed)
    return fixtures.Image(fixtures.simple_config("amd64", layers, [(f"ADD {seed} /", False)]), layers)


def fact_pushes():
    pushes = [fixtures.Push(ORDER_REPO, t, small_image(f"order-{t}")) for t in ORDER_TAGS]
    only = small_image("all-deleted")
    return pushes + [fixtures.Push(ALL_DELETED_REPO, "only", only), fixtures.Delete(ALL_DELETED_REPO, only)]


class StoreView:
    """The S3 registry, with `root` a local copy of its bucket prefix (for the oracle's
    look at revision and layer link folders)."""

    def __init__(self, reg, root):
        self._reg = reg
        self.root = root

    def __getattr__(self, name):
        return getattr(self._reg, name)


def copy_bucket(client, bucket, prefix, dest):
    """Every object below `prefix` as a file below dest/docker/registry/v2."""
    objects, _ = client.list_objects(bucket, prefix)
    for o in objects:
        rel = o["key"][len(prefix):]
        path = os.path.join(dest, "docker", "registry", "v2", rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(client.get_object(bucket, o["key"]).body)
    return len(objects)


def check_facts(report, reg, rfs, client, bucket):
    r = reg.get_tags(ORDER_REPO)
    rc, out, err = rfs.cat(f"{ORDER_REPO}/tags/list")
    _, prefixes = client.list_objects(bucket, f"{reg.key_prefix}repositories/{ORDER_REPO}/_manifests/tags/", "/")
    raw = [p.rstrip("/").rsplit("/", 1)[-1] for p in prefixes]
    problems = []
    if r.status != 200 or rc != 0 or out != r.body:
        problems.append(f"registry {r.status} {r.body!r}, registryfs exit {rc} {out!r} {err!r}")
    if raw.index("year-0000-offset") > raw.index("year-0000"):
        problems.append(f"the bucket lists {raw}: not the order this check is about")
    report.check("facts", f"{ORDER_REPO}/tags/list in raw key order ({r.body!r})", problems)

    r = reg.get_tags(ALL_DELETED_REPO)
    rc, out, err = rfs.cat(f"{ALL_DELETED_REPO}/tags/list")
    problems = []
    if r.status != 404 or b"NAME_UNKNOWN" not in r.body:
        problems.append(f"registry answered {r.status} {r.body!r}, not 404 NAME_UNKNOWN")
    if rc != 1:
        problems.append(f"registryfs exit {rc} {out!r}")
    report.check("facts", f"{ALL_DELETED_REPO}/tags/list absent like the registry's 404", problems)


def check_mount(report, rfs, binary, store, tmp, limit=60):
    """The mount of the bucket serves what `registryfs cat` prints, with exact sizes:
    every file of the first repositories walked (at most `limit` files)."""
    mp = os.path.join(tmp, "mnt")
    mount = Mount(binary, store, mp, rfs.global_args, os.path.join(tmp, "mount.log"))
    try:
        mount.start()
        with open(mount.log_path, "rb") as f:
            log = f.read().decode(errors="replace")
        report.check("mount", "follows the remote store by polling",
                     [] if "remote" in log and "polling" in log else [f"log: {log[-300:]}"])
        files = []
        for dirpath, _dirs, names in os.walk(mp):
            files += [os.path.join(dirpath, n) for n in sorted(names)]
            if len(files) >= limit:
                break
        problems = []
        for path in files[:limit]:
            rel = os.path.relpath(path, mp)
            rc, want, err = rfs.cat(rel)
            with open(path, "rb") as f:
                got = f.read()
            if rc != 0 or got != want or os.stat(path).st_size != len(want):
                problems.append(f"{rel}: cat exit {rc} {err[:100]!r}, {len(got)} vs {len(want)} bytes")
        if not files:
            problems.append("no files under the mount")
        report.check("mount", f"{len(files[:limit])} files equal to registryfs cat, exact sizes", problems)
    except ServerError as e:
        report.fail("mount", "start", e)
    finally:
        mount.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registryfs", help="registryfs binary (default: $REGISTRYFS_BIN, target/debug, target/release)")
    ap.add_argument("--garage", help="garage binary (default: $GARAGE_BIN, else the cached install)")
    ap.add_argument("--filter", action="append", default=[], help="only fixtures whose name contains SUBSTR")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--work-dir", default=os.path.join(HERE, "work"), help="where failing bytes are saved")
    ap.add_argument("--timeout", type=int, default=900, help="abort (and clean up) after this many seconds")
    args = ap.parse_args(argv)

    garage_bin = args.garage or installed_garage()
    if not garage_bin:
        print("skip: Garage is not installed (scripts/install-garage.sh builds it, ~10 min)")
        return SKIP
    try:
        binary = resolve_binary(args.registryfs)
        verifier = ensure_verifier()
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    selected = [fx for fx in fixtures.all_fixtures() if not args.filter or any(s in fx.name for s in args.filter)]

    stop_cleanly_on_signals(args.timeout)
    report = Report(args.work_dir)
    tmp = tempfile.mkdtemp(prefix="registryfs-s3-store-")
    garage = Garage(os.path.join(tmp, "garage"), garage_bin)
    reg = S3Registry(os.path.join(tmp, "registry"), garage)
    t0 = time.monotonic()
    interrupted = False
    try:
        garage.start()
        reg.start()
        print(f"# garage pid {garage.pid} {garage.endpoint}, registry pid {reg.proc.pid} on {reg.host}", flush=True)
        pushed, ok_fixtures = {}, []
        for fx in selected:
            try:
                per_repo = {}
                for i, p in enumerate(fx.pushes):
                    fixtures.push(reg, p, os.path.join(tmp, "layouts", f"{fx.name}-{i}"))
                    if p.via == "delete":
                        per_repo.setdefault(p.repo, {})[p.obj.digest] = None
                        continue
                    for o in [p.obj] + p.obj.children() if p.via != "skopeo-v2s1" else []:
                        per_repo.setdefault(p.repo, {})[o.digest] = o.manifest
                pushed[fx.name] = per_repo
                ok_fixtures.append(fx)
            except (RegistryError, AssertionError, subprocess.TimeoutExpired, OSError) as e:
                report.fail(fx.name, "push", e)
        for i, p in enumerate(fact_pushes()):
            fixtures.push(reg, p, os.path.join(tmp, "layouts", f"facts-{i}"))
        print(f"# pushed in {time.monotonic() - t0:.1f}s", flush=True)

        client = garage.client()
        copy = os.path.join(tmp, "bucket-copy")
        n = copy_bucket(client, garage.bucket, reg.key_prefix, copy)
        print(f"# {n} objects under {reg.key_prefix}", flush=True)
        # registryfs gets only the standard variables: key, region, http:// endpoint.
        garage.export_aws_env()
        store = f"s3://{garage.bucket}/{reg.rootdirectory.strip('/')}"
        rfs = RegistryFS(binary, store, reg.keyfile, ["--cache-dir", os.path.join(tmp, "cache")])
        rc, out, err = rfs.ls(None)
        print(f"# registryfs ls {store}: exit {rc}: {out.decode().split()} {err.decode().strip()}", flush=True)
        checker = Checker(StoreView(reg, copy), rfs, verifier, report, False)
        for fx in ok_fixtures:
            checker.check_fixture(fx, pushed[fx.name])
        checker.check_negative(ok_fixtures[0].repos()[0] if ok_fixtures else None)
        checker.report_stderr()
        check_facts(report, reg, rfs, client, garage.bucket)
        check_mount(report, rfs, binary, store, tmp)
    except KeyboardInterrupt as e:
        interrupted = True
        report.fail("harness", "interrupted", e or "SIGINT")
    except (GarageError, RegistryError, S3Error, SetupError, OSError) as e:
        report.fail("harness", "setup", e)
    finally:
        signal.alarm(0)
        reg.stop()
        garage.stop()
        if args.keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    return finish("s3-store", report, t0, interrupted)


if __name__ == "__main__":
    sys.exit(main())

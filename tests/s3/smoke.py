#!/usr/bin/env python3
"""S3 smoke test: registry 2.8.2's s3 driver on a real Garage, against the filesystem oracle.

    python3 tests/s3/smoke.py                    # garage from scripts/install-garage.sh
    python3 tests/s3/smoke.py --garage PATH --keep

What it does:
  1. starts a single-node Garage (garage.py) and two docker-registry 2.8.2: one on the
     Garage bucket (s3 driver, s3registry.py), one on a temp directory (the filesystem
     oracle, tests/oracle/registry.py);
  2. pushes every oracle fixture (tests/oracle/fixtures.py: raw HTTP, skopeo, deletes)
     into both, plus the fact fixtures below;
  3. compares the two registries' answers: tags/list (same tags; on S3 in the raw key
     order of the `<tag>/` prefixes), every manifest by tag and by digest with no
     Accept and with each single Accept type, every blob;
  4. lists the bucket (its own SigV4 client, raw server order) and checks the layout:
     the filesystem store's files, path for path and byte for byte, under
     `<root>/docker/registry/v2/`;
  5. checks the facts the s3 driver's answers depend on: tags/list order for
     `year-0000-offset` / `year-0000`, 404 NAME_UNKNOWN for a repository whose tags were
     all deleted, object ETags (MD5, multipart `-N`), Garage refusing requests without
     x-amz-content-sha256, blob redirects to presigned URLs, and what the registry
     answers while Garage is down and after it is restarted;
  6. prints "ok ..."/"FAIL ..." per check, the key listing, and
     "s3-smoke: N passed, M failed"; exit 0 only when nothing failed.

Everything started here is stopped by PID in a finally block, also on SIGTERM/SIGINT/
SIGHUP and after --timeout. Standard library only.
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

# No __pycache__ next to the sources (it is not git-ignored).
sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
ORACLE = os.path.join(os.path.dirname(HERE), "oracle")
sys.path.insert(0, HERE)
sys.path.insert(0, ORACLE)

import fixtures  # noqa: E402
from garage import Garage, GarageError, find_garage  # noqa: E402
from harness import SetupError, finish, stop_cleanly_on_signals  # noqa: E402
from registry import KIND_MEDIA_TYPES, Registry, RegistryError  # noqa: E402
from run import mask_signatures  # noqa: E402
from s3client import S3Error, error_code  # noqa: E402
from s3registry import S3Registry  # noqa: E402

# Tags whose order differs between "sorted names" and "sorted `<tag>/` keys":
# '-' (0x2d) and '.' (0x2e) sort before '/' (0x2f), '_' (0x5f) after it.
ORDER_TAGS = ["year-0000", "year-0000-offset", "v1", "v1.0", "v1_x", "v1-rc"]
ORDER_REPO = "facts/tag-order"
ALL_DELETED_REPO = "facts/all-deleted"
BIG_REPO = "facts/big"
# Above the s3 driver's multipartcopythresholdsize (32 MiB): the upload is moved into
# place with a multipart copy.
BIG_BLOB_SIZE = 40 * 1024 * 1024


class Checks:
    def __init__(self):
        self.passed = self.failed = 0
        self.failures = []

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   {name}" + (f": {detail}" if detail else ""), flush=True)
        else:
            self.failed += 1
            self.failures.append(name)
            print(f"FAIL {name}: {detail}", flush=True)
        return ok


def fact(text):
    print(f"# fact: {text}", flush=True)


def small_image(seed):
    layers = fixtures.L(seed)
    return fixtures.Image(fixtures.simple_config("amd64", layers, [(f"ADD {seed} /", False)]), layers)


def fact_pushes():
    pushes = [fixtures.Push(ORDER_REPO, t, small_image(f"order-{t}")) for t in ORDER_TAGS]
    only = small_image("all-deleted")
    pushes += [fixtures.Push(ALL_DELETED_REPO, "only", only), fixtures.Delete(ALL_DELETED_REPO, only)]
    return pushes


# ---------------------------------------------------------------------------
# registry answers


def answer(resp):
    """What a client sees of one answer; schema1 signatures masked (random nonce, time)."""
    if resp is None:
        return (None, "", None, None, b"(connection closed without an answer)")
    body = resp.body
    ctype = resp.header("content-type") or ""
    if "prettyjws" in ctype:
        body = mask_signatures(body)
    return (resp.status, ctype, resp.header("docker-content-digest"), resp.header("content-length"), body)


def get_manifest(reg, repo, ref, accept=()):
    """None when the registry closes the connection without answering (a Go panic in
    the handler, e.g. converting a config without rootfs), as in tests/oracle/run.py."""
    try:
        return reg.get_manifest(repo, ref, accept)
    except (ConnectionError, OSError) as e:
        if "timed out" in str(e):
            raise
        return None


def manifest_answers(reg, repo, ref):
    out = {"no Accept": answer(get_manifest(reg, repo, ref))}
    for kind, mt in KIND_MEDIA_TYPES.items():
        out[f"Accept {kind}"] = answer(get_manifest(reg, repo, ref, [mt]))
    return out


def tags_of(reg, repo):
    r = reg.get_tags(repo)
    return r, (json.loads(r.body).get("tags") if r.status == 200 else None)


def compare_registries(checks, s3reg, fsreg, client, bucket, pushes):
    """Every answer of the S3 registry against the filesystem registry's."""
    repos, digests, blobs = [], {}, {}
    for p in pushes:
        if p.repo not in repos:
            repos.append(p.repo)
        for o in [p.obj] + p.obj.children():
            if p.via not in ("delete", "skopeo-v2s1"):
                digests.setdefault(p.repo, set()).add(o.digest)
            blobs.setdefault(p.repo, set()).update(
                d for d in o.all_blob_digests() if not o.children()
            )
    for repo in repos:
        r_s3, tags_s3 = tags_of(s3reg, repo)
        r_fs, tags_fs = tags_of(fsreg, repo)
        if repo == ALL_DELETED_REPO:
            continue  # its own fact check
        checks.check(
            f"{repo}: tags/list has the same tags on S3 and on disk",
            r_s3.status == r_fs.status == 200 and sorted(tags_s3 or []) == sorted(tags_fs or []),
            f"S3 {r_s3.status} {r_s3.body[:200]!r}, disk {r_fs.status} {r_fs.body[:200]!r}",
        )
        _, prefixes = client.list_objects(
            bucket, f"{s3reg.key_prefix}repositories/{repo}/_manifests/tags/", "/"
        )
        raw = [p.rstrip("/").rsplit("/", 1)[-1] for p in prefixes]
        checks.check(
            f"{repo}: tags/list on S3 is in the bucket's raw order of <tag>/ prefixes",
            tags_s3 == raw,
            f"registry {tags_s3}, bucket {raw}",
        )
        if tags_s3 != tags_fs:
            fact(f"{repo}: tags/list differs in order: S3 {r_s3.body!r}, disk {r_fs.body!r}")
        for tag in tags_s3 or []:
            compare_answers(checks, f"{repo}:{tag}", manifest_answers(s3reg, repo, tag), manifest_answers(fsreg, repo, tag))
        for d in sorted(digests.get(repo, ())):
            compare_answers(checks, f"{repo}@{d[:19]}", manifest_answers(s3reg, repo, d), manifest_answers(fsreg, repo, d))
        for d in sorted(blobs.get(repo, ())):
            compare_answers(
                checks,
                f"{repo} blob {d[:19]}",
                {"GET": answer(s3reg.get_blob(repo, d))},
                {"GET": answer(fsreg.get_blob(repo, d))},
            )


def compare_answers(checks, what, s3, fs):
    differ = [k for k in fs if s3[k] != fs[k]]
    detail = "; ".join(
        f"{k}: S3 {s3[k][:4]} {s3[k][4][:120]!r} vs disk {fs[k][:4]} {fs[k][4][:120]!r}" for k in differ
    )
    statuses = ",".join(str(fs[k][0]) for k in fs)
    checks.check(f"{what} same answers on S3 and on disk ({statuses})", not differ, detail)


# ---------------------------------------------------------------------------
# the bucket


def check_layout(checks, client, bucket, s3reg, fsreg, big_digest):
    """Print the listing; the filesystem store's files must be the bucket's keys."""
    objects, _ = client.list_objects(bucket)
    for o in objects:
        print(f"# key {o['key']}  {o['size']}  {o['etag']}")
    prefix = s3reg.key_prefix
    keys = [o["key"] for o in objects]
    checks.check(
        f"every key is under {prefix}",
        all(k.startswith(prefix) for k in keys),
        ", ".join(k for k in keys if not k.startswith(prefix))[:300],
    )
    checks.check("keys come in byte order", keys == sorted(keys, key=lambda k: k.encode()))
    store = os.path.join(fsreg.root, "docker", "registry", "v2")
    files = {}
    for d, _, names in os.walk(store):
        for n in names:
            path = os.path.join(d, n)
            files[os.path.relpath(path, store)] = path
    in_bucket = {k[len(prefix):]: o for k, o in zip(keys, objects) if k.startswith(prefix)}
    # The big blob went to the S3 registry only.
    big = (f"repositories/{BIG_REPO}/", f"blobs/sha256/{big_digest[7:9]}/{big_digest[7:]}/")
    only_s3 = sorted(k for k in in_bucket if k not in files and not k.startswith(big))
    only_disk = sorted(f for f in files if f not in in_bucket)
    checks.check(
        f"the disk store's {len(files)} files are keys of the bucket, and no other key (but the big blob)",
        not only_disk and not only_s3,
        f"only on disk: {only_disk[:10]}, only in the bucket: {only_s3[:10]}",
    )
    differ = []
    for rel, path in sorted(files.items()):
        if rel in in_bucket:
            with open(path, "rb") as f:
                if client.get_object(bucket, prefix + rel).body != f.read():
                    differ.append(rel)
    checks.check("every file's bytes equal its object's", not differ, ", ".join(differ[:10]))
    return objects


UPLOADED = "blob data (uploaded)"


def object_kind(key, data):
    """link, manifest data (the registry writes it in one PutObject) or uploaded blob data
    (written through an upload, then moved into place)."""
    if not key.endswith("/data"):
        return key.rsplit("/", 1)[-1]
    try:
        if "schemaVersion" in json.loads(data):
            return "blob data (manifest)"
    except (ValueError, TypeError):
        pass
    return UPLOADED


def check_etags(checks, client, bucket, objects, big_digest, prefix):
    """Which objects' ETags are the MD5 of their bytes, and which are multipart `-N`."""
    forms = {}  # (file name, form) -> [count, an example]
    big_key = f"{prefix}blobs/sha256/{big_digest[7:9]}/{big_digest[7:]}/data"
    big_etag = None
    for o in objects:
        data = client.get_object(bucket, o["key"]).body
        etag = o["etag"].strip('"')
        if etag == hashlib.md5(data).hexdigest():
            form = "MD5 of the bytes"
        elif "-" in etag:
            form = "multipart -" + etag.rsplit("-", 1)[1]
        else:
            form = "other"
        entry = forms.setdefault((object_kind(o["key"], data), form), [0, f"{o['key'][len(prefix):]} {etag}"])
        entry[0] += 1
        if o["key"] == big_key:
            big_etag = etag
    for (name, form), (count, example) in sorted(forms.items()):
        fact(f"ETag of {count} '{name}' objects: {form} (e.g. {example})")
    checks.check(
        f"the {BIG_BLOB_SIZE >> 20} MiB blob (multipart copy) has a multipart ETag md5-N, not a content hash",
        big_etag is not None and re.fullmatch(r"[0-9a-f]{32}-[0-9]+", big_etag) is not None,
        str(big_etag),
    )
    checks.check(
        "uploaded blobs have multipart ETags; manifests and links (PutObject) the MD5 of their bytes",
        all(form.startswith("multipart") == (kind == UPLOADED) for kind, form in forms),
        str(sorted(forms)),
    )
    head = client.head_object(bucket, big_key)
    fact(f"HEAD {big_key}: ETag {head.header('etag')}, Last-Modified {head.header('last-modified')}")


def check_content_sha256_required(checks, client, bucket):
    r = client.request("GET", f"/{bucket}", {"list-type": "2"}, content_sha256=False)
    code, message = error_code(r.body)
    fact(f"ListObjectsV2 without x-amz-content-sha256: {r.status} {code} {message}")
    checks.check("Garage refuses a request without x-amz-content-sha256", r.status >= 400, f"{r.status} {code}")


def check_redirect(checks, workdir, garage, repo, digest, data):
    """With redirects on (the s3 driver's default) a blob GET is a 307 to a presigned URL."""
    reg = S3Registry(workdir, garage, redirect=True)
    try:
        reg.start()
        r = reg.get_blob(repo, digest)
        loc = r.header("location") or ""
        fact(f"blob GET with redirects on: {r.status}, Location {loc[:160]}...")
        url = urllib.parse.urlsplit(loc)
        got = None
        if r.status == 307 and url.port == garage.s3_port:
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            try:
                conn.request("GET", url.path + "?" + url.query)
                resp = conn.getresponse()
                got = (resp.status, resp.read())
            finally:
                conn.close()
        checks.check(
            "blob GET with redirects on: 307 to a presigned Garage URL that serves the blob",
            got is not None and got[0] == 200 and got[1] == data,
            f"{r.status} {loc[:100]} -> {got and got[0]}",
        )
    finally:
        reg.stop()


def check_garage_down_and_back(checks, garage, s3reg, repo):
    before = s3reg.get_tags(repo).body
    garage.stop()
    t0 = time.monotonic()
    r = s3reg.get_tags(repo)
    m = s3reg.get_manifest(repo, "latest", [KIND_MEDIA_TYPES["schema2"]])
    fact(
        f"registry while Garage is stopped: tags/list {r.status} {r.body[:160]!r}, "
        f"manifest {m.status} {m.body[:160]!r} ({time.monotonic() - t0:.1f}s)"
    )
    checks.check("registry fails (5xx) while Garage is stopped", r.status >= 500 and m.status >= 500, f"{r.status} {m.status}")
    garage.start()
    print(f"# garage restarted in {garage.start_seconds:.2f}s", flush=True)
    after = s3reg.get_tags(repo)
    checks.check("after Garage restarts, the registry answers as before", after.status == 200 and after.body == before, f"{after.status} {after.body[:200]!r}")


# ---------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--garage", help="garage binary (default: $GARAGE_BIN, else scripts/install-garage.sh)")
    ap.add_argument("--db-engine", default="lmdb", choices=["lmdb", "sqlite"])
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (Garage data, registry logs)")
    ap.add_argument("--timeout", type=int, default=600, help="abort (and clean up) after this many seconds")
    args = ap.parse_args(argv)

    try:
        binary = args.garage or find_garage()
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    stop_cleanly_on_signals(args.timeout)
    checks = Checks()
    tmp = tempfile.mkdtemp(prefix="registryfs-s3-smoke-")
    garage = Garage(os.path.join(tmp, "garage"), binary, db_engine=args.db_engine)
    s3reg = S3Registry(os.path.join(tmp, "registry-s3"), garage)
    fsreg = Registry(os.path.join(tmp, "registry-disk"))
    t0 = time.monotonic()
    interrupted = False
    try:
        garage.start()
        print(
            f"# garage pid {garage.pid}: {garage.endpoint} region {garage.region} bucket {garage.bucket}, "
            f"started in {garage.start_seconds:.2f}s ({args.db_engine})",
            flush=True,
        )
        t = time.monotonic()
        s3reg.start()
        print(f"# registry on S3: pid {s3reg.proc.pid} on {s3reg.host} in {time.monotonic() - t:.2f}s", flush=True)
        fsreg.start()
        print(f"# registry on disk: pid {fsreg.proc.pid} on {fsreg.host}", flush=True)

        pushes = [p for fx in fixtures.all_fixtures() for p in fx.pushes] + fact_pushes()
        for name, reg in (("S3", s3reg), ("disk", fsreg)):
            t = time.monotonic()
            failed = []
            for i, p in enumerate(pushes):
                try:
                    fixtures.push(reg, p, os.path.join(tmp, f"layouts-{name}", str(i)))
                except (RegistryError, AssertionError, subprocess.TimeoutExpired) as e:
                    failed.append(f"{p.repo}:{p.tag} ({p.via}): {e}")
            checks.check(
                f"{len(pushes)} pushes (HTTP, skopeo, deletes) into the registry on {name} "
                f"in {time.monotonic() - t:.1f}s",
                not failed,
                "\n".join(failed[:5]),
            )
        big = random.Random(11).randbytes(BIG_BLOB_SIZE)
        big_digest = s3reg.push_blob(BIG_REPO, big)
        r = s3reg.get_blob(BIG_REPO, big_digest)
        checks.check(f"{BIG_BLOB_SIZE >> 20} MiB blob pushed and read back", r.status == 200 and r.body == big, str(r))

        r = s3reg.get_tags(ORDER_REPO)
        print(f"# registry on S3: GET /v2/{ORDER_REPO}/tags/list -> {r.status} {r.body.decode()}")
        r = s3reg.get_manifest("several/tags", "latest", [KIND_MEDIA_TYPES["schema2"]])
        print(f"# registry on S3: GET /v2/several/tags/manifests/latest (schema2) -> {r.status} {r.header('docker-content-digest')}")
        print(r.body.decode())

        client = garage.client()
        compare_registries(checks, s3reg, fsreg, client, garage.bucket, pushes)

        # Facts.
        r_s3, tags_s3 = tags_of(s3reg, ORDER_REPO)
        r_fs, tags_fs = tags_of(fsreg, ORDER_REPO)
        key_order = sorted(ORDER_TAGS, key=lambda t: (t + "/").encode())
        fact(f"tags/list order: S3 {tags_s3}, disk {tags_fs}")
        checks.check(
            "tags/list on S3 is in byte order of '<tag>/' (year-0000-offset before year-0000)",
            tags_s3 == key_order and tags_s3.index("year-0000-offset") < tags_s3.index("year-0000"),
            f"{tags_s3}, expected {key_order}",
        )
        r_s3 = s3reg.get_tags(ALL_DELETED_REPO)
        r_fs = fsreg.get_tags(ALL_DELETED_REPO)
        fact(f"repository whose tags were all deleted: S3 {r_s3.status} {r_s3.body!r}, disk {r_fs.status} {r_fs.body!r}")
        checks.check(
            "repository whose tags were all deleted: 404 NAME_UNKNOWN on S3",
            r_s3.status == 404 and b'"NAME_UNKNOWN"' in r_s3.body,
            f"{r_s3.status} {r_s3.body!r}",
        )
        checks.check(
            'repository whose tags were all deleted: {"tags":null} on disk',
            r_fs.status == 200 and json.loads(r_fs.body).get("tags") is None,
            f"{r_fs.status} {r_fs.body!r}",
        )

        objects = check_layout(checks, client, garage.bucket, s3reg, fsreg, big_digest)
        check_etags(checks, client, garage.bucket, objects, big_digest, s3reg.key_prefix)
        check_content_sha256_required(checks, client, garage.bucket)
        check_redirect(checks, os.path.join(tmp, "registry-s3-redirect"), garage, BIG_REPO, big_digest, big)
        check_garage_down_and_back(checks, garage, s3reg, "several/tags")
    except KeyboardInterrupt as e:
        interrupted = True
        checks.check("harness", False, f"interrupted: {e or 'SIGINT'}")
    except (GarageError, RegistryError, S3Error, SetupError, OSError) as e:
        checks.check("harness", False, f"setup: {e}")
    finally:
        signal.alarm(0)
        fsreg.stop()
        s3reg.stop()
        garage.stop()
        if args.keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    return finish("s3-smoke", checks, t0, interrupted)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Oracle test: registryfs against the real Debian docker-registry 2.8.2.

    python3 tests/oracle/run.py --registryfs target/debug/registryfs
    REGISTRYFS_BIN=target/release/registryfs python3 tests/oracle/run.py
    python3 tests/oracle/run.py --registry-only      # fixtures + registry only
    python3 tests/oracle/run.py --filter multi --keep

What it does:
  1. starts docker-registry on 127.0.0.1:<free port> with a temp filesystem
     store and a fixed libtrust signing key (registry.py);
  2. pushes deterministic fixture images (fixtures.py) with skopeo or raw HTTP;
  3. for every repository, tag, manifest digest and blob, asks the registry
     and `registryfs cat/ls` on the *same* store, and compares:
       - tags/list bytes;
       - GET by tag, no Accept (schema1): byte-identical except the values of
         "signature" and "protected", same length, our bytes verify with
         Debian's libtrust (target/libtrust-verify) and their payload digest
         equals the registry's Docker-Content-Digest; where the registry
         refuses (4xx/5xx/no answer) `cat .../schema1` must exit 1 and
         `ls` of the tag dir must not list schema1;
       - GET by tag with each single Accept type == cat <tag>/<kind>; a kind
         the registry does not serve must be absent;
       - GET by digest == cat <digest>/<kind>;
       - every blob GET == cat blobs/<digest> (registry 404 -> cat exits 1);
       - deleted manifests are neither served nor listed;
       - `ls` of tag dirs lists exactly the kinds the registry serves, and
         nested repository names are nested folders;
       - every refusal exits 1 with a one-line stderr message (reported once,
         as "cli error message is one stderr line");
     plus sanity checks on the oracle itself: each fixture gets the answer
     the fact sheets predict, stored manifests are the bytes we pushed (so
     skopeo did not rewrite them), the registry's schema1 verifies with
     Debian's libtrust, and that verifier accepts the schema1-signing.md §9
     vector and rejects a tampered copy;
  4. prints "ok ..."/"FAIL ..." per check and "oracle: N passed, M failed".

Some fixtures run registryfs with extra options (Fixture.rfs_args): the
foreign-layer ones use --allow-foreign-layers, because distribution converts
images with foreign layers and registryfs only does so when asked.

Failing comparisons save both sides under tests/oracle/work/ (git-ignored).
Everything started here is stopped by PID in a finally block, also on
SIGTERM/SIGINT/SIGHUP. Standard library only.
"""

import argparse
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# No __pycache__ next to the sources (it is not git-ignored).
sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from harness import SetupError, ensure_verifier, libtrust_verify, finish, stop_cleanly_on_signals  # noqa: E402
import fixtures  # noqa: E402
from registry import (  # noqa: E402
    ACCEPT_KINDS,
    KIND_MEDIA_TYPES,
    MT_SCHEMA1_SIGNED,
    SIGNING_KEY_KID,
    Registry,
    RegistryError,
)

KIND_BY_MEDIA_TYPE = {v: k for k, v in KIND_MEDIA_TYPES.items()}
ZERO_DIGEST = "sha256:" + "0" * 64
VECTOR = os.path.join(HERE, "vectors", "schema1-signing-s9.json")
VECTOR_DIGEST = "sha256:8e5a0ce9569ec389724987ee54f11092885e1b43aa7c84fa6929cd9670bec409"


# ---------------------------------------------------------------------------
# reporting


class Report:
    def __init__(self, work_dir):
        self.passed = 0
        self.failed = 0
        self.work_dir = work_dir
        self.failures = []

    def ok(self, fixture, what):
        self.passed += 1
        print(f"ok {fixture} {what}", flush=True)

    def fail(self, fixture, what, reason, artifacts=None):
        self.failed += 1
        reason = " ".join(str(reason).split("\n"))
        saved = ""
        if artifacts:
            saved = " [saved " + self.save(fixture, what, artifacts) + "]"
        print(f"FAIL {fixture} {what}: {reason}{saved}", flush=True)
        self.failures.append(f"{fixture} {what}")

    def check(self, fixture, what, problems, artifacts=None):
        """problems: list of strings; empty means pass."""
        if problems:
            self.fail(fixture, what, "; ".join(problems), artifacts)
        else:
            self.ok(fixture, what)

    def save(self, fixture, what, artifacts):
        """Write {suffix: bytes} next to each other for a failing check."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", what).strip("_")[:150]
        d = os.path.join(self.work_dir, fixture)
        os.makedirs(d, exist_ok=True)
        base = os.path.join(d, slug)
        for suffix, data in artifacts.items():
            if not data and suffix == "stderr":
                continue
            if data is None:
                continue
            with open(f"{base}.{suffix}", "wb") as f:
                f.write(data if isinstance(data, bytes) else data.encode())
        return os.path.relpath(base, REPO_ROOT) + ".*"


# ---------------------------------------------------------------------------
# the two programs under comparison besides the registry


class RegistryFS:
    def __init__(self, binary, store, keyfile, extra_args=()):
        self.binary = binary
        self.store = store
        self.global_args = ["--signing-key", keyfile, *extra_args]

    def run(self, sub, path, extra=()):
        cmd = [self.binary, *self.global_args, *extra, sub, self.store]
        if path is not None:
            cmd.append(path)
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        except subprocess.TimeoutExpired:
            return -1, b"", b"timed out after 60 s"
        return p.returncode, p.stdout, p.stderr

    def cat(self, path, extra=()):
        return self.run("cat", path, extra)

    def ls(self, path, extra=()):
        return self.run("ls", path, extra)




# ---------------------------------------------------------------------------
# comparisons


def first_difference(a, b):
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n if len(a) != len(b) else None


def diff_context(a, b, i, width=60):
    lo = max(0, i - width)
    return f"first difference at byte {i}: registry {a[lo:i + width]!r} vs ours {b[lo:i + width]!r}"


SIG_VALUE_RE = re.compile(rb'("(?:signature|protected)"\s*:\s*")[A-Za-z0-9_-]*(")')


def mask_signatures(doc):
    """Blank the values that legitimately differ between two signings of one
    payload: the ECDSA signature (random nonce in Go 1.19) and the protected
    header (contains the signing time)."""
    return SIG_VALUE_RE.sub(rb"\1...\2", doc)


def b64u_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def protected_headers(doc):
    """Decode every "protected" value in a signed schema1 document."""
    out = []
    for m in re.finditer(rb'"protected"\s*:\s*"([A-Za-z0-9_-]*)"', doc):
        out.append(json.loads(b64u_decode(m.group(1).decode())))
    return out


def ls_key(entry):
    return entry[:-1].encode() if entry.endswith("/") else entry.encode()


def describe(resp):
    if resp is None:
        return "no response (connection closed)"
    return f"{resp.status} {resp.body[:200]!r}"


class Checker:
    def __init__(self, reg, rfs, verifier, report, registry_only):
        self.reg = reg
        self.rfs = rfs
        self.verifier = verifier
        self.report = report
        self.registry_only = registry_only
        self.stderr_total = 0
        self.stderr_bad = []

    # -- helpers ---------------------------------------------------------

    def get_manifest(self, repo, ref, accept=()):
        """GET a manifest; None when the registry closed the connection
        without answering (a Go panic in the handler, e.g. config without
        rootfs)."""
        try:
            return self.reg.get_manifest(repo, ref, accept)
        except (ConnectionError, OSError) as e:
            if "timed out" in str(e):
                raise
            return None

    def expect_absent(self, fx, what, path, registry_resp, extra):
        """registryfs must refuse: exit status 1 (the one-line stderr rule is
        tallied separately, see note_stderr)."""
        if self.registry_only:
            return
        rc, out, err = self.rfs.cat(path, extra)
        problems = []
        if rc != 1:
            problems.append(f"registry answered {describe(registry_resp)} but `cat {path}` exited {rc} (want 1)")
        else:
            self.note_stderr(path, err)
        self.report.check(
            fx.name,
            f"{path} absent",
            problems,
            {"ours": out, "stderr": err, "registry": registry_resp.body if registry_resp else None} if problems else None,
        )

    def note_stderr(self, path, err):
        """The CLI contract: a failing command writes a one-line message on
        stderr. Checked on every refusal but reported once, at the end, so a
        stray log line does not bury the real comparisons."""
        self.stderr_total += 1
        msg = err.decode("utf-8", "replace").rstrip("\n")
        if not msg or "\n" in msg:
            self.stderr_bad.append((path, msg))

    def report_stderr(self):
        if self.registry_only:
            return
        problems = []
        if self.stderr_bad:
            path, msg = self.stderr_bad[0]
            problems.append(
                f"{len(self.stderr_bad)} of {self.stderr_total} refusals did not print exactly one line; "
                f"first: `cat {path}` printed {msg!r}"
            )
        listing = "".join(f"$ registryfs cat {p}\n{m}\n\n" for p, m in self.stderr_bad)
        self.report.check(
            "cli",
            f"error message is one stderr line ({self.stderr_total} refusals)",
            problems,
            {"txt": listing} if problems else None,
        )

    def compare_exact(self, fx, what, path, registry_body, extra):
        if self.registry_only:
            return
        rc, out, err = self.rfs.cat(path, extra)
        problems = []
        if rc != 0:
            problems.append(f"`cat {path}` exited {rc}: {err.decode('utf-8', 'replace').strip()[:300]}")
        elif out != registry_body:
            i = first_difference(registry_body, out)
            problems.append(f"{len(out)} bytes vs registry {len(registry_body)}; " + diff_context(registry_body, out, i))
        self.report.check(
            fx.name,
            what,
            problems,
            {"registry": registry_body, "ours": out, "stderr": err} if problems else None,
        )

    def compare_schema1(self, fx, what, path, resp, extra):
        """Compare a signed schema1 answer with `registryfs cat path`."""
        reg_body = resp.body
        reg_digest = resp.header("docker-content-digest")
        # Sanity of the oracle itself: Debian's libtrust accepts the registry's
        # document and agrees with its Docker-Content-Digest.
        ok, dgst, kids, err = libtrust_verify(self.verifier, reg_body)
        problems = []
        if not ok:
            problems.append(f"libtrust-verify rejects the registry's own document: {err}")
        elif dgst != reg_digest:
            problems.append(f"registry Docker-Content-Digest {reg_digest} != libtrust payload digest {dgst}")
        elif kids != [SIGNING_KEY_KID]:
            problems.append(f"registry signed with {kids}, not the fixed key")
        self.report.check(fx.name, f"{what} [registry self-check]", problems, {"registry": reg_body} if problems else None)
        if self.registry_only:
            return

        rc, out, err = self.rfs.cat(path, extra)
        arts = {"registry": reg_body, "ours": out, "stderr": err}
        if rc != 0:
            self.report.fail(
                fx.name, what, f"`cat {path}` exited {rc}: {err.decode('utf-8', 'replace').strip()[:300]}", arts
            )
            return

        # 1. bytes, except the values of "signature" and "protected"
        problems = []
        mr, mo = mask_signatures(reg_body), mask_signatures(out)
        if mr != mo:
            i = first_difference(mr, mo)
            problems.append("differs outside signature/protected; " + diff_context(mr, mo, i))
        self.report.check(fx.name, f"{what} bytes", problems, arts if problems else None)

        # 2. length (Content-Length of the registry's answer)
        problems = []
        clen = resp.header("content-length")
        if clen is None or int(clen) != len(out):
            problems.append(f"registry Content-Length {clen}, ours {len(out)} bytes")
        self.report.check(fx.name, f"{what} length", problems, arts if problems else None)

        # 3. signature: Debian's libtrust verifies our bytes, the payload
        #    digest is the registry's Docker-Content-Digest, the key is ours,
        #    and the protected header has the registry's shape.
        problems = []
        ok, dgst, kids, verr = libtrust_verify(self.verifier, out)
        if not ok:
            problems.append(f"libtrust-verify rejects our document: {verr}")
        else:
            if dgst != reg_digest:
                problems.append(f"our payload digest {dgst} != registry Docker-Content-Digest {reg_digest}")
            if kids != [SIGNING_KEY_KID]:
                problems.append(f"verifying key ids {kids}, want [{SIGNING_KEY_KID}]")
        try:
            ph_o, ph_r = protected_headers(out), protected_headers(reg_body)
            if len(ph_o) != 1:
                problems.append(f"{len(ph_o)} protected headers, want 1")
            else:
                po, pr = ph_o[0], ph_r[0]
                if sorted(po) != ["formatLength", "formatTail", "time"]:
                    problems.append(f"protected header keys {sorted(po)}")
                for k in ("formatLength", "formatTail"):
                    if po.get(k) != pr.get(k):
                        problems.append(f"protected {k} {po.get(k)!r} != registry {pr.get(k)!r}")
                if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", str(po.get("time"))):
                    problems.append(f"protected time {po.get('time')!r} is not YYYY-MM-DDTHH:MM:SSZ")
        except (ValueError, KeyError) as e:
            problems.append(f"cannot decode our protected header: {e}")
        self.report.check(fx.name, f"{what} signature", problems, arts if problems else None)

    def check_ls(self, fx, path, want, extra, exact=True):
        if self.registry_only:
            return
        rc, out, err = self.rfs.ls(path, extra)
        problems = []
        if rc != 0:
            problems.append(f"`ls {path}` exited {rc}: {err.decode('utf-8', 'replace').strip()[:300]}")
        else:
            got = out.decode("utf-8", "replace").split("\n")
            if got and got[-1] == "":
                got.pop()
            # "sorted" = by entry name; the trailing "/" only marks directories
            # (so "fewer/" comes before "fewer-top/").
            if got != sorted(got, key=ls_key):
                problems.append(f"not sorted: {got}")
            if exact and got != sorted(want, key=ls_key):
                problems.append(f"lists {got}, want {sorted(want, key=ls_key)}")
            if not exact:
                missing = [w for w in want if w not in got]
                if missing:
                    problems.append(f"lists {got}, missing {missing}")
        what = f"ls {path or '/'}" + ("" if exact else " includes " + ",".join(want))
        self.report.check(fx.name, what, problems)

    # -- per fixture -----------------------------------------------------

    def check_fixture(self, fx, pushed):
        """pushed: {repo: {digest: pushed manifest bytes, or None if deleted}}"""
        extra = fx.rfs_args
        for repo in fx.repos():
            self.check_repo(fx, repo, pushed.get(repo, {}), extra)

    def check_repo(self, fx, repo, pushed, extra):
        # Nested repository names are nested folders.
        parts = repo.split("/")
        for i in range(len(parts)):
            parent = "/".join(parts[:i])
            self.check_ls(fx, parent if parent else None, [parts[i] + "/"], extra, exact=False)

        # tags/list
        r = self.reg.get_tags(repo)
        if r.status != 200:
            self.report.fail(fx.name, f"{repo}/tags/list", f"registry answered {describe(r)}")
            return
        self.compare_exact(fx, f"{repo}/tags/list", f"{repo}/tags/list", r.body, extra)
        tags = json.loads(r.body)["tags"]
        self.check_ls(fx, f"{repo}/manifests", [t + "/" for t in tags], extra, exact=False)

        for tag in sorted(tags):
            self.check_tag(fx, repo, tag, extra)

        # Every stored revision (this includes manifests reachable only by
        # digest, like the old target of a moved tag, and what skopeo v2s1
        # produced, whose digest we cannot know in advance).
        deleted = sorted(d for d, b in pushed.items() if b is None)
        digests = {d: b for d, b in pushed.items() if b is not None}
        for d in deleted:
            self.check_deleted(fx, repo, d, extra)
        rev_dir = os.path.join(self.reg.root, "docker/registry/v2/repositories", repo, "_manifests/revisions/sha256")
        if os.path.isdir(rev_dir):
            for hexd in sorted(os.listdir(rev_dir)):
                if os.path.isfile(os.path.join(rev_dir, hexd, "link")):
                    digests.setdefault("sha256:" + hexd, None)
        blob_digests = []
        for d in sorted(digests):
            blob_digests += self.check_digest(fx, repo, d, digests[d], extra)

        # Blobs: what the manifests reference (foreign layers included: the
        # registry has no blob for them, so registryfs must not either) plus
        # whatever is linked in the repository now, which includes the
        # empty-tar blob the registry wrote while converting.
        layers_dir = os.path.join(self.reg.root, "docker/registry/v2/repositories", repo, "_layers/sha256")
        linked = []
        if os.path.isdir(layers_dir):
            linked = ["sha256:" + h for h in os.listdir(layers_dir) if os.path.isfile(os.path.join(layers_dir, h, "link"))]
        for d in sorted(set(blob_digests) | set(linked)):
            self.check_blob(fx, repo, d, extra)

    def check_tag(self, fx, repo, tag, extra):
        base = f"{repo}/manifests/{tag}"
        present = set()
        exp = fx.expect.get((repo, tag), {})

        # Plain GET: what an old (schema1-only) client gets.
        r = self.get_manifest(repo, tag)
        status = r.status if r is not None else 0
        if "status" in exp:
            problems = []
            if status != exp["status"]:
                problems.append(f"registry answered {describe(r)}, fixture expects {exp['status']}")
            if r is not None and "digest" in exp and r.header("docker-content-digest") != exp["digest"]:
                problems.append(f"Docker-Content-Digest {r.header('docker-content-digest')}, expected {exp['digest']}")
            if r is not None and "content_type" in exp and r.header("content-type") != exp["content_type"]:
                problems.append(f"Content-Type {r.header('content-type')}, expected {exp['content_type']}")
            if r is not None and "length" in exp and len(r.body) != exp["length"]:
                problems.append(f"{len(r.body)} bytes, expected {exp['length']}")
            want = exp["status"] or "no answer"
            self.report.check(fx.name, f"{repo}:{tag} registry no-Accept answer as expected ({want})", problems)
        if r is not None and r.status == 200 and r.header("content-type") == MT_SCHEMA1_SIGNED:
            present.add("schema1")
            self.compare_schema1(fx, f"{base}/schema1", f"{base}/schema1", r, extra)
        else:
            # Refused (4xx/5xx/no answer), or answered with something that is
            # not schema1: an OCI index stored without mediaType, or the OCI
            # linux/amd64 child of a list, goes to schema1 clients as is.
            # Either way there is no schema1 document to serve.
            self.expect_absent(fx, f"{base}/schema1", f"{base}/schema1", r, extra)

        for kind in ACCEPT_KINDS:
            mt = KIND_MEDIA_TYPES[kind]
            r = self.get_manifest(repo, tag, [mt])
            path = f"{base}/{kind}"
            if r is not None and r.status == 200 and r.header("content-type") == mt:
                present.add(kind)
                if kind == "schema2" and "child" in exp:
                    got = r.header("docker-content-digest")
                    self.report.check(
                        fx.name,
                        f"{repo}:{tag} registry picks linux/amd64 child {exp['child'][:19]}",
                        [] if got == exp["child"] else [f"registry picked {got}"],
                    )
                self.compare_exact(fx, path, path, r.body, extra)
            else:
                # Not served as this kind (404, or converted to schema1
                # because this Accept type does not fit the stored object).
                self.expect_absent(fx, path, path, r, extra)

        self.check_ls(fx, base, sorted(present), extra)

    def check_digest(self, fx, repo, digest, pushed_bytes, extra):
        """GET by digest (accepting every type, so the OCI gate passes).
        Returns the blob digests the manifest references."""
        base = f"{repo}/manifests/{digest}"
        r = self.get_manifest(repo, digest, [KIND_MEDIA_TYPES[k] for k in ACCEPT_KINDS])
        if r is None or r.status != 200:
            self.report.fail(fx.name, base, f"registry answered {describe(r)}")
            return []
        kind = KIND_BY_MEDIA_TYPE.get(r.header("content-type"))
        if kind is None:
            self.report.fail(fx.name, base, f"unknown Content-Type {r.header('content-type')}")
            return []
        if pushed_bytes is not None:
            # Did the registry (and skopeo on the way) keep our exact bytes?
            self.report.check(
                fx.name,
                f"{repo}@{digest[:19]} registry stores the pushed bytes",
                [] if r.body == pushed_bytes else ["stored manifest differs from what the fixture built"],
                {"registry": r.body, "pushed": pushed_bytes},
            )
        if kind == "schema1":
            self.compare_schema1(fx, f"{base}/schema1", f"{base}/schema1", r, extra)
        else:
            self.compare_exact(fx, f"{base}/{kind}", f"{base}/{kind}", r.body, extra)
        self.check_ls(fx, base, [kind], extra, exact=False)

        # Referenced blobs, from the stored bytes.
        refs = []
        if kind == "schema1":
            doc = json.loads(r.body)
            refs = [l["blobSum"] for l in doc.get("fsLayers", [])]
        else:
            doc = json.loads(r.body)
            if "config" in doc:
                refs.append(doc["config"]["digest"])
            refs += [l["digest"] for l in doc.get("layers", [])]
        return refs

    def check_deleted(self, fx, repo, digest, extra):
        """A deleted manifest: the registry no longer serves it by digest, so
        registryfs must neither serve nor list it (its revisions/<hex>/ dir
        still exists, empty)."""
        r = self.get_manifest(repo, digest, [KIND_MEDIA_TYPES[k] for k in ACCEPT_KINDS])
        self.report.check(
            fx.name,
            f"{repo}@{digest[:19]} registry no longer serves the deleted manifest",
            [] if r is not None and r.status == 404 else [f"registry answered {describe(r)}"],
        )
        for kind in ("schema2", "schema1"):
            self.expect_absent(fx, "", f"{repo}/manifests/{digest}/{kind}", r, extra)
        if not self.registry_only:
            rc, out, err = self.rfs.ls(f"{repo}/manifests", extra)
            listed = out.decode("utf-8", "replace").split("\n")
            self.report.check(
                fx.name,
                f"ls {repo}/manifests omits deleted {digest[:19]}",
                [f"exit {rc}"] if rc != 0 else ([f"lists {digest}/"] if digest + "/" in listed else []),
            )

    def check_blob(self, fx, repo, digest, extra):
        path = f"{repo}/blobs/{digest}"
        r = self.reg.get_blob(repo, digest)
        if r.status == 200:
            self.compare_exact(fx, path, path, r.body, extra)
        elif digest == fixtures.EMPTY_TAR_GZ_DIGEST:
            # registryfs may serve the empty tar everywhere (the fact sheet
            # recommends it); only compare where the registry has it.
            pass
        else:
            self.expect_absent(fx, path, path, r, extra)

    # -- not tied to a fixture -------------------------------------------

    def check_negative(self, some_repo):
        class _Neg:
            name = "negative"
            rfs_args = []

        fx = _Neg()
        r = self.reg.get_tags("no/such/repo")
        self.expect_absent(fx, "tags", "no/such/repo/tags/list", r, [])
        if some_repo:
            r = self.get_manifest(some_repo, "no-such-tag")
            self.expect_absent(fx, "tag", f"{some_repo}/manifests/no-such-tag/schema1", r, [])
            r = self.get_manifest(some_repo, ZERO_DIGEST, [KIND_MEDIA_TYPES[k] for k in ACCEPT_KINDS])
            self.expect_absent(fx, "digest", f"{some_repo}/manifests/{ZERO_DIGEST}/schema2", r, [])
            r = self.reg.get_blob(some_repo, ZERO_DIGEST)
            self.expect_absent(fx, "blob", f"{some_repo}/blobs/{ZERO_DIGEST}", r, [])
            # Upper-case hex of digests that exist. Upstream v2.8.2 (vendored
            # go-digest a6d0ee40) answers 404; Debian's build (go-digest
            # 1.0.0) answers 500 for manifests and 400 for blobs. Either way
            # nothing is served, and registryfs must refuse too.
            repo_dir = os.path.join(self.reg.root, "docker/registry/v2/repositories", some_repo)
            revs = sorted(os.listdir(os.path.join(repo_dir, "_manifests/revisions/sha256")))
            blobs = sorted(os.listdir(os.path.join(repo_dir, "_layers/sha256")))
            up = "sha256:" + revs[0].upper()
            r = self.get_manifest(some_repo, up, [KIND_MEDIA_TYPES[k] for k in ACCEPT_KINDS])
            self.expect_absent(fx, "upper-case digest", f"{some_repo}/manifests/{up}/schema2", r, [])
            up = "sha256:" + blobs[0].upper()
            r = self.reg.get_blob(some_repo, up)
            self.expect_absent(fx, "upper-case blob", f"{some_repo}/blobs/{up}", r, [])
        if not self.registry_only:
            rc, out, err = self.rfs.ls("no/such/repo")
            if rc == 1:
                self.note_stderr("ls no/such/repo", err)
            self.report.check(fx.name, "ls no/such/repo fails", [] if rc == 1 else [f"exit {rc}"])


def verifier_selftest(verifier, report):
    """Make sure target/libtrust-verify is a real check: it must accept the
    fact sheet's independently produced test vector (RFC 6979 signature, not
    made by distribution) and reject the same document with one payload byte
    changed."""
    with open(VECTOR, "rb") as f:
        doc = f.read()
    ok, dgst, kids, err = libtrust_verify(verifier, doc)
    problems = []
    if not ok:
        problems.append(err)
    elif dgst != VECTOR_DIGEST or kids != [SIGNING_KEY_KID]:
        problems.append(f"got {dgst} {kids}")
    report.check("selftest", "libtrust-verify accepts schema1-signing.md §9 test vector", problems)
    tampered = doc.replace(b'"tag": "latest"', b'"tag": "lateST"', 1)
    ok, _, _, err = libtrust_verify(verifier, tampered)
    report.check(
        "selftest",
        "libtrust-verify rejects a tampered payload",
        [] if not ok else ["tampered document verified"],
    )


# ---------------------------------------------------------------------------


def resolve_binary(arg):
    cands = [arg] if arg else []
    if not arg and os.environ.get("REGISTRYFS_BIN"):
        cands = [os.environ["REGISTRYFS_BIN"]]
    if not cands:
        cands = [
            os.path.join(REPO_ROOT, "target", "debug", "registryfs"),
            os.path.join(REPO_ROOT, "target", "release", "registryfs"),
        ]
    for c in cands:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    raise SetupError(
        "registryfs binary not found (looked at: "
        + ", ".join(cands)
        + "). Build it with `cargo build`, pass --registryfs PATH or set REGISTRYFS_BIN; "
        "or use --registry-only to exercise the fixtures against the registry alone."
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registryfs", help="registryfs binary (default: $REGISTRYFS_BIN, target/debug, target/release)")
    ap.add_argument("--registry-only", action="store_true", help="push fixtures and check the registry only")
    ap.add_argument("--filter", action="append", default=[], help="only fixtures whose name contains SUBSTR (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (store, registry log, layouts)")
    ap.add_argument("--work-dir", default=os.path.join(HERE, "work"), help="where failing bytes are saved")
    ap.add_argument("--list", action="store_true", help="list fixtures and exit")
    ap.add_argument(
        "--timeout", type=int, default=300, help="abort (and clean up) after this many seconds (default 300)"
    )
    args = ap.parse_args(argv)

    all_fx = fixtures.all_fixtures()
    if args.list:
        for fx in all_fx:
            print(f"{fx.name:16} {', '.join(fx.repos()):30} {fx.doc}")
        return 0
    selected = [fx for fx in all_fx if not args.filter or any(s in fx.name for s in args.filter)]
    if not selected:
        print(f"error: no fixture matches {args.filter}", file=sys.stderr)
        return 2

    try:
        binary = None if args.registry_only else resolve_binary(args.registryfs)
        verifier = ensure_verifier()
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    stop_cleanly_on_signals(args.timeout)

    default_work = os.path.join(HERE, "work")
    if os.path.abspath(args.work_dir) == default_work and os.path.isdir(default_work):
        # Only this run's failures in it. (A --work-dir given by the user is
        # never wiped: it might be a directory with other things in it.)
        shutil.rmtree(default_work)
    report = Report(args.work_dir)
    tmp = tempfile.mkdtemp(prefix="registryfs-oracle-")
    reg = Registry(tmp)
    t0 = time.monotonic()
    interrupted = False
    try:
        verifier_selftest(verifier, report)
        reg.start()
        print(f"# docker-registry pid {reg.proc.pid} on {reg.host}, store {reg.root}", flush=True)

        # Phase 1: push everything (a later fixture never changes an earlier
        # fixture's repositories).
        pushed = {}
        ok_fixtures = []
        for fx in selected:
            try:
                per_repo = {}
                for i, p in enumerate(fx.pushes):
                    layout = os.path.join(tmp, "layouts", f"{fx.name}-{i}")
                    fixtures.push(reg, p, layout)
                    if p.via == "delete":
                        # None marks "deleted": checked as absent.
                        per_repo.setdefault(p.repo, {})[p.obj.digest] = None
                        continue
                    objs = [p.obj] + p.obj.children() if p.via != "skopeo-v2s1" else []
                    for o in objs:
                        per_repo.setdefault(p.repo, {})[o.digest] = o.manifest
                pushed[fx.name] = per_repo
                report.ok(fx.name, f"pushed ({len(fx.pushes)} pushes; {fx.doc})")
                ok_fixtures.append(fx)
            except (RegistryError, AssertionError, subprocess.TimeoutExpired, OSError) as e:
                report.fail(fx.name, "push", e)
        print(f"# pushed in {time.monotonic() - t0:.1f}s", flush=True)

        # Phase 2: compare.
        rfs = RegistryFS(binary, reg.root, reg.keyfile) if binary else None
        checker = Checker(reg, rfs, verifier, report, args.registry_only)
        for fx in ok_fixtures:
            checker.check_fixture(fx, pushed[fx.name])
        checker.check_negative(ok_fixtures[0].repos()[0] if ok_fixtures else None)
        checker.report_stderr()
    except KeyboardInterrupt as e:
        interrupted = True
        report.fail("harness", "interrupted", e or "SIGINT")
    except (RegistryError, SetupError) as e:
        report.fail("harness", "setup", e)
    finally:
        signal.alarm(0)
        reg.stop()
        if args.keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    return finish("oracle", report, t0, interrupted)


if __name__ == "__main__":
    sys.exit(main())

"""The independent signature check shared by the test harnesses: Debian's libtrust,
through tests/libtrust-verify (built offline into target/libtrust-verify)."""

import os
import subprocess

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SetupError(Exception):
    """Something a harness needs could not be prepared (a build, a binary, a server)."""


def libtrust_verify(verifier, data):
    """Returns (ok, digest, kids, error) for a signed schema1 document."""
    p = subprocess.run([verifier, "-"], input=data, capture_output=True, timeout=30)
    if p.returncode != 0:
        return False, None, [], p.stderr.decode("utf-8", "replace").strip()
    lines = p.stdout.decode().split()
    return True, lines[0], lines[1:], ""


def ensure_verifier():
    """Builds target/libtrust-verify when missing or older than its source; its path."""
    out = os.path.join(REPO_ROOT, "target", "libtrust-verify")
    src = os.path.join(REPO_ROOT, "tests", "libtrust-verify", "main.go")
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(src):
        return out
    p = subprocess.run(
        [os.path.join(REPO_ROOT, "scripts", "build-libtrust-verify.sh")],
        capture_output=True,
        timeout=300,
    )
    if p.returncode != 0:
        raise SetupError("building libtrust-verify failed:\n" + p.stderr.decode("utf-8", "replace"))
    return out

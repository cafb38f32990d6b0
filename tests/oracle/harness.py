"""Pieces shared by the test and benchmark harnesses: their setup error, stopping a
server by PID and reading its log's tail, clean stops on signals and a watchdog, and
the independent signature check (Debian's libtrust through
tests/libtrust-verify, built offline into target/libtrust-verify)."""

import os
import signal
import subprocess
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SetupError(Exception):
    """Something a harness needs could not be prepared (a build, a binary, a server)."""


def stop_process(proc, sig=signal.SIGTERM, timeout=10):
    """Stop one process we started, by its PID: sig, then SIGKILL after `timeout` s."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def finish(suite, report, started, interrupted=False):
    """Closes a harness run: its time, the failed checks, then the line CI reads
    (`<suite>: N passed, M failed`); returns the exit code. `report` has `passed`,
    `failed` and `failures` (the names of the failed checks)."""
    print(f"# {time.monotonic() - started:.1f}s")
    if report.failures:
        more = " ..." if len(report.failures) > 40 else ""
        print("# failed: " + ", ".join(report.failures[:40]) + more)
    print(f"{suite}: {report.passed} passed, {report.failed} failed")
    if interrupted:
        return 130
    return 1 if report.failed else 0


def tail(path, n=30):
    """The last `n` lines of a log file, for error messages."""
    try:
        with open(path, "rb") as f:
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
    except OSError:
        return f"(no {path})"


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


def stop_cleanly_on_signals(timeout_seconds):
    """Turns SIGTERM/SIGHUP, and SIGALRM after `timeout_seconds` (a watchdog: a hung
    registry, mount or server must not hang CI), into KeyboardInterrupt, as SIGINT
    already is, so the caller's `finally` stops everything it started."""

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    signal.signal(signal.SIGALRM, lambda *_: on_signal("SIGALRM (--timeout)", None))
    signal.alarm(timeout_seconds)

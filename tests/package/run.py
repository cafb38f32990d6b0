#!/usr/bin/env python3
"""The Debian package as an operator meets it (issue 13).

    python3 tests/package/run.py [--registryfs target/debug/registryfs]

  1. builds the .deb with scripts/build-deb.sh around the given binary (a debug build
     keeps CI from building a release one; the packaging is the same);
  2. lintian: no errors; its warnings are printed (`# lintian: W: ...`);
  3. `dpkg -i`; the installed `registryfs --version` names the commit;
  4. `man registryfs`, `man registryfs-verify` and `man 8 mount.fuse.registryfs` render;
     the completions are where bash, zsh and fish look;
  5. `systemd-analyze verify` on an instance of the unit (PID 1 is not systemd here, so
     the unit is checked, not started);
  6. the unit's own command lines, read from the installed file with the instance's
     config (/etc/registryfs/<instance>.conf) as systemd substitutes them, on the sample
     store: ExecStart with a $NOTIFY_SOCKET of ours: READY=1 must come from the main
     process (its credentials) and only when the mount answers (a file reads as
     `registryfs cat` prints it at that moment); ExecStop unmounts and the daemon exits
     by itself, status 0; after the daemon is SIGKILLed, ExecStartPre clears the dead
     mount; then `mount -t fuse.registryfs` through the installed helper, a read, umount;
  7. `dpkg -r`, then `dpkg -P`: no file of the package is left, nor its doc folder.

Everything started is stopped by PID, mounts are detached and the package is purged,
also on failure. Prints ok/FAIL per check and "package: N passed, M failed". Needs root
and scripts/install-deps.sh (lintian, man-db, systemd, fuse3, dpkg-dev).
"""

import argparse
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "oracle"))

from harness import SetupError, finish, stop_cleanly_on_signals, stop_process, tail  # noqa: E402

UNIT = "/lib/systemd/system/registryfs@.service"
INSTANCE = "pkgtest"
CONFIG_DIR = "/etc/registryfs"
FUSE_SUPER_MAGIC = 0x65735546
SAMPLE_FILE = "demo/hello/tags/list"
# Paths the package installs that must not be someone else's before we install it.
OWNED = ["/usr/bin/registryfs", "/sbin/mount.fuse.registryfs", UNIT]


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   {name}")
        else:
            self.failed += 1
            self.failures.append(name)
            print(f"FAIL {name}" + (f": {detail}" if detail else ""))
        return ok


def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, **kw)


def statfs_type(path):
    """The filesystem magic at `path`, or the errno name if statfs fails."""
    p = run(["stat", "-f", "-c", "%t", "--", path], timeout=10)
    if p.returncode != 0:
        return "ENOTCONN" if "not connected" in p.stderr else p.stderr.strip()
    return int(p.stdout.strip(), 16)


def detach(path):
    if os.path.ismount(path) or statfs_type(path) == "ENOTCONN":
        run(["umount", "-l", path], timeout=10)


# ---------------------------------------------------------------------------
# the unit's command lines, as systemd runs them


def read_unit(path):
    """`Key=value` lines of the [Service] section, in order (continuations joined)."""
    entries = []
    section = None
    with open(path) as f:
        text = f.read().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]" and "=" in line:
            key, value = line.split("=", 1)
            entries.append((key.strip(), value.strip()))
    return entries


def read_environment_file(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and line[0] not in "#;" and "=" in line:
                key, value = line.split("=", 1)
                env[key.strip()] = value.strip()
    return env


def expand(command_line, env):
    """systemd's Exec*= rules, as far as the unit uses them: a leading `-` (failure
    ignored) is dropped, words are split with shell-like quoting, `$NAME` as a word of
    its own becomes the value split at whitespace, `${NAME}` anywhere the value as is.
    Returns (argv, failure_ignored)."""
    ignore = command_line.startswith("-")
    words = shlex.split(command_line.lstrip("-@+!"))
    argv = []
    for w in words:
        if w.startswith("$") and not w.startswith("${") and w[1:] in env:
            argv.extend(env[w[1:]].split())
            continue
        for name, value in env.items():
            w = w.replace("${" + name + "}", value)
        argv.append(w)
    return argv, ignore


class NotifySocket:
    """A $NOTIFY_SOCKET as systemd's: datagrams with the sender's credentials."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(path)

    def wait(self, timeout):
        """(message, sender pid) of the next datagram, or (None, None)."""
        self.sock.settimeout(timeout)
        try:
            data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except socket.timeout:
            return None, None
        pid = None
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _, _ = struct.unpack("iII", payload[:12])
        return data.decode(errors="replace"), pid

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registryfs", default=os.path.join(REPO_ROOT, "target", "debug", "registryfs"))
    ap.add_argument("--timeout", type=int, default=600)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("error: run as root (dpkg -i, mount)", file=sys.stderr)
        return 2
    stop_cleanly_on_signals(args.timeout)
    report = Report()
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="registryfs-package-")
    state = {"installed": False, "procs": [], "mounts": [], "config": None, "config_dir_made": False}
    interrupted = False
    try:
        test_package(args, work, report, state)
    except KeyboardInterrupt as e:
        print(f"error: interrupted: {e}", file=sys.stderr)
        interrupted = True
    except (SetupError, subprocess.SubprocessError, OSError) as e:
        report.check("setup", False, f"{type(e).__name__}: {e}")
    finally:
        signal.alarm(0)
        for proc in state["procs"]:
            stop_process(proc, signal.SIGKILL, timeout=5)
        for mnt in state["mounts"]:
            detach(mnt)
        if state["config"] and os.path.exists(state["config"]):
            os.remove(state["config"])
        if state["config_dir_made"] and os.path.isdir(CONFIG_DIR) and not os.listdir(CONFIG_DIR):
            os.rmdir(CONFIG_DIR)
        if state["installed"]:
            run(["dpkg", "-P", "registryfs"])
        shutil.rmtree(work, ignore_errors=True)
    return finish("package", report, started, interrupted)


def test_package(args, work, report, state):
    binary = os.path.abspath(args.registryfs)
    store = os.path.join(REPO_ROOT, "samples", "store")

    # 1. build
    p = run([os.path.join(REPO_ROOT, "scripts", "build-deb.sh"), "--binary", binary, "--out", work], timeout=300)
    if p.returncode != 0:
        raise SetupError("build-deb.sh failed:\n" + p.stdout[-2000:] + p.stderr[-3000:])
    deb = p.stdout.strip().splitlines()[-1]
    print(f"# built {deb} ({os.path.getsize(deb)} bytes)")
    files = package_files(deb)

    # 2. lintian
    p = run(["lintian", "--tag-display-limit", "0", deb], timeout=300)
    tags = [ln for ln in p.stdout.splitlines() if ln[:2] in ("E:", "W:", "I:", "N:")]
    errors = [t for t in tags if t.startswith("E:")]
    for t in tags:
        if t.startswith(("E:", "W:")):
            print(f"# lintian: {t}")
    report.check("lintian: no errors", not errors and p.returncode == 0, "; ".join(errors) or p.stderr[-500:])

    # 3. install
    for path in OWNED:
        if os.path.lexists(path):
            raise SetupError(f"{path} exists and is not from this test; not installing over it")
    if run(["dpkg-query", "-W", "registryfs"]).returncode == 0:
        raise SetupError("a registryfs package is installed already; not replacing it")
    state["installed"] = True
    p = run(["dpkg", "-i", deb], timeout=300)
    if not report.check("dpkg -i", p.returncode == 0, p.stdout[-1000:] + p.stderr[-1000:]):
        return
    status = run(["dpkg-query", "-W", "-f", "${Status} ${Depends}", "registryfs"]).stdout
    report.check("installed, depends on fuse3", status.startswith("install ok installed") and "fuse3" in status, status)
    ours = run([binary, "--version"]).stdout
    installed = run(["/usr/bin/registryfs", "--version"]).stdout
    report.check("installed --version names the commit", installed == ours and "(commit " in installed, installed)

    # 4. man pages, completions
    env = dict(os.environ, MANPAGER="cat", PAGER="cat", MANWIDTH="80")
    for page, needle in [
        (["registryfs"], "registryfs-verify(1)"),
        (["registryfs-verify"], "--json"),
        (["8", "mount.fuse.registryfs"], "fuse.registryfs"),
    ]:
        p = run(["man", *page], env=env, timeout=60)
        text = p.stdout.replace("\u2010", "-").replace("\u2011", "-")
        report.check(f"man {' '.join(page)} renders", p.returncode == 0 and needle in text and not p.stderr.strip(), p.stderr[-500:])
    for path in [
        "/usr/share/bash-completion/completions/registryfs",
        "/usr/share/zsh/vendor-completions/_registryfs",
        "/usr/share/fish/vendor_completions.d/registryfs.fish",
        "/usr/share/doc/registryfs/examples/nginx.conf",
        "/usr/share/doc/registryfs/examples/apache.conf",
        "/usr/share/doc/registryfs/examples/registryfs.conf",
        "/usr/share/doc/registryfs/copyright",
    ]:
        report.check(f"installed {path}", os.path.isfile(path))
    p = run(["bash", "-c", "source /usr/share/bash-completion/completions/registryfs && complete -p registryfs"])
    report.check("bash completion loads", p.returncode == 0 and "registryfs" in p.stdout, p.stderr[-300:])

    # 5. systemd-analyze verify on an instance (with its config in place)
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt)
    key = os.path.join(work, "key.json")
    p = run(["/usr/bin/registryfs", "keygen", key])
    if p.returncode != 0:
        raise SetupError("keygen: " + p.stderr)
    if not os.path.isdir(CONFIG_DIR):
        os.makedirs(CONFIG_DIR)
        state["config_dir_made"] = True
    config = os.path.join(CONFIG_DIR, f"{INSTANCE}.conf")
    if os.path.exists(config):
        raise SetupError(f"{config} exists; not overwriting it")
    state["config"] = config
    with open(config, "w") as f:
        f.write(f"STORE={store}\nMOUNTPOINT={mnt}\nOPTIONS=allow_other,signing_key={key}\n")
    p = run(["systemd-analyze", "verify", f"{UNIT.rsplit('/', 1)[0]}/registryfs@{INSTANCE}.service"], timeout=120)
    output = (p.stdout + p.stderr).splitlines()
    problems = [ln for ln in output if "registryfs" in ln]
    print(f"# systemd-analyze verify: exit {p.returncode}, {len(output)} lines, {len(problems)} about registryfs")
    for ln in output:
        print(f"# systemd-analyze: {ln}")
    report.check("systemd-analyze verify registryfs@.service", p.returncode == 0 and not problems, "\n".join(problems))

    # 6. the unit's command lines
    unit = read_unit(UNIT)
    keys = dict(unit)
    report.check("unit: Type=notify, Restart=on-failure, Before=nginx", keys.get("Type") == "notify" and keys.get("Restart") == "on-failure" and "Before=nginx.service apache2.service" in open(UNIT).read())
    config_env = read_environment_file(config)
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env.update(config_env)
    lines = {k: [v for kk, v in unit if kk == k] for k in ("ExecStartPre", "ExecStart", "ExecStop")}
    if not report.check("unit has one ExecStart and ExecStop, an ExecStartPre", all(lines.values()) and len(lines["ExecStart"]) == 1 and len(lines["ExecStop"]) == 1, str(lines)):
        return
    expected = run(["/usr/bin/registryfs", "cat", store, SAMPLE_FILE]).stdout
    state["mounts"].append(mnt)

    def start(name):
        """ExecStartPre lines, then ExecStart in the background; returns (proc, log)."""
        for line in lines["ExecStartPre"]:
            argv, ignore = expand(line, env)
            p = run(argv, env=env, timeout=30)
            if not ignore:
                report.check(f"{name}: ExecStartPre exits 0", p.returncode == 0, p.stderr[-500:])
        report.check(f"{name}: no dead mount left for ExecStart", statfs_type(mnt) != "ENOTCONN")
        sock_path = os.path.join(work, f"notify-{name}")
        notify = NotifySocket(sock_path)
        argv, _ = expand(lines["ExecStart"][0], env)
        log = os.path.join(work, f"{name}.log")
        with open(log, "w") as log_file:
            proc = subprocess.Popen(argv, env=dict(env, NOTIFY_SOCKET=sock_path), stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
        state["procs"].append(proc)
        message, pid = notify.wait(timeout=30)
        # At the moment READY=1 arrives the mount must answer.
        answered = statfs_type(mnt) == FUSE_SUPER_MAGIC and read_file(os.path.join(mnt, SAMPLE_FILE)) == expected
        notify.close()
        ok = message is not None and "READY=1" in message.split("\n") and pid == proc.pid
        report.check(f"{name}: READY=1 from the main process", ok, f"{message!r} from {pid}, main {proc.pid}: {tail(log)}")
        report.check(f"{name}: the mount answers when READY=1 comes", answered, tail(log))
        return proc, log

    def stop(proc, log, name):
        argv, _ = expand(lines["ExecStop"][0], env)
        p = run(argv, env=env, timeout=30)
        report.check(f"{name}: ExecStop exits 0", p.returncode == 0, p.stderr[-500:])
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            code = None
        report.check(f"{name}: the daemon exits by itself, status 0", code == 0, f"status {code}: {tail(log)}")
        report.check(f"{name}: unmounted", not os.path.ismount(mnt) and statfs_type(mnt) != FUSE_SUPER_MAGIC)

    proc, log = start("start")
    stop(proc, log, "stop")

    # A daemon killed under its mount leaves it dead (ENOTCONN); the next start clears it.
    proc, log = start("before-crash")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    report.check("SIGKILL leaves a dead mount", statfs_type(mnt) == "ENOTCONN", str(statfs_type(mnt)))
    proc, log = start("restart")
    report.check("restart: one registryfs mount at the mountpoint", mounts_at(mnt) == 1, str(mounts_at(mnt)))
    stop(proc, log, "restart stop")

    # The installed mount(8) helper, finding the installed binary by itself.
    env_helper = {k: v for k, v in os.environ.items() if k not in ("REGISTRYFS", "NOTIFY_SOCKET")}
    log = os.path.join(work, "helper.log")
    with open(log, "w") as log_file:
        # A file, not a pipe: the daemon keeps stderr as its log.
        p = subprocess.run(
            ["mount", "-t", "fuse.registryfs", store, mnt, "-o", f"allow_other,signing_key={key}"],
            env=env_helper, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, timeout=60,
        )
    report.check("mount -t fuse.registryfs (installed helper)", p.returncode == 0, tail(log))
    report.check("helper mount: a file reads", read_file(os.path.join(mnt, SAMPLE_FILE)) == expected)
    p = run(["umount", mnt], timeout=30)
    report.check("helper mount: umount", p.returncode == 0 and not os.path.ismount(mnt), p.stderr[-300:])

    # 7. remove, purge: nothing of the package is left
    os.remove(config)
    state["config"] = None
    p = run(["dpkg", "-r", "registryfs"], timeout=120)
    report.check("dpkg -r", p.returncode == 0, p.stderr[-500:])
    left = [f for f in files if os.path.lexists(f)]
    report.check("dpkg -r leaves none of the package's files", not left, ", ".join(left[:10]))
    p = run(["dpkg", "-P", "registryfs"], timeout=120)
    report.check("dpkg -P", p.returncode == 0, p.stderr[-500:])
    state["installed"] = False
    left = [f for f in files if os.path.lexists(f)] + [d for d in ["/usr/share/doc/registryfs"] if os.path.lexists(d)]
    report.check("dpkg -P leaves nothing behind", not left, ", ".join(left[:10]))
    status = run(["dpkg-query", "-W", "-f", "${Status}", "registryfs"]).stdout
    report.check("purged: dpkg knows no registryfs", "installed" not in status or "not-installed" in status, status)


def package_files(deb):
    """The regular files and symlinks the .deb installs (absolute paths)."""
    p = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True, timeout=60)
    out = []
    for line in p.stdout.splitlines():
        mode, name = line.split()[0], line.split()[5]
        if mode[0] in "-l":
            out.append(name[1:])
    return out


def read_file(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return f"({e})"


def mounts_at(path):
    with open("/proc/self/mountinfo") as f:
        return sum(1 for line in f if line.split()[4] == path)


if __name__ == "__main__":
    sys.exit(main())

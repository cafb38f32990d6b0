"""The `verify` section of run.py: `registryfs verify` over a store against sha256sum
over the same blob data files.

A store on the disk (run.py's --disk-dir, reused by later runs) holds 4 repositories of
one image each: a config and 8 layers of 32 MiB random bytes, 1 GiB of blob data in
all (verify walks it and must find it sound). Every file is read once first, so both
sides read from the page cache and what is compared is hashing, not the disk. Then,
alternating, 3 rounds each (median):

  verify       `registryfs verify STORE` (the walk, the schema1 checks, and every blob
               hashed on a thread per CPU);
  sha256sum    `sha256sum FILE...` over the same data files, one process, as an
               operator checking by hand would run it;
  sha256sum -P the same files split over one `sha256sum` per CPU (xargs -P), the
               fastest a shell gets.

Figures: the peer's time over ours (>= 1: verify is as fast), target 0.9.

`bench` is run.py itself: its figure line, note and run helpers.
"""

import hashlib
import json
import os
import statistics
import subprocess
import time

REPOS = 4
LAYERS = 8
LAYER_BYTES = 32 << 20
ROUNDS = 3
TARGET = 0.9


def bench_verify(args, work, bench):
    root = os.path.join(args.disk_dir, "verify-store")
    files = verify_store(root)
    total = sum(os.path.getsize(f) for f in files)
    cpus = os.cpu_count() or 1
    commands = {
        "verify": [args.registryfs, "verify", root],
        "sha256sum": ["sha256sum", *files],
        "sha256sum -P": ["sh", "-c", f'printf "%s\\0" "$@" | xargs -0 -P {cpus} -n {max(1, len(files) // cpus)} sha256sum', "sh", *files],
    }
    for f in files:
        bench.read_all(f)
    out = subprocess.run(commands["verify"], capture_output=True, timeout=300)
    if out.returncode != 0:
        raise AssertionError(f"verify of the bench store: exit {out.returncode}: {out.stdout.decode()[-2000:]}")
    times = {name: [] for name in commands}
    for _ in range(ROUNDS):
        for name, cmd in commands.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=300)
            times[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(t) for name, t in times.items()}
    mib = total / (1 << 20)
    bench.note(
        f"verify: {len(files)} blob files, {mib:,.0f} MiB, page cache warm, {cpus} CPUs; median of {ROUNDS}: "
        + ", ".join(f"{name} {t:.2f} s ({mib / t:,.0f} MiB/s)" for name, t in medians.items())
    )
    ours = medians["verify"]
    for peer in ("sha256sum", "sha256sum -P"):
        ratio = medians[peer] / ours
        name = "verify vs " + peer.replace(" -P", " (one per CPU)")
        bench.figure(name, f"{ours:.2f}", f"{medians[peer]:.2f}", "s", ratio, f">= {TARGET}", ratio >= TARGET)


def verify_store(root):
    """The store described above; returns its blob data files. Reused when complete."""
    marker = os.path.join(root, "files.json")
    if os.path.exists(marker):
        with open(marker) as f:
            files = json.load(f)
        if all(os.path.exists(p) for p in files):
            return files
    subprocess.run(["rm", "-rf", root], check=True)
    v2 = os.path.join(root, "docker/registry/v2")
    files = []

    def put(data, repo, section):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        hexd = digest.split(":", 1)[1]
        path = os.path.join(v2, "blobs/sha256", hexd[:2], hexd, "data")
        write(path, data)
        files.append(path)
        write(os.path.join(v2, "repositories", repo, section, "sha256", hexd, "link"), digest.encode())
        return digest

    for r in range(REPOS):
        repo = f"bench/verify{r}"
        layers = [put(os.urandom(LAYER_BYTES), repo, "_layers") for _ in range(LAYERS)]
        history = [{"created": "2024-01-02T03:04:05Z", "created_by": f"step {i}"} for i in range(LAYERS)]
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "created": "2024-01-02T03:04:05Z",
                "history": history,
                "rootfs": {"type": "layers", "diff_ids": layers},
            }
        ).encode()
        config_digest = put(config, repo, "_layers")
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": len(config),
                    "digest": config_digest,
                },
                "layers": [
                    {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": LAYER_BYTES, "digest": d}
                    for d in layers
                ],
            }
        ).encode()
        digest = put(manifest, repo, "_manifests/revisions")
        tag = os.path.join(v2, "repositories", repo, "_manifests/tags/latest")
        write(os.path.join(tag, "current/link"), digest.encode())
        write(os.path.join(tag, "index/sha256", digest.split(":", 1)[1], "link"), digest.encode())
    with open(marker, "w") as f:
        json.dump(files, f)
    return files


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)

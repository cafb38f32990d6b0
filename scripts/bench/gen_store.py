#!/usr/bin/env python3
"""Generate a large distribution-layout store for benchmarks, fast.

    python3 scripts/bench/gen_store.py DIR --repos 100000
    python3 scripts/bench/gen_store.py DIR --repos 10000 --oci

Every repository `bench/rNNNNNN` gets one tag `latest`. All repositories share one
schema2 manifest, config and layer (each still converts to a different schema1, since
the repository name is part of it), and identical link files are hard links, so the
store costs little more than its folders: put it on tmpfs (/dev/shm) for 100k
repositories. Files are written exactly as registry 2.8.2 writes them (links without
a trailing newline, fan-out blob folders). With --oci: an OCI image layout whose
index.json names the same image once per repository (`bench/rNNNNNN:latest`).
"""

import argparse
import errno
import hashlib
import json
import os
import sys

LAYER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\x00" * 22  # a stand-in layer


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write(path, data):
    try:
        with open(path, "wb") as f:
            f.write(data)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def put_blob(v2, data):
    d = digest(data)
    hexd = d.split(":", 1)[1]
    write(os.path.join(v2, "blobs/sha256", hexd[:2], hexd, "data"), data)
    return d


def hardlink(first, path):
    """Links `path` to `first` (a file with the same content), making folders."""
    try:
        os.link(first, path)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.link(first, path)


def link_paths(repo_dir, layer_digest, cfg_digest, m_digest):
    """The link files of one repository, each with the digest it holds."""
    rev = lambda section, d: os.path.join(repo_dir, section, "sha256", d.split(":", 1)[1], "link")
    tag_dir = os.path.join(repo_dir, "_manifests/tags/latest")
    return [
        (rev("_layers", layer_digest), layer_digest),
        (rev("_layers", cfg_digest), cfg_digest),
        (rev("_manifests/revisions", m_digest), m_digest),
        (rev(os.path.join("_manifests/tags/latest", "index"), m_digest), m_digest),
        (os.path.join(tag_dir, "current/link"), m_digest),
    ]


def config(label):
    return json.dumps({
        "architecture": "amd64",
        "config": {"Cmd": ["/bin/sh"], "Labels": {"set": label}},
        "created": "2024-01-02T03:04:05Z",
        "history": [
            {"created": "2024-01-02T03:04:00Z", "created_by": "/bin/sh -c #(nop) ADD file:x in / "},
            {"created": "2024-01-02T03:04:05Z", "created_by": "/bin/sh -c #(nop)  CMD [\"/bin/sh\"]", "empty_layer": True},
        ],
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]},
    }, separators=(",", ":")).encode()


def manifest(config_bytes, config_digest, layer_digest):
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(config_bytes), "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(LAYER), "digest": layer_digest}],
    }, indent=3).encode()


def oci_layout(path, repos):
    """The same repositories as an OCI image layout: one index.json entry each."""
    blobs = os.path.join(path, "blobs/sha256")

    def put(data):
        d = digest(data)
        write(os.path.join(blobs, d.split(":", 1)[1]), data)
        return d

    layer_digest = put(LAYER)
    cfg = config("bench")
    cfg_digest = put(cfg)
    body = manifest(cfg, cfg_digest, layer_digest)
    m_digest = put(body)
    entries = [{
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "digest": m_digest,
        "size": len(body),
        "annotations": {"org.opencontainers.image.ref.name": "bench/r%06d:latest" % i},
    } for i in range(repos)]
    write(os.path.join(path, "oci-layout"), b'{"imageLayoutVersion":"1.0.0"}')
    write(os.path.join(path, "index.json"),
          json.dumps({"schemaVersion": 2, "manifests": entries}, separators=(",", ":")).encode())
    print("gen_store: OCI layout with %d repositories in %s" % (repos, path), file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--repos", type=int, default=100000)
    ap.add_argument("--oci", action="store_true", help="an OCI image layout instead")
    args = ap.parse_args()
    if args.oci:
        return oci_layout(args.dir, args.repos)
    v2 = os.path.join(args.dir, "docker/registry/v2")
    layer_digest = put_blob(v2, LAYER)
    cfg = config("bench")
    cfg_digest = put_blob(v2, cfg)
    m_digest = put_blob(v2, manifest(cfg, cfg_digest, layer_digest))
    firsts = {}
    for i in range(args.repos):
        repo_dir = os.path.join(v2, "repositories", "bench/r%06d" % i)
        for path, d in link_paths(repo_dir, layer_digest, cfg_digest, m_digest):
            try:
                if d in firsts:
                    hardlink(firsts[d], path)
                    continue
            except OSError as e:
                # ext4 allows 65,000 links to a file; a store on disk starts a new one.
                if e.errno != errno.EMLINK:
                    raise
            write(path, d.encode())
            firsts[d] = path
        if i and i % 20000 == 0:
            print("gen_store: %d repositories" % i, file=sys.stderr)
    print("gen_store: %d repositories in %s" % (args.repos, args.dir), file=sys.stderr)


if __name__ == "__main__":
    main()

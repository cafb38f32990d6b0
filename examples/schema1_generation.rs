//! Cold schema1 generation time, in process: builds a store of N images with distinct
//! configs, then times the first lookup of each tag's `schema1` through the namespace
//! (links, manifest, config, conversion; the size is known unsigned), the whole generation
//! (the lookup and the first read, which signs), and the conversion and signing alone.
//!
//! Usage: cargo run --release --example schema1_generation [N]

use registryfs::digest::Digest;
use registryfs::manifest::PlatformChoice;
use registryfs::namespace::{Namespace, Node, Settings};
use registryfs::schema1::{self, SigningKey};
use registryfs::store::{self, OpenOptions};
use std::path::Path;
use std::time::Instant;

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

fn blob(v2: &Path, repo: &str, bytes: &[u8], section: &str) -> Digest {
    let d = Digest::of(bytes);
    let hex = d.encoded();
    write(v2, &format!("blobs/sha256/{}/{hex}/data", &hex[..2]), bytes);
    write(
        v2,
        &format!("repositories/{repo}/{section}/sha256/{hex}/link"),
        d.as_str().as_bytes(),
    );
    d
}

/// A config shaped like a typical Debian-based image: 5 layers, 9 history entries.
fn config(i: usize) -> String {
    let mut history = Vec::new();
    for step in 0..9 {
        let empty = if step % 2 == 1 {
            r#","empty_layer":true"#
        } else {
            ""
        };
        history.push(format!(
            r#"{{"created":"2024-01-0{}T10:00:{step:02}.123456789Z","created_by":"/bin/sh -c step {step} of image {i} && apt-get install -y thing-{step}"{empty}}}"#,
            1 + step % 9
        ));
    }
    let diff_ids: Vec<String> = (0..5)
        .map(|l| format!("\"sha256:{:064x}\"", i * 10 + l))
        .collect();
    format!(
        r#"{{"architecture":"amd64","config":{{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","IMAGE={i}"],"Cmd":["bash"],"Labels":{{"maintainer":"ops <ops@example.com>"}}}},"created":"2024-01-09T10:00:00Z","history":[{}],"os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        history.join(","),
        diff_ids.join(",")
    )
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().expect("tempdir");
    let v2 = dir.path().join("docker/registry/v2");
    let mut inputs = Vec::new();
    for i in 0..n {
        let repo = format!("bench/app{i}");
        let cfg = config(i);
        let config_digest = blob(&v2, &repo, cfg.as_bytes(), "_layers");
        let layers: Vec<String> = (0..5)
            .map(|l| format!("sha256:{:064x}", i * 100 + l))
            .collect();
        let layer_json: Vec<String> = layers
            .iter()
            .map(|d| format!(r#"{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":1,"digest":"{d}"}}"#))
            .collect();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{config_digest}"}},"layers":[{}]}}"#,
            cfg.len(),
            layer_json.join(",")
        );
        let m = blob(&v2, &repo, manifest.as_bytes(), "_manifests/revisions");
        write(
            &v2,
            &format!("repositories/{repo}/_manifests/tags/latest/current/link"),
            m.as_str().as_bytes(),
        );
        inputs.push((repo, layers, cfg));
    }
    let key = SigningKey::generate().expect("key");
    let settings = Settings {
        key: key.clone(),
        platform: PlatformChoice::default(),
        convert_oci: false,
        allow_foreign_layers: false,
        schema1_cache_bytes: 64 << 10,
    };
    let store = store::open(dir.path(), &OpenOptions::default()).expect("store");
    let schema1 = |repo: &str| format!("{repo}/manifests/latest/schema1");

    // A lookup knows the exact size without signing (`jws::Unsigned`): what a `stat`
    // or a walk pays.
    let ns = Namespace::new(store.clone(), settings.clone());
    let start = Instant::now();
    for (repo, _, _) in &inputs {
        match ns.lookup(&schema1(repo)) {
            Ok(Node::File(_)) => {}
            other => panic!("{repo}: {other:?}"),
        }
    }
    let lookup_us = start.elapsed().as_secs_f64() * 1e6 / n as f64;

    // The whole generation: the lookup and the signed bytes (the first read), by a
    // namespace that has made none of them yet.
    let ns = Namespace::new(store, settings);
    let start = Instant::now();
    for (repo, _, _) in &inputs {
        match ns.lookup(&schema1(repo)) {
            Ok(Node::File(content)) => {
                content.in_memory().expect("a document");
            }
            other => panic!("{repo}: {other:?}"),
        }
    }
    let generation_us = start.elapsed().as_secs_f64() * 1e6 / n as f64;

    let start = Instant::now();
    let mut payloads = Vec::with_capacity(n);
    for (repo, layers, cfg) in &inputs {
        let refs: Vec<&str> = layers.iter().map(String::as_str).collect();
        payloads
            .push(schema1::build_payload(repo, "latest", &refs, cfg.as_bytes()).expect("converts"));
    }
    let build_us = start.elapsed().as_secs_f64() * 1e6 / n as f64;

    let start = Instant::now();
    for p in &payloads {
        schema1::jws::sign(&p.bytes, &key, &p.signing_time).expect("signs");
    }
    let sign_us = start.elapsed().as_secs_f64() * 1e6 / n as f64;

    println!("manifests {n}");
    println!("cold_generation_us {generation_us:.1}");
    println!("cold_lookup_us {lookup_us:.1}");
    println!("build_payload_us {build_us:.1}");
    println!("sign_us {sign_us:.1}");
}

//! Builds registry stores on disk for tests, in distribution's layout, byte for byte as
//! registry 2.8.2 writes them (links without newline, fan-out blob folders).
#![allow(dead_code)]

use registryfs::digest::Digest;
use registryfs::manifest::PlatformChoice;
use registryfs::namespace::{Content, Namespace, Node, Settings};
use registryfs::schema1::SigningKey;
use registryfs::store::{self, OpenOptions};
use std::path::{Path, PathBuf};

pub const SCHEMA2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
pub const LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

pub struct StoreBuilder {
    dir: tempfile::TempDir,
}

impl StoreBuilder {
    pub fn new() -> StoreBuilder {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("docker/registry/v2/repositories")).expect("mkdir");
        StoreBuilder { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn v2(&self) -> PathBuf {
        self.dir.path().join("docker/registry/v2")
    }

    fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let path = self.v2().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write");
        path
    }

    /// Writes blob data (not linked into any repository); returns its digest.
    pub fn blob(&self, bytes: &[u8]) -> Digest {
        let d = Digest::of(bytes);
        let hex = d.encoded().to_string();
        self.write(&format!("blobs/sha256/{}/{hex}/data", &hex[..2]), bytes);
        d
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.encoded();
        self.v2()
            .join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]))
    }

    pub fn link(&self, repo: &str, section: &str, d: &Digest) -> PathBuf {
        self.write(
            &format!("repositories/{repo}/{section}/sha256/{}/link", d.encoded()),
            d.as_str().as_bytes(),
        )
    }

    /// A blob linked into `repo`.
    pub fn layer(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = self.blob(bytes);
        self.link(repo, "_layers", &d);
        d
    }

    /// A manifest stored and linked as a revision of `repo`.
    pub fn manifest(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = self.blob(bytes);
        self.link(repo, "_manifests/revisions", &d);
        d
    }

    pub fn tag(&self, repo: &str, tag: &str, d: &Digest) -> PathBuf {
        self.write(
            &format!(
                "repositories/{repo}/_manifests/tags/{tag}/index/sha256/{}/link",
                d.encoded()
            ),
            d.as_str().as_bytes(),
        );
        self.write(
            &format!("repositories/{repo}/_manifests/tags/{tag}/current/link"),
            d.as_str().as_bytes(),
        )
    }

    /// Pushes a schema2 image: config, layers (descriptors of `media_type`), manifest, tag.
    pub fn image(
        &self,
        repo: &str,
        tag: &str,
        config: &str,
        layers: &[&[u8]],
        media_type: &str,
    ) -> Digest {
        let manifest = self.image_manifest(repo, config, layers, media_type, SCHEMA2);
        let d = self.manifest(repo, manifest.as_bytes());
        self.tag(repo, tag, &d);
        d
    }

    /// Stores config and layers and returns the manifest JSON (not stored).
    pub fn image_manifest(
        &self,
        repo: &str,
        config: &str,
        layers: &[&[u8]],
        layer_type: &str,
        manifest_type: &str,
    ) -> String {
        let config_digest = self.layer(repo, config.as_bytes());
        let layers: Vec<String> = layers
            .iter()
            .map(|l| {
                let d = self.layer(repo, l);
                format!(
                    r#"{{"mediaType":"{layer_type}","size":{},"digest":"{d}"}}"#,
                    l.len()
                )
            })
            .collect();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{manifest_type}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{config_digest}"}},"layers":[{}]}}"#,
            config.len(),
            layers.join(",")
        )
    }

    pub fn open(&self, settings: Settings) -> Namespace {
        let store = store::open(self.root(), &OpenOptions::default()).expect("opens");
        Namespace::new(store, settings)
    }
}

/// The synthetic key of the signing fact sheet.
pub fn test_key() -> SigningKey {
    let mut d = [0u8; 32];
    for (i, b) in d.iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    SigningKey::from_scalar(&d).expect("valid key")
}

pub fn settings() -> Settings {
    Settings {
        key: test_key(),
        platform: PlatformChoice::default(),
        convert_oci: false,
        allow_foreign_layers: false,
        schema1_cache_bytes: 1 << 20,
    }
}

/// A config with `n` non-empty history entries and `n` diff_ids.
pub fn config(n: usize) -> String {
    let history: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"created":"2024-01-02T03:04:0{i}Z","created_by":"step {i}"}}"#))
        .collect();
    let diff_ids: Vec<String> = (0..n)
        .map(|i| format!("\"sha256:{}\"", format!("{i}").repeat(64)))
        .collect();
    format!(
        r#"{{"architecture":"amd64","os":"linux","created":"2024-01-02T03:04:05Z","history":[{}],"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        history.join(","),
        diff_ids.join(",")
    )
}

/// A file's bytes as the mount serves them; a blob is checked against its digest first.
pub fn bytes(ns: &Namespace, path: &str) -> Vec<u8> {
    match ns
        .lookup(path)
        .unwrap_or_else(|e| panic!("lookup {path}: {e}"))
    {
        Node::File(Content::Bytes(b)) => b.to_vec(),
        Node::File(Content::Jws(doc)) => {
            let signed = doc.signed();
            assert_eq!(signed.len(), doc.len(), "{path}: size known before signing");
            signed.to_vec()
        }
        Node::File(Content::Blob { file, digest }) => {
            ns.verify_blob(&file, &digest)
                .unwrap_or_else(|e| panic!("verify {path}: {e}"));
            std::fs::read(&file.path).expect("read blob")
        }
        Node::Dir => panic!("{path} is a folder"),
        Node::Link(target) => panic!("{path} is a link to {target}"),
    }
}

//! The namespace over real on-disk stores: layout, content, and bad input.

mod common;

use common::*;
use registryfs::digest::Digest;
use registryfs::error::Error;
use registryfs::namespace::{Content, Namespace, Node};
use registryfs::schema1::EMPTY_LAYER_DIGEST;

fn names(ns: &Namespace, path: &str) -> Vec<String> {
    ns.list(path)
        .unwrap_or_else(|e| panic!("list {path}: {e}"))
        .into_iter()
        .map(|e| e.name)
        .collect()
}

fn error(ns: &Namespace, path: &str) -> Error {
    match ns.lookup(path) {
        Ok(_) => panic!("{path} should fail"),
        Err(e) => e,
    }
}

#[test]
fn schema2_tag_has_schema1_and_schema2_digest_path_only_stored_bytes() {
    let s = StoreBuilder::new();
    let d = s.image(
        "library/app",
        "latest",
        &config(2),
        &[b"layer-a", b"layer-b"],
        LAYER,
    );
    let ns = s.open(settings());
    assert_eq!(names(&ns, ""), ["library"]);
    assert_eq!(names(&ns, "library/app"), ["blobs", "manifests", "tags"]);
    assert_eq!(
        names(&ns, "library/app/manifests"),
        ["latest".to_string(), d.to_string()]
    );
    assert_eq!(
        names(&ns, "library/app/manifests/latest"),
        ["schema1", "schema2"]
    );
    assert_eq!(
        names(&ns, &format!("library/app/manifests/{d}")),
        ["schema2"]
    );
    let stored = bytes(&ns, &format!("library/app/manifests/{d}/schema2"));
    assert!(d.matches(&stored));
    assert_eq!(bytes(&ns, "library/app/manifests/latest/schema2"), stored);
    assert!(error(&ns, &format!("library/app/manifests/{d}/schema1")).is_not_found());
    let schema1 =
        String::from_utf8(bytes(&ns, "library/app/manifests/latest/schema1")).expect("utf-8");
    assert!(
        schema1.contains("\"name\": \"library/app\",\n   \"tag\": \"latest\""),
        "{schema1}"
    );
    assert!(schema1.contains("\"signatures\": ["), "{schema1}");
    assert_eq!(
        bytes(&ns, "library/app/tags/list"),
        b"{\"name\":\"library/app\",\"tags\":[\"latest\"]}\n"
    );
}

#[test]
fn a_manifest_linked_only_under_layers_is_served_as_registry_2_1_left_it() {
    let s = StoreBuilder::new();
    let manifest = s.image_manifest("old/app", &config(1), &[b"layer"], LAYER, SCHEMA2);
    // No revision link: registry 2.1.0 linked manifests as layers.
    let d = s.layer("old/app", manifest.as_bytes());
    s.tag("old/app", "latest", &d);
    let ns = s.open(settings());
    assert_eq!(
        bytes(&ns, "old/app/manifests/latest/schema2"),
        manifest.as_bytes()
    );
    assert_eq!(
        bytes(&ns, &format!("old/app/manifests/{d}/schema2")),
        manifest.as_bytes()
    );
}

#[test]
fn schema1_is_deterministic_for_a_key() {
    let s = StoreBuilder::new();
    s.image("app", "v1", &config(1), &[b"x"], LAYER);
    let first = bytes(&s.open(settings()), "app/manifests/v1/schema1");
    let second = bytes(&s.open(settings()), "app/manifests/v1/schema1");
    assert_eq!(first, second);
}

#[test]
fn manifest_list_tag_offers_the_platform_child() {
    let s = StoreBuilder::new();
    let arm = s.manifest(
        "multi",
        s.image_manifest("multi", &config(1), &[b"arm"], LAYER, SCHEMA2)
            .as_bytes(),
    );
    let amd = s.manifest(
        "multi",
        s.image_manifest("multi", &config(1), &[b"amd"], LAYER, SCHEMA2)
            .as_bytes(),
    );
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"{LIST}","manifests":[{{"mediaType":"{SCHEMA2}","digest":"{arm}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},{{"mediaType":"{SCHEMA2}","digest":"{amd}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
    );
    let list_digest = s.manifest("multi", list.as_bytes());
    s.tag("multi", "latest", &list_digest);
    let ns = s.open(settings());
    assert_eq!(
        names(&ns, "multi/manifests/latest"),
        ["list", "schema1", "schema2"]
    );
    assert_eq!(bytes(&ns, "multi/manifests/latest/list"), list.as_bytes());
    assert!(amd.matches(&bytes(&ns, "multi/manifests/latest/schema2")));
    assert_eq!(
        names(&ns, &format!("multi/manifests/{list_digest}")),
        ["list"]
    );

    // The digests a web server sends by tag: stored, the child's, the payload's.
    let link = |kind: &str| match ns.lookup(&format!("multi/manifests/latest/digest/{kind}")) {
        Ok(Node::Link(target)) => target.to_string(),
        other => panic!("{kind}: {other:?}"),
    };
    assert_eq!(link("list"), format!("list@{list_digest}"));
    assert_eq!(link("revision"), format!("revision@{list_digest}"));
    assert_eq!(link("schema2"), format!("schema2@{amd}"));
    let schema1 = bytes(&ns, "multi/manifests/latest/schema1");
    let payload_digest = link("schema1")["schema1@".len()..].to_string();
    assert_ne!(
        Digest::parse(&payload_digest).expect("digest"),
        Digest::of(&schema1)
    );
    assert_eq!(
        bytes(
            &ns,
            &format!("multi/manifests/latest/digest/schema1@{payload_digest}")
        ),
        payload_digest.as_bytes()
    );
    // Never by digest; not listed.
    // A target carries the digest of its name only; the link is the state.
    assert_eq!(
        bytes(
            &ns,
            &format!("multi/manifests/latest/digest/schema2@{list_digest}")
        ),
        list_digest.as_str().as_bytes()
    );
    error(&ns, &format!("multi/manifests/{payload_digest}/schema1"));
    error(&ns, &format!("multi/manifests/{list_digest}/digest/list"));
    error(&ns, "multi/manifests/latest/digest/oci");
    // If-None-Match by existence: only the tag's revision, not a child's digest.
    assert!(bytes(
        &ns,
        &format!("multi/manifests/latest/digest/revision={list_digest}")
    )
    .is_empty());
    error(
        &ns,
        &format!("multi/manifests/latest/digest/revision={amd}"),
    );
    error(
        &ns,
        &format!("multi/manifests/latest/digest/revision={payload_digest}"),
    );
    error(
        &ns,
        &format!("multi/manifests/{list_digest}/digest/revision={list_digest}"),
    );
    assert!(names(&ns, "multi/manifests/latest/digest").is_empty());

    let mut arm_settings = settings();
    arm_settings.platform = "linux/arm64".parse().expect("platform");
    let ns = s.open(arm_settings);
    assert!(arm.matches(&bytes(&ns, "multi/manifests/latest/schema2")));

    let mut none = settings();
    none.platform = "windows/amd64".parse().expect("platform");
    assert_eq!(names(&s.open(none), "multi/manifests/latest"), ["list"]);
}

#[test]
fn nested_repositories_are_nested_folders() {
    let s = StoreBuilder::new();
    s.image("a", "t", &config(1), &[b"1"], LAYER);
    s.image("a/b/c", "t", &config(1), &[b"2"], LAYER);
    let ns = s.open(settings());
    assert_eq!(names(&ns, "a"), ["b", "blobs", "manifests", "tags"]);
    assert_eq!(names(&ns, "a/b"), ["c"]);
    assert_eq!(names(&ns, "a/b/c/manifests/t"), ["schema1", "schema2"]);
    let schema1 = String::from_utf8(bytes(&ns, "a/b/c/manifests/t/schema1")).expect("utf-8");
    assert!(schema1.contains("\"name\": \"a/b/c\""));
}

#[test]
fn blobs_are_served_verified_and_the_empty_layer_is_everywhere() {
    let s = StoreBuilder::new();
    s.image("app", "t", &config(1), &[b"data"], LAYER);
    let ns = s.open(settings());
    let layer = Digest::of(b"data");
    assert_eq!(bytes(&ns, &format!("app/blobs/{layer}")), b"data");
    assert!(names(&ns, "app/blobs").contains(&EMPTY_LAYER_DIGEST.to_string()));
    let empty = bytes(&ns, &format!("app/blobs/{EMPTY_LAYER_DIGEST}"));
    assert!(Digest::parse(EMPTY_LAYER_DIGEST)
        .expect("digest")
        .matches(&empty));

    // Corrupt the layer in place: it must not be served, everything else still is.
    std::fs::write(s.blob_path(&layer), b"DATA").expect("corrupt");
    let Node::File(Content::Blob { file, digest }) =
        ns.lookup(&format!("app/blobs/{layer}")).expect("lookup")
    else {
        panic!("a blob")
    };
    let err = ns
        .verify_blob(&file, &digest)
        .expect_err("mismatch")
        .to_string();
    assert!(
        err.contains("/data") && err.contains("does not hash"),
        "{err}"
    );
    assert_eq!(names(&ns, "app/manifests/t"), ["schema1", "schema2"]);
}

#[test]
fn bad_store_content_gives_errors_naming_the_file() {
    let s = StoreBuilder::new();
    s.image("good", "t", &config(1), &[b"ok"], LAYER);

    // Corrupt manifest JSON (content still hashes to its digest).
    let corrupt = s.manifest("bad", b"{not json");
    s.tag("bad", "corrupt", &corrupt);
    // A tag link with a trailing newline, as distribution refuses it.
    let link = s.tag("bad", "newline", &corrupt);
    std::fs::write(&link, format!("{corrupt}\n")).expect("write");
    // A stored manifest whose bytes do not hash to its digest.
    let good_manifest = s.image_manifest("bad", &config(1), &[b"m"], LAYER, SCHEMA2);
    let mismatch = s.manifest("bad", good_manifest.as_bytes());
    std::fs::write(
        s.blob_path(&mismatch),
        good_manifest.replace("\"size\"", "\"Size\""),
    )
    .expect("write");
    s.tag("bad", "mismatch", &mismatch);
    // A schema2 manifest whose config blob is missing.
    let no_config = s.manifest(
        "bad",
        format!(r#"{{"schemaVersion":2,"mediaType":"{SCHEMA2}","config":{{"digest":"sha256:{}"}},"layers":[]}}"#, "f".repeat(64))
            .as_bytes(),
    );
    s.tag("bad", "noconfig", &no_config);

    let ns = s.open(settings());
    let e = error(&ns, "bad/manifests/corrupt/schema2").to_string();
    assert!(
        e.contains(&format!("{}/data", corrupt.encoded())) && e.contains("invalid JSON"),
        "{e}"
    );
    let e = error(&ns, "bad/manifests/newline/schema2").to_string();
    assert!(
        e.contains("newline/current/link") && e.contains("bad link"),
        "{e}"
    );
    let e = error(&ns, "bad/manifests/mismatch/schema2").to_string();
    assert!(e.contains("/data") && e.contains("does not hash"), "{e}");
    assert_eq!(
        names(&ns, "bad/manifests/noconfig"),
        ["schema2"],
        "no schema1 without a config"
    );
    // Everything else keeps serving.
    assert_eq!(names(&ns, "good/manifests/t"), ["schema1", "schema2"]);
}

#[test]
fn traversal_and_escaping_symlinks_are_refused() {
    let s = StoreBuilder::new();
    s.image("app", "t", &config(1), &[b"x"], LAYER);
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(outside.path().join("_manifests")).expect("mkdir");
    std::os::unix::fs::symlink(outside.path(), s.v2().join("repositories/escape"))
        .expect("symlink");
    let ns = s.open(settings());
    for path in [
        "../etc",
        "app/../../x",
        "app/manifests/../../../etc/passwd",
        "/etc/passwd",
    ] {
        assert!(ns.lookup(path).is_err(), "{path}");
    }
    let e = error(&ns, "escape/tags").to_string();
    assert!(e.contains("outside the store"), "{e}");
    assert_eq!(names(&ns, ""), ["app"], "the escaping link is not listed");
}

#[test]
fn foreign_layers_convert_only_when_allowed() {
    let s = StoreBuilder::new();
    s.image("win", "t", &config(1), &[b"foreign"], FOREIGN);
    assert_eq!(names(&s.open(settings()), "win/manifests/t"), ["schema2"]);
    let mut allow = settings();
    allow.allow_foreign_layers = true;
    assert_eq!(
        names(&s.open(allow), "win/manifests/t"),
        ["schema1", "schema2"]
    );
}

#[test]
fn oci_manifests_convert_only_with_the_flag() {
    let s = StoreBuilder::new();
    let m = s.image_manifest(
        "oci",
        &config(1),
        &[b"o"],
        "application/vnd.oci.image.layer.v1.tar+gzip",
        OCI,
    );
    let d = s.manifest("oci", m.as_bytes());
    s.tag("oci", "t", &d);
    assert_eq!(names(&s.open(settings()), "oci/manifests/t"), ["oci"]);
    let mut convert = settings();
    convert.convert_oci = true;
    assert_eq!(
        names(&s.open(convert), "oci/manifests/t"),
        ["oci", "schema1"]
    );
}

#[test]
fn oci_layout_tags_come_from_ref_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("myimage");
    std::fs::create_dir_all(root.join("blobs/sha256")).expect("mkdir");
    let put = |bytes: &[u8]| {
        let d = Digest::of(bytes);
        std::fs::write(root.join("blobs/sha256").join(d.encoded()), bytes).expect("write");
        d
    };
    let cfg = config(1);
    let config_digest = put(cfg.as_bytes());
    let layer = put(b"layer");
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{SCHEMA2}","config":{{"digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"{LAYER}","digest":"{layer}","size":5}}]}}"#,
        cfg.len()
    );
    let m = put(manifest.as_bytes());
    std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{SCHEMA2}","digest":"{m}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}},{{"mediaType":"{SCHEMA2}","digest":"{m}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"example.com/team/tool:2.0"}}}}]}}"#,
        manifest.len(),
        manifest.len()
    );
    std::fs::write(root.join("index.json"), index).expect("write");

    let store = registryfs::store::open(&root, &Default::default()).expect("opens");
    let ns = Namespace::new(store, settings());
    assert_eq!(names(&ns, ""), ["example.com", "myimage"]);
    assert_eq!(
        bytes(&ns, "myimage/tags/list"),
        b"{\"name\":\"myimage\",\"tags\":[\"v1\"]}\n"
    );
    assert_eq!(names(&ns, "myimage/manifests/v1"), ["schema1", "schema2"]);
    assert_eq!(
        names(&ns, "example.com/team/tool/manifests/2.0"),
        ["schema1", "schema2"]
    );
    assert_eq!(bytes(&ns, &format!("myimage/blobs/{layer}")), b"layer");
}

#[test]
fn a_blob_swapped_for_an_escaping_symlink_after_lookup_is_refused() {
    let s = StoreBuilder::new();
    s.image("app", "t", &config(1), &[b"secret-shaped"], LAYER);
    let ns = s.open(settings());
    let layer = Digest::of(b"secret-shaped");
    let Node::File(Content::Blob { file, digest }) =
        ns.lookup(&format!("app/blobs/{layer}")).expect("lookup")
    else {
        panic!("a blob")
    };
    // Same bytes outside the store: the digest check alone would pass.
    let outside = tempfile::tempdir().expect("tempdir");
    let target = outside.path().join("data");
    std::fs::write(&target, b"secret-shaped").expect("write");
    std::fs::remove_file(s.blob_path(&layer)).expect("rm");
    std::os::unix::fs::symlink(&target, s.blob_path(&layer)).expect("symlink");
    let err = ns
        .open_blob(&file, &digest)
        .expect_err("escapes")
        .to_string();
    assert!(err.contains("outside the store"), "{err}");
}

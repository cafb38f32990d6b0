//! Malformed stores: every bad file gives an error that names it and says why, every
//! other path keeps serving, and nothing is ever served under a digest it does not hash
//! to. Also the `ls`/`cat` CLI on such a store. No FUSE.

mod common;

use common::*;
use registryfs::digest::Digest;
use registryfs::error::Error;
use registryfs::manifest::{self, ManifestKind};
use registryfs::namespace::{Content, Location, Namespace, Node, Reference};
use registryfs::store::{self, OpenOptions, Store};
use registryfs::verify::{self, Problem, Report};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

// ---------------------------------------------------------------------------------
// Helpers: a log capture, a namespace walker that checks what is served.

/// Captures warnings so that cases that only log (skipped names) can be checked.
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            self.0.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn logged() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(capture).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Warn);
        capture
    })
}

/// Warnings logged so far that mention `needle` (tests run in parallel: pick a needle
/// unique to the test, such as its store's path).
fn warnings_about(needle: &str) -> Vec<String> {
    logged()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.contains(needle))
        .cloned()
        .collect()
}

fn open(root: &Path) -> (Arc<dyn Store>, Namespace) {
    logged();
    let store = store::open(root, &OpenOptions::default()).expect("store opens");
    (store.clone(), Namespace::new(store, settings()))
}

fn served(ns: &Namespace, path: &str) -> Result<Vec<u8>, Error> {
    match ns.lookup(path)? {
        Node::File(Content::Bytes(b)) => Ok(b.to_vec()),
        Node::File(Content::Jws(doc)) => Ok(doc.signed().to_vec()),
        Node::File(Content::Blob { file, digest }) => {
            ns.verify_blob(&file, &digest)?;
            Ok(std::fs::read(&file.path).expect("read verified blob"))
        }
        Node::Dir => panic!("{path} is a folder"),
        Node::Link(target) => panic!("{path} is a link to {target}"),
    }
}

fn err(ns: &Namespace, path: &str) -> String {
    match served(ns, path) {
        Ok(_) => panic!("{path} must fail"),
        Err(e) => e.to_string(),
    }
}

fn names(ns: &Namespace, path: &str) -> Vec<String> {
    ns.list(path)
        .unwrap_or_else(|e| panic!("list {path}: {e}"))
        .into_iter()
        .map(|e| e.name)
        .collect()
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "{msg:?} does not mention {p:?}");
    }
}

/// The payload a signed schema1 document signs (libtrust's formatLength/formatTail).
fn signed_payload(doc: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let v: serde_json::Value = serde_json::from_slice(doc).expect("signed schema1 is JSON");
    let protected = v["signatures"][0]["protected"].as_str().expect("protected");
    let header: serde_json::Value =
        serde_json::from_slice(&b64.decode(protected).expect("base64")).expect("header");
    let len = header["formatLength"].as_u64().expect("formatLength") as usize;
    let tail = b64
        .decode(header["formatTail"].as_str().expect("formatTail"))
        .expect("tail");
    let mut payload = doc[..len].to_vec();
    payload.extend_from_slice(&tail);
    payload
}

/// Walks everything the namespace lists, checks each file it serves (digest paths hash
/// to their digest, manifests are of the kind their name says) and returns the files
/// that served and the errors met.
fn walk(store: &Arc<dyn Store>, ns: &Namespace) -> (BTreeSet<String>, Vec<String>) {
    let mut ok = BTreeSet::new();
    let mut errors = Vec::new();
    let mut queue = vec![String::new()];
    while let Some(path) = queue.pop() {
        assert!(ok.len() + errors.len() < 10_000, "walk does not end");
        let node = match ns.lookup(&path) {
            Ok(n) => n,
            Err(e) => {
                errors.push(format!("{path}: {e}"));
                continue;
            }
        };
        if let Node::Dir = node {
            match ns.list(&path) {
                Ok(entries) => {
                    for e in entries {
                        queue.push(format!("{path}/{}", e.name).trim_start_matches('/').into());
                    }
                }
                Err(e) => errors.push(format!("{path}/: {e}")),
            }
            continue;
        }
        let bytes = match served(ns, &path) {
            Ok(b) => b,
            Err(e) => {
                errors.push(format!("{path}: {e}"));
                continue;
            }
        };
        match Location::parse(store.as_ref(), &path).expect("served paths parse") {
            Location::Blob(_, d) => assert!(d.matches(&bytes), "{path} served other bytes"),
            Location::ManifestFile(_, reference, kind) => {
                let stored = if kind == ManifestKind::Schema1 {
                    signed_payload(&bytes)
                } else {
                    bytes.clone()
                };
                if let Reference::Digest(d) = &reference {
                    assert!(d.matches(&stored), "{path} served other bytes");
                }
                let parsed = manifest::parse(&stored).expect("served manifests parse");
                assert_eq!(parsed.kind, kind, "{path}");
            }
            Location::TagList(_) => {
                serde_json::from_slice::<serde_json::Value>(&bytes).expect("tag list JSON");
            }
            other => panic!("{path}: a file at {other:?}"),
        }
        ok.insert(path);
    }
    (ok, errors)
}

/// A healthy repository `good` (a schema2 tag and a list tag) that every case keeps
/// serving; returns the paths that must serve.
fn good_repo(s: &StoreBuilder) -> Vec<String> {
    let d = s.image("good", "t", &config(2), &[b"g1", b"g2"], LAYER);
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"{LIST}","manifests":[{{"mediaType":"{SCHEMA2}","digest":"{d}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
    );
    let l = s.manifest("good", list.as_bytes());
    s.tag("good", "multi", &l);
    let mut paths: Vec<String> = [
        "good/tags/list",
        "good/manifests/t/schema1",
        "good/manifests/t/schema2",
        "good/manifests/multi/list",
        "good/manifests/multi/schema1",
        "good/manifests/multi/schema2",
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    paths.push(format!("good/manifests/{d}/schema2"));
    paths.push(format!("good/manifests/{l}/list"));
    for b in [&b"g1"[..], b"g2", config(2).as_bytes()] {
        paths.push(format!("good/blobs/{}", Digest::of(b)));
    }
    paths
}

fn assert_good_serves(store: &Arc<dyn Store>, ns: &Namespace, good: &[String]) {
    let (ok, _) = walk(store, ns);
    for p in good {
        assert!(ok.contains(p), "{p} no longer serves");
        served(ns, p).unwrap_or_else(|e| panic!("{p}: {e}"));
    }
}

/// A finding `verify` must report: of `problem`, in repository `repo` ("": the store's
/// blobs), its subject or detail mentioning each of `needles`.
struct Expected {
    problem: Problem,
    repo: &'static str,
    needles: Vec<String>,
}

fn expect(problem: Problem, repo: &'static str, needles: &[&str]) -> Expected {
    Expected {
        problem,
        repo,
        needles: needles.iter().map(|n| n.to_string()).collect(),
    }
}

/// `registryfs verify` on the store reports each expected finding; the healthy `good`
/// repository has none; the verdict follows the faults.
fn assert_verify_finds(root: &Path, expected: &[Expected]) -> Report {
    let (_, ns) = open(root);
    let options = verify::Options {
        repositories: Vec::new(),
        threads: 2,
    };
    let report = verify::verify(&ns, "store", &options, &mut |_| {}).expect("verify runs");
    let text = report.text();
    for Expected {
        problem,
        repo,
        needles,
    } in expected
    {
        assert!(
            report.findings.iter().any(|f| f.problem == *problem
                && f.repository.as_deref().unwrap_or("") == *repo
                && needles
                    .iter()
                    .all(|n| f.subject.contains(n.as_str()) || f.detail.contains(n.as_str()))),
            "no {problem:?} in {repo} mentioning {needles:?}:\n{text}"
        );
    }
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.repository.as_deref() == Some("good")),
        "{text}"
    );
    let faults = expected.iter().any(|e| e.problem.is_fault());
    assert_eq!(report.sound, !faults, "{text}");
    report
}

fn manifest_json(config: &Digest, layers: &[&Digest]) -> String {
    let layers: Vec<String> = layers
        .iter()
        .map(|d| format!(r#"{{"mediaType":"{LAYER}","size":1,"digest":"{d}"}}"#))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{SCHEMA2}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":1,"digest":"{config}"}},"layers":[{}]}}"#,
        layers.join(",")
    )
}

/// `/proc/thread-self/io`'s `rchar`: bytes this thread has read through read(2), if the
/// kernel keeps per-task I/O accounting.
fn thread_rchar() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/thread-self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------------
// Manifests and configs.

#[test]
fn bad_manifest_documents() {
    let s = StoreBuilder::new();
    let good = good_repo(&s);
    let valid = s.image_manifest("bad", &config(1), &[b"l"], LAYER, SCHEMA2);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            valid.as_bytes()[..valid.len() / 2].to_vec(),
            "invalid JSON",
        ),
        (
            "garbage",
            b"\x00\xffGIF89a garbage".to_vec(),
            "invalid JSON",
        ),
        ("empty", Vec::new(), "invalid JSON"),
        ("array", b"[1,2]".to_vec(), "must be a JSON object"),
        (
            "mediatype",
            valid.replace(SCHEMA2, "text/plain").into_bytes(),
            "unrecognized manifest content type \"text/plain\"",
        ),
        (
            "v3",
            valid
                .replace("\"schemaVersion\":2", "\"schemaVersion\":3")
                .into_bytes(),
            "unrecognized manifest schemaVersion 3",
        ),
        (
            "layers-type",
            valid
                .replace("\"layers\":[", "\"layers\":{\"x\":[")
                .replace("]}", "]}}")
                .into_bytes(),
            "\"layers\" must be an array",
        ),
    ];
    let mut digests = Vec::new();
    for (tag, bytes, _) in &cases {
        let d = s.manifest("bad", bytes);
        s.tag("bad", tag, &d);
        digests.push(d);
    }
    let (store, ns) = open(s.root());
    for ((tag, _, reason), d) in cases.iter().zip(&digests) {
        let data = format!("{}/data", d.encoded());
        for path in [
            format!("bad/manifests/{tag}/schema2"),
            format!("bad/manifests/{d}/schema2"),
        ] {
            assert_mentions(&err(&ns, &path), &[&data, reason]);
        }
        let e = ns
            .list(&format!("bad/manifests/{tag}"))
            .expect_err("listing a bad manifest's folder fails")
            .to_string();
        assert_mentions(&e, &[&data, reason]);
    }
    assert_good_serves(&store, &ns, &good);
    let expected: Vec<Expected> = cases
        .iter()
        .zip(&digests)
        .map(|((_, _, reason), d)| {
            let data = format!("{}/data", d.encoded());
            expect(Problem::InvalidContent, "bad", &[&data, reason])
        })
        .collect();
    assert_verify_finds(s.root(), &expected);
}

#[test]
fn bad_configs_refuse_schema1_naming_the_config() {
    let s = StoreBuilder::new();
    let good = good_repo(&s);
    let layer = s.layer("bad", b"layer");
    let mut tags = Vec::new();
    for (tag, config) in [
        ("truncated", &config(1)[..40]),
        ("garbage", "\u{1}\u{2}not json"),
        ("notobject", "[]"),
        (
            "history-type",
            r#"{"history":{},"rootfs":{"diff_ids":["x"]}}"#,
        ),
        (
            "bad-time",
            r#"{"history":[{"created":"yesterday"}],"rootfs":{"diff_ids":["x"]}}"#,
        ),
        ("no-history", r#"{"rootfs":{"diff_ids":["x"]}}"#),
    ] {
        let c = s.layer("bad", config.as_bytes());
        let m = s.manifest("bad", manifest_json(&c, &[&layer]).as_bytes());
        s.tag("bad", tag, &m);
        tags.push((tag, c));
    }
    // A config whose data is there but not linked into the repository, and one linked
    // whose data is gone.
    let unlinked = s.blob(config(1).as_bytes());
    let m = s.manifest("bad", manifest_json(&unlinked, &[&layer]).as_bytes());
    s.tag("bad", "unlinked", &m);
    let gone = s.layer("bad", config(1).replace("amd64", "arm64").as_bytes());
    std::fs::remove_file(s.blob_path(&gone)).expect("rm");
    let m = s.manifest("bad", manifest_json(&gone, &[&layer]).as_bytes());
    s.tag("bad", "gone", &m);

    let (store, ns) = open(s.root());
    for (tag, c) in &tags {
        assert_eq!(names(&ns, &format!("bad/manifests/{tag}")), ["schema2"]);
        let e = err(&ns, &format!("bad/manifests/{tag}/schema1"));
        assert_mentions(&e, &[&format!("{}/data", c.encoded())]);
    }
    let e = err(&ns, "bad/manifests/unlinked/schema1");
    assert_mentions(&e, &[&format!("config blob {unlinked} is not in bad")]);
    let e = err(&ns, "bad/manifests/gone/schema1");
    assert_mentions(
        &e,
        &[
            &format!("_layers/sha256/{}/link", gone.encoded()),
            "missing",
        ],
    );
    assert_good_serves(&store, &ns, &good);
    let mut expected: Vec<Expected> = tags
        .iter()
        .map(|(tag, c)| {
            let data = format!("{}/data", c.encoded());
            expect(Problem::NoSchema1, "bad", &[&format!("tag {tag}"), &data])
        })
        .collect();
    expected.push(expect(
        Problem::MissingReference,
        "bad",
        &[&format!("names blob {unlinked}, which is not in bad")],
    ));
    let link = format!("_layers/sha256/{}/link", gone.encoded());
    expected.push(expect(Problem::DanglingLink, "bad", &[&link, "missing"]));
    assert_verify_finds(s.root(), &expected);
}

#[test]
fn list_whose_platform_manifest_is_missing() {
    let s = StoreBuilder::new();
    let good = good_repo(&s);
    let absent = Digest::of(b"never stored");
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"{LIST}","manifests":[{{"mediaType":"{SCHEMA2}","digest":"{absent}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
    );
    let l = s.manifest("bad", list.as_bytes());
    s.tag("bad", "list", &l);
    // Its entry's revision link is there but the data is not.
    let half = s.manifest("bad", b"{\"schemaVersion\":2}");
    std::fs::remove_file(s.blob_path(&half)).expect("rm");
    let list2 = list.replace(absent.as_str(), half.as_str());
    let l2 = s.manifest("bad", list2.as_bytes());
    s.tag("bad", "list2", &l2);

    let (store, ns) = open(s.root());
    assert_eq!(names(&ns, "bad/manifests/list"), ["list"]);
    assert_eq!(
        served(&ns, "bad/manifests/list/list").unwrap(),
        list.as_bytes()
    );
    let e = err(&ns, "bad/manifests/list/schema1");
    assert_mentions(&e, &["linux/amd64 entry", absent.as_str(), "is not in bad"]);
    assert_eq!(names(&ns, "bad/manifests/list2"), ["list"]);
    let e = err(&ns, "bad/manifests/list2/schema2");
    assert!(e.starts_with("not found"), "{e}");
    let e = err(&ns, "bad/manifests/list2/schema1");
    assert_mentions(&e, &[&format!("{}/data", half.encoded()), "missing"]);
    assert_good_serves(&store, &ns, &good);
    let revision = format!("revisions/sha256/{}/link", half.encoded());
    assert_verify_finds(
        s.root(),
        &[
            expect(
                Problem::MissingReference,
                "bad",
                &[
                    &format!("manifest {l}"),
                    &format!("child manifest {absent}"),
                ],
            ),
            expect(Problem::DanglingLink, "bad", &[&revision, "missing"]),
            expect(
                Problem::NoSchema1,
                "bad",
                &["tag list", "linux/amd64 entry"],
            ),
        ],
    );
}

#[test]
fn deep_nesting_is_handled_without_stack_overflow() {
    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }
    let s = StoreBuilder::new();
    let good = good_repo(&s);
    // Total depth counts the enclosing object: 10,000 is Go's limit and accepted.
    let layer = s.layer("deep", b"layer");
    let mut cases = Vec::new();
    for depth in [10_000, 10_001] {
        let cfg = config(1).replacen('{', &format!("{{\"deep\":{},", nested(depth - 1)), 1);
        let c = s.layer("deep", cfg.as_bytes());
        let m = s.manifest("deep", manifest_json(&c, &[&layer]).as_bytes());
        s.tag("deep", &format!("config{depth}"), &m);
        let doc = manifest_json(&c, &[&layer]).replacen(
            '{',
            &format!("{{\"deep\":{},", nested(depth - 1)),
            1,
        );
        let m = s.manifest("deep", doc.as_bytes());
        s.tag("deep", &format!("manifest{depth}"), &m);
        cases.push((depth, c, m));
    }
    let root = s.root().to_path_buf();
    // 256 KiB of stack: recursion per level would need far more for 10,000 levels.
    let thread = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let store = store::open(&root, &OpenOptions::default()).expect("opens");
            let ns = Namespace::new(store, settings());
            let mut out = Vec::new();
            for kind in ["schema1", "schema2"] {
                for depth in [10_000, 10_001] {
                    for what in ["config", "manifest"] {
                        let path = format!("deep/manifests/{what}{depth}/{kind}");
                        out.push((path.clone(), served(&ns, &path).map_err(|e| e.to_string())));
                    }
                }
            }
            out
        })
        .expect("spawn");
    let results = thread.join().expect("no stack overflow");
    let get = |p: &str| {
        results
            .iter()
            .find(|(path, _)| path == p)
            .map(|(_, r)| r.clone())
            .expect(p)
    };
    let (_, c10001, m10001) = &cases[1];
    // 10,000 levels: Go accepts, so do we: schema1 is generated, manifests served.
    let schema1 = get("deep/manifests/config10000/schema1").expect("converts");
    assert!(String::from_utf8(schema1).unwrap().contains("[[[[[[[["));
    get("deep/manifests/manifest10000/schema2").expect("serves");
    get("deep/manifests/manifest10000/schema1").expect("converts");
    // 10,001: refused, naming the file.
    let e = get("deep/manifests/config10001/schema1").expect_err("too deep");
    assert_mentions(
        &e,
        &[&format!("{}/data", c10001.encoded()), "exceeded max depth"],
    );
    let e = get("deep/manifests/manifest10001/schema2").expect_err("too deep");
    assert_mentions(
        &e,
        &[&format!("{}/data", m10001.encoded()), "exceeded max depth"],
    );
    let (store, ns) = open(s.root());
    assert_good_serves(&store, &ns, &good);
    let config_data = format!("{}/data", c10001.encoded());
    let manifest_data = format!("{}/data", m10001.encoded());
    assert_verify_finds(
        s.root(),
        &[
            expect(
                Problem::NoSchema1,
                "deep",
                &["tag config10001", &config_data, "exceeded max depth"],
            ),
            expect(
                Problem::InvalidContent,
                "deep",
                &[&manifest_data, "exceeded max depth"],
            ),
        ],
    );
}

#[test]
fn a_one_gib_manifest_is_refused_without_reading_it() {
    let s = StoreBuilder::new();
    let good = good_repo(&s);
    // Any digest: the size check comes before hashing.
    let d = s.manifest("big", b"placeholder");
    let data = s.blob_path(&d);
    let f = std::fs::File::create(&data).expect("create");
    f.set_len(1 << 30).expect("sparse 1 GiB");
    s.tag("big", "t", &d);
    let (store, ns) = open(s.root());
    let before = thread_rchar();
    let started = std::time::Instant::now();
    let e = err(&ns, "big/manifests/t/schema2");
    let read = thread_rchar()
        .zip(before)
        .map(|(after, before)| after - before);
    assert_mentions(
        &e,
        &[
            &format!("{}/data", d.encoded()),
            "1073741824 bytes",
            "limit",
        ],
    );
    match read {
        // Only the link files (a few hundred bytes) are read, not the document.
        Some(read) => assert!(read < 64 * 1024, "read {read} bytes of a 1 GiB file"),
        None => eprintln!("no /proc/thread-self/io: bytes read not measured"),
    }
    assert!(started.elapsed().as_secs() < 2);
    assert_good_serves(&store, &ns, &good);

    // Exactly 4 MiB is allowed (registry 2.8.2's limit is inclusive), one more byte is
    // not. (Own store: walking a 4 MiB document is slow in debug builds.)
    let s = StoreBuilder::new();
    let head = format!(r#"{{"schemaVersion":2,"mediaType":"{SCHEMA2}","x":""#);
    let at_limit = format!("{head}{}\"}}", " ".repeat((4 << 20) - head.len() - 2));
    assert_eq!(at_limit.len(), 4 << 20);
    let d = s.manifest("big", at_limit.as_bytes());
    s.tag("big", "limit", &d);
    let over = format!("{at_limit} ");
    let d2 = s.manifest("big", over.as_bytes());
    s.tag("big", "over", &d2);
    let (_, ns) = open(s.root());
    assert_eq!(
        served(&ns, "big/manifests/limit/schema2").unwrap().len(),
        4 << 20
    );
    let e = err(&ns, "big/manifests/over/schema2");
    assert_mentions(&e, &[&format!("{}/data", d2.encoded()), "4194305 bytes"]);
}

#[test]
fn a_hostile_config_does_not_grow_the_schema1_cache_past_its_bytes() {
    // 4 MiB of `<` (the registry's limit) becomes `\u003c` in v1Compatibility and
    // `\\u003c` in the signed document: 28 MiB from one tag.
    let s = StoreBuilder::new();
    let good = good_repo(&s);
    let plain = config(1);
    let hostile = format!(
        "{},\"x\":\"{}\"}}",
        &plain[..plain.len() - 1],
        "<".repeat((4 << 20) - plain.len() - 8)
    );
    assert!(hostile.len() <= 4 << 20, "{}", hostile.len());
    s.image("hostile", "latest", &hostile, &[b"x"], LAYER);
    let (store, ns) = open(s.root());
    let bound = settings().schema1_cache_bytes;
    // (Converted once: 28 MiB of JSON takes half a minute in a debug build.)
    let doc = served(&ns, "hostile/manifests/latest/schema1").expect("converts");
    assert!(doc.len() > 7 * (4 << 20) - (1 << 20), "{} bytes", doc.len());
    assert!(
        ns.schema1_cache_bytes() <= bound,
        "{} bytes kept",
        ns.schema1_cache_bytes()
    );
    assert_good_serves(&store, &ns, &good);
    assert!(ns.schema1_cache_bytes() > 0, "the good documents are kept");
    assert!(ns.schema1_cache_bytes() <= bound);
}

// ---------------------------------------------------------------------------------
// Links and tags.

#[test]
fn bad_link_files() {
    let s = StoreBuilder::new();
    let good = good_repo(&s);
    let m = s.image("bad", "base", &config(1), &[b"x"], LAYER);
    let other = Digest::of(b"other");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("newline", format!("{m}\n").into_bytes(), "bad link"),
        (
            "garbage",
            b"\xff\xfe\x00garbage".to_vec(),
            "link is not UTF-8",
        ),
        ("text", b"latest".to_vec(), "bad link"),
        ("empty", Vec::new(), "bad link"),
        (
            "upper",
            m.as_str()
                .to_uppercase()
                .replace("SHA256", "sha256")
                .into_bytes(),
            "bad link",
        ),
        (
            "huge",
            vec![b'a'; 1 << 20],
            "1048576 bytes is more than the 1024-byte limit",
        ),
    ];
    for (tag, bytes, _) in &cases {
        let link = s.tag("bad", tag, &m);
        std::fs::write(&link, bytes).expect("write link");
    }
    // A tag naming a manifest whose revision link is there but whose data is gone.
    let gone = s.manifest("bad", b"{\"schemaVersion\":2,\"gone\":1}");
    std::fs::remove_file(s.blob_path(&gone)).expect("rm");
    s.tag("bad", "dangling", &gone);
    // A revision link (and a layer link) whose content names another digest.
    let alias = s.manifest("bad", b"{\"schemaVersion\":1}");
    let alias_link = s.link("bad", "_manifests/revisions", &alias);
    std::fs::write(&alias_link, m.as_str()).expect("write");
    s.tag("bad", "alias", &alias);
    let layer = Digest::of(b"x");
    let layer_link = s.link("bad", "_layers", &layer);
    std::fs::write(&layer_link, other.as_str()).expect("write");
    // A tag folder without current/link.
    std::fs::create_dir_all(
        s.v2()
            .join("repositories/bad/_manifests/tags/nolink/index/sha256"),
    )
    .expect("mkdir");

    let (store, ns) = open(s.root());
    for (tag, _, reason) in &cases {
        let e = err(&ns, &format!("bad/manifests/{tag}/schema2"));
        assert_mentions(&e, &[&format!("tags/{tag}/current/link"), reason]);
        let e = ns
            .lookup(&format!("bad/manifests/{tag}"))
            .expect_err("bad tag folder")
            .to_string();
        assert_mentions(&e, &[&format!("tags/{tag}/current/link"), reason]);
    }
    let e = err(&ns, "bad/manifests/dangling/schema2");
    assert_mentions(
        &e,
        &[
            &format!("revisions/sha256/{}/link", gone.encoded()),
            &format!("{}/data", gone.encoded()),
            "missing",
        ],
    );
    let e = err(&ns, "bad/manifests/alias/schema1");
    assert_mentions(
        &e,
        &[
            &format!("revisions/sha256/{}/link", alias.encoded()),
            &format!("link names {m}, not {alias}"),
        ],
    );
    let e = err(&ns, &format!("bad/blobs/{layer}"));
    assert_mentions(
        &e,
        &[
            &format!("_layers/sha256/{}/link", layer.encoded()),
            &format!("link names {other}"),
        ],
    );
    let e = err(&ns, "bad/manifests/nolink/schema2");
    assert_mentions(&e, &["tags/nolink/current/link", "no current/link"]);
    // The tag list shows every tag folder, as registry 2.8.2's does; manifests/ only the
    // tags that resolve; `base` still serves.
    let list = String::from_utf8(served(&ns, "bad/tags/list").unwrap()).unwrap();
    for tag in ["base", "newline", "nolink", "dangling"] {
        assert!(list.contains(&format!("\"{tag}\"")), "{list}");
    }
    let listed = names(&ns, "bad/manifests");
    assert!(listed.contains(&"base".to_string()), "{listed:?}");
    for tag in ["newline", "huge", "nolink", "dangling", "alias"] {
        assert!(
            !listed.contains(&tag.to_string()),
            "{tag} listed: {listed:?}"
        );
    }
    assert!(!listed.contains(&gone.to_string()), "{listed:?}");
    served(&ns, "bad/manifests/base/schema1").expect("base serves");
    assert!(!names(&ns, "bad/blobs").contains(&layer.to_string()));
    assert_good_serves(&store, &ns, &good);
    let mut expected: Vec<Expected> = cases
        .iter()
        .map(|(tag, _, reason)| {
            let link = format!("tags/{tag}/current/link");
            expect(Problem::InvalidContent, "bad", &[&link, reason])
        })
        .collect();
    let revision = format!("revisions/sha256/{}/link", gone.encoded());
    expected.extend([
        expect(Problem::DanglingLink, "bad", &["tag dangling", &revision]),
        expect(Problem::DanglingLink, "bad", &["tags/nolink/current/link"]),
        expect(
            Problem::InvalidContent,
            "bad",
            &[&format!("manifest {alias}"), &format!("link names {m}")],
        ),
        expect(
            Problem::InvalidContent,
            "bad",
            &[&format!("blob {layer}"), &format!("link names {other}")],
        ),
    ]);
    assert_verify_finds(s.root(), &expected);
}

// ---------------------------------------------------------------------------------
// Names and paths.

#[test]
fn escaping_symlinks_are_refused_everywhere() {
    let s = StoreBuilder::new();
    let good = good_repo(&s);
    let outside = tempfile::tempdir().expect("tempdir");
    // repositories/: a repository folder that is a symlink out of the store.
    let out_repo = outside.path().join("repo");
    std::fs::create_dir_all(out_repo.join("_manifests/tags")).expect("mkdir");
    std::os::unix::fs::symlink(&out_repo, s.v2().join("repositories/escape")).expect("symlink");
    // blobs/: a fan-out folder that is a symlink out of the store, holding the data of a
    // manifest that `bad:blobs` points at.
    let m = s.image("bad", "blobs", &config(1), &[b"b"], LAYER);
    let hex = m.encoded().to_string();
    let fan = s.v2().join(format!("blobs/sha256/{}", &hex[..2]));
    let moved = outside.path().join("fan");
    std::fs::rename(&fan, &moved).expect("move fan-out folder out");
    std::os::unix::fs::symlink(&moved, &fan).expect("symlink");
    // A link file that is a symlink to a file outside holding a valid digest.
    let d = s.image("bad", "link", &config(1), &[b"c"], LAYER);
    let outside_link = outside.path().join("link");
    std::fs::write(&outside_link, d.as_str()).expect("write");
    let link = s
        .v2()
        .join("repositories/bad/_manifests/tags/link/current/link");
    std::fs::remove_file(&link).expect("rm");
    std::os::unix::fs::symlink(&outside_link, &link).expect("symlink");
    // A symlink loop.
    std::os::unix::fs::symlink("loop", s.v2().join("repositories/loop")).expect("symlink");
    // A symlink that stays inside is followed.
    std::os::unix::fs::symlink("good", s.v2().join("repositories/alias")).expect("symlink");

    let (store, ns) = open(s.root());
    let e = err(&ns, "escape/tags/list");
    assert_mentions(&e, &["repositories/escape", "outside the store"]);
    let e = err(&ns, "bad/manifests/blobs/schema2");
    assert_mentions(&e, &[&format!("{hex}/data"), "outside the store"]);
    let e = err(&ns, "bad/manifests/link/schema2");
    assert_mentions(&e, &["tags/link/current/link", "outside the store"]);
    assert_mentions(
        &err(&ns, "loop/tags/list"),
        &["repositories/loop", "too many levels of symlinks"],
    );
    assert_eq!(names(&ns, ""), ["alias", "bad", "good"]);
    served(&ns, "alias/manifests/t/schema1").expect("an inside symlink is followed");
    assert_good_serves(&store, &ns, &good);
    assert_verify_finds(
        s.root(),
        &[
            expect(
                Problem::InvalidContent,
                "bad",
                &[&format!("manifest {m}"), "outside the store"],
            ),
            expect(
                Problem::InvalidContent,
                "bad",
                &["tags/link/current/link", "outside the store"],
            ),
        ],
    );
}

#[test]
fn dot_dot_and_odd_paths_never_leave_the_namespace() {
    let s = StoreBuilder::new();
    let good = good_repo(&s);
    std::fs::write(s.v2().join("secret"), "SECRET").expect("write");
    std::fs::write(s.root().join("secret"), "SECRET").expect("write");
    let (store, ns) = open(s.root());
    let d = Digest::of(b"g1");
    for path in [
        "..",
        "../secret",
        "good/..",
        "good/../secret",
        "good/manifests/..",
        "good/manifests/../../secret",
        "good/manifests/t/../../../secret",
        "good/blobs/../../../../secret",
        "good/tags/..",
        "good/tags/list/..",
        "./good/tags/list",
        "good/./tags/list",
        "good/manifests/t/schema1/x",
        "good/blobs/sha256:..",
        &format!(
            "good/blobs/{}",
            d.as_str().to_uppercase().replacen("SHA256", "sha256", 1)
        ),
        &format!("good/blobs/{d}/.."),
        "good\0/tags/list",
        "secret",
        "_uploads",
        "good/_manifests/tags",
        "good/_layers",
    ] {
        match ns.lookup(path) {
            Err(e) => assert!(e.is_not_found(), "{path:?}: {e}"),
            Ok(_) => panic!("{path:?} resolves"),
        }
    }
    // Empty components and slashes at either end are ignored, as documented.
    served(&ns, "/good//tags/list/").expect("served");
    assert_good_serves(&store, &ns, &good);
}

#[test]
fn non_utf8_names_are_skipped() {
    let s = StoreBuilder::new();
    let good = good_repo(&s);
    s.image("odd", "ok", &config(1), &[b"o"], LAYER);
    let v2 = s.v2();
    let bad_repo = v2.join("repositories").join(OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir_all(bad_repo.join("_manifests/tags")).expect("mkdir");
    let tags = v2.join("repositories/odd/_manifests/tags");
    let bad_tag = tags.join(OsStr::from_bytes(b"v\xff1"));
    std::fs::create_dir_all(bad_tag.join("current")).expect("mkdir");
    std::fs::copy(tags.join("ok/current/link"), bad_tag.join("current/link")).expect("copy");
    let (store, ns) = open(s.root());
    assert_eq!(names(&ns, ""), ["good", "odd"]);
    assert_eq!(
        served(&ns, "odd/tags/list").unwrap(),
        b"{\"name\":\"odd\",\"tags\":[\"ok\"]}\n"
    );
    assert_eq!(names(&ns, "odd/manifests")[0], "ok");
    let warned = warnings_about(&v2.display().to_string());
    assert!(
        warned
            .iter()
            .any(|w| w.contains("not UTF-8") && w.contains("repositories")),
        "{warned:?}"
    );
    assert!(
        warned
            .iter()
            .any(|w| w.contains("not UTF-8") && w.contains("odd/_manifests/tags")),
        "{warned:?}"
    );
    assert_good_serves(&store, &ns, &good);
}

#[test]
fn the_signing_key_is_never_reachable() {
    let s = StoreBuilder::new();
    let good = good_repo(&s);
    let key = test_key();
    let jwk = key.private_jwk_file();
    // The key file in every folder of the store a path could lead to.
    let hex = Digest::of(b"g1").encoded().to_string();
    for dir in [
        s.root().to_path_buf(),
        s.v2(),
        s.v2().join("repositories"),
        s.v2().join("repositories/good"),
        s.v2().join("repositories/good/_manifests"),
        s.v2().join("repositories/good/_manifests/tags/t"),
        s.v2().join("blobs/sha256"),
        s.v2().join(format!("blobs/sha256/{}/{hex}", &hex[..2])),
    ] {
        std::fs::write(dir.join("key.json"), &jwk).expect("write key");
        std::fs::write(dir.join("key.pem"), key.private_pem_file()).expect("write key");
    }
    let (store, ns) = open(s.root());
    let (ok, _) = walk(&store, &ns);
    let d = String::from_utf8(jwk.clone()).unwrap();
    let secret = d
        .split("\"d\": \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    for path in &ok {
        if let Ok(bytes) = served(&ns, path) {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{path} serves the private key"
            );
        }
        assert!(!path.contains("key."), "{path}");
    }
    for path in [
        "key.json",
        "good/key.json",
        "good/manifests/t/key.json",
        "good/tags/key.pem",
    ] {
        assert!(ns.lookup(path).is_err(), "{path}");
    }
    assert_good_serves(&store, &ns, &good);
}

// ---------------------------------------------------------------------------------
// OCI image layouts.

struct Layout {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
}

impl Layout {
    fn new() -> Layout {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("img");
        std::fs::create_dir_all(root.join("blobs/sha256")).expect("mkdir");
        std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write");
        Layout { _dir: dir, root }
    }

    fn put(&self, bytes: &[u8]) -> Digest {
        let d = Digest::of(bytes);
        std::fs::write(self.root.join("blobs/sha256").join(d.encoded()), bytes).expect("write");
        d
    }

    /// An image; returns its manifest digest and layer digest.
    fn image(&self, layer: &[u8]) -> (Digest, Digest) {
        let cfg = config(1);
        let c = self.put(cfg.as_bytes());
        let l = self.put(layer);
        (self.put(manifest_json(&c, &[&l]).as_bytes()), l)
    }

    fn index(&self, entries: &[(&Digest, &str)]) {
        let entries: Vec<String> = entries
            .iter()
            .map(|(d, name)| {
                format!(
                    r#"{{"mediaType":"{SCHEMA2}","digest":"{d}","size":1,"annotations":{{"org.opencontainers.image.ref.name":"{name}"}}}}"#
                )
            })
            .collect();
        std::fs::write(
            self.root.join("index.json"),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
                entries.join(",")
            ),
        )
        .expect("write");
    }
}

#[test]
fn oci_layout_with_a_broken_index_keeps_its_blobs() {
    let l = Layout::new();
    let (m, layer) = l.image(b"layer");
    for broken in [
        &b"{\"schemaVersion\":2,\"manifests\":["[..],
        b"",
        b"\xff",
        b"[]",
    ] {
        std::fs::write(l.root.join("index.json"), broken).expect("write");
        let (store, ns) = open(&l.root);
        assert_eq!(names(&ns, ""), ["img"]);
        assert_mentions(&err(&ns, "img/tags/list"), &["img/index.json"]);
        let e = ns.list("img/manifests").expect_err("needs the index");
        assert_mentions(&e.to_string(), &["img/index.json"]);
        assert_eq!(
            served(&ns, &format!("img/blobs/{layer}")).unwrap(),
            b"layer"
        );
        let (ok, _) = walk(&store, &ns);
        assert!(ok.contains(&format!("img/blobs/{m}")));
    }
    std::fs::remove_file(l.root.join("index.json")).expect("rm");
    let (_, ns) = open(&l.root);
    assert_mentions(&err(&ns, "img/tags/list"), &["img/index.json", "missing"]);
}

#[test]
fn oci_layout_index_rewritten_under_one_namespace_shows_at_once() {
    // index.json is kept parsed by file identity: a rewrite in place (same length) and a
    // replacement by rename must both show on the next call.
    let l = Layout::new();
    let (m, _) = l.image(b"layer");
    l.index(&[(&m, "aa")]);
    let (_, ns) = open(&l.root);
    let tags = |ns: &Namespace| String::from_utf8(served(ns, "img/tags/list").unwrap()).unwrap();
    assert!(tags(&ns).contains("\"aa\""));
    l.index(&[(&m, "bb")]);
    assert!(tags(&ns).contains("\"bb\""), "{}", tags(&ns));
    let staged = l.root.join("index.json.new");
    std::fs::rename(l.root.join("index.json"), &staged).expect("rename");
    l.index(&[(&m, "cc")]);
    std::fs::rename(l.root.join("index.json"), l.root.join("index.json.cc")).expect("rename");
    std::fs::rename(&staged, l.root.join("index.json")).expect("rename");
    assert!(tags(&ns).contains("\"bb\""));
    std::fs::rename(l.root.join("index.json.cc"), l.root.join("index.json")).expect("rename");
    assert!(tags(&ns).contains("\"cc\""), "{}", tags(&ns));
}

#[test]
fn oci_layout_bad_ref_names_and_missing_blobs() {
    let l = Layout::new();
    let (good, _) = l.image(b"good");
    let (no_config, _) = l.image(b"nc");
    let (no_manifest, _) = l.image(b"nm");
    std::fs::remove_file(l.root.join("blobs/sha256").join(no_manifest.encoded())).expect("rm");
    // Remove no_config's config: its manifest names config(1) like the others, so use a
    // manifest of its own naming a config that is not there.
    let absent = Digest::of(b"no such config");
    let nc = l.put(manifest_json(&absent, &[&Digest::of(b"nc")]).as_bytes());
    let _ = no_config;
    l.index(&[
        (&good, "v1"),
        (&good, "not a tag!"),
        (&good, "a:b:c"),
        (&good, "x/Y:1"),
        (&good, ""),
        (&nc, "noconfig"),
        (&no_manifest, "gone"),
    ]);
    let (store, ns) = open(&l.root);
    assert_eq!(names(&ns, ""), ["img"]);
    assert_eq!(
        served(&ns, "img/tags/list").unwrap(),
        b"{\"name\":\"img\",\"tags\":[\"v1\",\"noconfig\",\"gone\"]}\n"
    );
    served(&ns, "img/manifests/v1/schema1").expect("v1 converts");
    let e = err(&ns, "img/manifests/noconfig/schema1");
    assert_mentions(&e, &[&format!("config blob {absent} is not in img")]);
    let e = err(&ns, "img/manifests/gone/schema2");
    assert_mentions(
        &e,
        &[
            &format!("blobs/sha256/{}", no_manifest.encoded()),
            "missing",
        ],
    );
    let root = l.root.display().to_string();
    let warned = warnings_about(&root);
    for name in ["not a tag!", "a:b:c", "x/Y:1"] {
        assert!(
            warned
                .iter()
                .any(|w| w.contains("index.json") && w.contains(name) && w.contains("not a tag")),
            "{name}: {warned:?}"
        );
    }
    let (ok, _) = walk(&store, &ns);
    assert!(ok.contains("img/manifests/v1/schema2"));
    assert!(!ok.iter().any(|p| p.contains("gone")), "{ok:?}");
    assert_verify_finds(
        &l.root,
        &[
            expect(
                Problem::MissingReference,
                "img",
                &[&format!("names blob {absent}, which is not in img")],
            ),
            expect(
                Problem::DanglingLink,
                "img",
                &[&format!("manifest {no_manifest}"), "missing"],
            ),
        ],
    );
}

// ---------------------------------------------------------------------------------
// The CLI.

#[test]
fn cli_reports_one_line_naming_the_file() {
    let s = StoreBuilder::new();
    good_repo(&s);
    let bad = s.manifest("bad", b"{\"schemaVersion\":3}");
    s.tag("bad", "v3", &bad);
    let link = s.tag("bad", "newline", &bad);
    std::fs::write(&link, format!("{bad}\n")).expect("write");
    let key = s.root().join("key.json");
    std::fs::write(&key, test_key().private_jwk_file()).expect("key");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_registryfs"))
            .args(args)
            .arg("--signing-key")
            .arg(&key)
            .env_remove("RUST_LOG")
            .output()
            .expect("runs")
    };
    let store = s.root().to_str().unwrap();
    let data = format!("{}/data", bad.encoded());
    for (args, needles) in [
        (
            vec!["cat", store, "bad/manifests/v3/schema2"],
            vec![data.as_str(), "schemaVersion 3"],
        ),
        (
            vec!["ls", store, "bad/manifests/v3"],
            vec![data.as_str(), "schemaVersion 3"],
        ),
        (
            vec!["cat", store, "bad/manifests/newline/schema1"],
            vec!["tags/newline/current/link", "bad link"],
        ),
        (
            vec!["ls", store, "bad/manifests/newline"],
            vec!["tags/newline/current/link", "bad link"],
        ),
    ] {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("registryfs: "), "{stderr}");
        assert_mentions(&stderr, &needles);
    }
    let out = run(&["cat", store, "good/manifests/t/schema1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
}

// ---------------------------------------------------------------------------------
// `registryfs verify` beyond the cases above.

#[test]
fn verify_finds_bad_blob_data_and_unreferenced_blobs() {
    let s = StoreBuilder::new();
    good_repo(&s);
    s.image("bad", "t", &config(1), &[b"layer"], LAYER);
    let layer = Digest::of(b"layer");
    std::fs::write(s.blob_path(&layer), b"LAYER").expect("corrupt");
    let stray = s.blob(b"nobody links me");
    let report = assert_verify_finds(
        s.root(),
        &[
            expect(
                Problem::BadBlob,
                "",
                &[&format!("blob {layer}"), "data hashes to"],
            ),
            expect(Problem::Unreferenced, "", &[&format!("blob {stray}")]),
        ],
    );
    assert_eq!(report.totals.unreferenced.count, 1, "{}", report.text());
    assert_eq!(report.totals.unreferenced.bytes, 15);
    assert_eq!(report.totals.repositories, 2);
    assert_eq!(report.totals.tags, 3);
}

#[test]
fn verify_cli_exit_status_and_json() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_registryfs"))
            .arg("verify")
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .expect("runs")
    };
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/store");
    let out = run(&[sample]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.ends_with(&format!("{sample}: sound\n")), "{stdout}");
    // Not a terminal: no progress on stderr.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["--json", sample]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["sound"], true);
    assert!(report["totals"]["blobs"]["count"].as_u64() > Some(0));

    let s = StoreBuilder::new();
    good_repo(&s);
    let d = s.image("bad", "t", &config(1), &[b"x"], LAYER);
    std::fs::remove_file(s.blob_path(&d)).expect("rm");
    let store = s.root().to_str().expect("UTF-8 path");
    let out = run(&["--json", store]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["sound"], false);
    assert_eq!(report["counts"]["dangling-link"], 2, "revision and tag");
    // Only the healthy repository: sound.
    assert_eq!(run(&[store, "good"]).status.code(), Some(0));
    let out = run(&[store, "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    assert_mentions(
        &String::from_utf8_lossy(&out.stderr),
        &["nosuch", "no such repository"],
    );
}

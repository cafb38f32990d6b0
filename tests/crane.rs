//! The Crane layout (`--layout crane`) over an on-disk store.

mod common;

use common::*;
use registryfs::digest::Digest;
use registryfs::namespace::crane::{repo_id, CraneOptions};
use registryfs::namespace::{Namespace, Node};
use std::time::SystemTime;

fn names(ns: &Namespace, path: &str) -> Vec<String> {
    ns.list(path)
        .unwrap_or_else(|e| panic!("list {path}: {e}"))
        .into_iter()
        .map(|e| {
            if e.is_dir {
                format!("{}/", e.name)
            } else {
                e.name
            }
        })
        .collect()
}

#[test]
fn crane_tree_maps_the_registry_namespace() {
    let s = StoreBuilder::new();
    let img = s.image("lib/app", "v1", &config(1), &[b"layer-app"], LAYER);
    let amd = s.manifest(
        "lib/app",
        s.image_manifest("lib/app", &config(1), &[b"layer-amd"], LAYER, SCHEMA2)
            .as_bytes(),
    );
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"{LIST}","manifests":[{{"mediaType":"{SCHEMA2}","digest":"{amd}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
    );
    let list_digest = s.manifest("lib/app", list.as_bytes());
    s.tag("lib/app", "multi", &list_digest);
    s.image("plain", "latest", &config(1), &[b"layer-plain"], LAYER);

    let registry = s.open(settings());
    let ns = s.open(settings()).with_crane_layout(CraneOptions {
        url: "https://crane.example/pulp/docker/v2/".into(),
    });

    assert_eq!(names(&ns, ""), ["app/", "web/"]);
    assert_eq!(names(&ns, "app"), ["lib___app.json", "plain.json"]);
    assert_eq!(names(&ns, "web"), ["lib___app/", "plain/"]);
    assert_eq!(
        names(&ns, "web/lib___app"),
        ["blobs/", "manifests/", "tags/"]
    );
    assert_eq!(names(&ns, "web/lib___app/manifests"), ["1/", "2/", "list/"]);
    assert_eq!(names(&ns, "web/lib___app/manifests/1"), ["multi", "v1"]);
    let mut two = vec![amd.to_string(), img.to_string(), "v1".to_string()];
    two.sort();
    assert_eq!(names(&ns, "web/lib___app/manifests/2"), two);
    assert_eq!(
        names(&ns, "web/lib___app/manifests/list"),
        ["multi".to_string(), list_digest.to_string()]
    );
    assert_eq!(names(&ns, "web/lib___app/tags"), ["list"]);
    assert_eq!(
        names(&ns, "web/lib___app/blobs"),
        names(&registry, "lib/app/blobs")
    );

    // Files are the registry namespace's.
    for (crane, reg) in [
        (
            "web/lib___app/manifests/1/v1",
            "lib/app/manifests/v1/schema1".to_string(),
        ),
        (
            "web/lib___app/manifests/1/multi",
            "lib/app/manifests/multi/schema1".into(),
        ),
        (
            "web/lib___app/manifests/2/v1",
            "lib/app/manifests/v1/schema2".into(),
        ),
        (
            "web/lib___app/manifests/list/multi",
            "lib/app/manifests/multi/list".into(),
        ),
        ("web/lib___app/tags/list", "lib/app/tags/list".into()),
    ] {
        assert_eq!(bytes(&ns, crane), bytes(&registry, &reg), "{crane}");
    }
    let amd_path = format!("web/lib___app/manifests/2/{amd}");
    assert_eq!(
        bytes(&ns, &amd_path),
        bytes(&registry, &format!("lib/app/manifests/{amd}/schema2"))
    );
    // A list tag has no manifests/2 entry: Crane sends schema2 clients to its amd64 digest.
    assert!(ns.lookup("web/lib___app/manifests/2/multi").is_err());
    assert!(ns.lookup("web/lib___app/manifests/2/nope").is_err());
    assert!(ns.lookup("lib/app/manifests").is_err());
    assert!(ns.lookup("app/nope.json").is_err());
    assert!(ns.lookup("web/nope").is_err());
    assert!(
        ns.lookup("lib___app.json").is_err(),
        "app files live in app/"
    );
    assert!(
        ns.lookup("lib___app").is_err(),
        "the web tree lives in web/"
    );

    let app: serde_json::Value = serde_json::from_slice(&bytes(&ns, "app/lib___app.json")).unwrap();
    assert_eq!(app["version"], 4);
    assert_eq!(app["repo-registry-id"], "lib/app");
    assert_eq!(app["repository"], "lib___app");
    assert_eq!(
        app["url"],
        "https://crane.example/pulp/docker/v2/lib___app/"
    );
    let mut schema2 = vec![amd.to_string(), img.to_string(), "v1".to_string()];
    schema2.sort();
    assert_eq!(app["schema2_data"], serde_json::json!(schema2));
    let mut lists = vec!["multi".to_string(), list_digest.to_string()];
    lists.sort();
    assert_eq!(app["manifest_list_data"], serde_json::json!(lists));
    assert_eq!(
        app["manifest_list_amd64_tags"],
        serde_json::json!({"multi": [amd.to_string(), 2]})
    );
    assert!(!ns.locate("app/lib___app.json").unwrap().is_dir());
    assert!(ns.locate("web/lib___app/manifests/1").unwrap().is_dir());
}

/// Every path below `path`, walked as Crane walks its `data_dir` (`os.walk`): folders
/// end in '/'.
fn walk(ns: &Namespace, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in ns.list(path).unwrap_or_else(|e| panic!("list {path}: {e}")) {
        let child = format!("{path}/{}", entry.name);
        if entry.is_dir {
            out.push(format!("{child}/"));
            out.extend(walk(ns, &child));
        } else {
            out.push(child);
        }
    }
    out
}

fn crane(s: &StoreBuilder) -> Namespace {
    s.open(settings()).with_crane_layout(CraneOptions {
        url: "/pulp/docker/v2".into(),
    })
}

/// What a pusher controls: repository names, tag names and manifest bodies. None of it
/// may put a file below `app/` (Crane's `data_dir`) other than the app file registryfs
/// writes for each repository.
#[test]
fn no_store_content_reaches_the_app_folder() {
    let s = StoreBuilder::new();
    s.image("library/plain", "latest", &config(1), &[b"plain"], LAYER);
    // The reported attack: a tag `hijack.json` whose stored schema2 manifest also
    // carries the keys of a Crane redirect file for another repository.
    let manifest = s.image_manifest("emptylayers", &config(1), &[b"e"], LAYER, SCHEMA2);
    let hijack = format!(
        r#"{},"type":"pulp-docker-redirect","version":4,"repository":"library___plain","repo-registry-id":"library/plain","url":"http://attacker.invalid/v2/","protected":false,"schema2_data":[],"manifest_list_data":[],"manifest_list_amd64_tags":{{}}}}"#,
        manifest.trim_end_matches('}')
    );
    let d = s.manifest("emptylayers", hijack.as_bytes());
    s.tag("emptylayers", "hijack.json", &d);
    // Names that look like the tree's own: repositories `app`, `web`, `x.json` and a
    // nested `app/web`, tags `json` and `app.json`.
    for repo in ["app", "web", "x.json", "app/web"] {
        s.image(repo, "json", &config(1), &[b"n"], LAYER);
        s.image(repo, "app.json", &config(1), &[b"n"], LAYER);
    }
    let ns = crane(&s);

    let app = walk(&ns, "app");
    let repos = [
        "app",
        "app/web",
        "emptylayers",
        "library/plain",
        "web",
        "x.json",
    ];
    let mut expected: Vec<String> = repos
        .iter()
        .map(|r| format!("app/{}.json", repo_id(r)))
        .collect();
    expected.sort();
    assert_eq!(app, expected, "app/ holds one app file per repository");
    for (path, repo) in expected.iter().zip(repos) {
        let v: serde_json::Value = serde_json::from_slice(&bytes(&ns, path)).unwrap();
        assert_eq!(v["repo-registry-id"], repo, "{path}");
        assert_eq!(
            v["url"],
            format!("/pulp/docker/v2/{}/", repo_id(repo)),
            "{path}"
        );
    }
    // The tag is served where Pulp publishes it, below web/.
    let served = bytes(&ns, "web/emptylayers/manifests/2/hijack.json");
    assert_eq!(served, hijack.as_bytes());
    assert!(ns
        .lookup("app/emptylayers/manifests/2/hijack.json")
        .is_err());
    assert!(ns.lookup("app/hijack.json").is_err());
}

fn time_of(ns: &Namespace, path: &str) -> SystemTime {
    ns.lookup_timed(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .mtime
}

/// Crane's reload rule (crane/data.py's monitor): reload every app file when the newest
/// `st_mtime` among the folders below `data_dir` (itself included) has grown. `app/`
/// has no folders, so its own time must grow with every change of any app file.
#[test]
fn the_app_folder_time_grows_with_every_app_file_change() {
    let s = StoreBuilder::new();
    let v1 = s.image("lib/app", "v1", &config(1), &[b"a"], LAYER);
    let other = s.manifest(
        "lib/app",
        s.image_manifest("lib/app", &config(2), &[b"a", b"b"], LAYER, SCHEMA2)
            .as_bytes(),
    );
    let list_with = |child: &Digest| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{LIST}","manifests":[{{"mediaType":"{SCHEMA2}","digest":"{child}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        )
    };
    let list = s.manifest("lib/app", list_with(&v1).as_bytes());
    s.tag("lib/app", "multi", &list);
    let ns = crane(&s);
    let repo_dir = s.v2().join("repositories");
    let tags_dir = repo_dir.join("lib/app/_manifests/tags");

    let mut app_file = bytes(&ns, "app/lib___app.json");
    let mut last = time_of(&ns, "app");
    let mut check = |what: &str, ns: &Namespace| {
        let now = time_of(ns, "app");
        assert!(now > last, "app/ did not grow after: {what}");
        last = now;
    };
    // Each change lands on a later clock tick than the previous one.
    let tick = || std::thread::sleep(std::time::Duration::from_millis(20));

    tick();
    s.tag("lib/app", "v2", &v1);
    check("a new tag", &ns);
    tick();
    s.tag("lib/app", "v1", &other);
    check("a tag moved", &ns);
    tick();
    std::fs::remove_dir_all(tags_dir.join("v2")).unwrap();
    check("a tag deleted", &ns);
    tick();
    s.tag("lib/app", "v1", &list);
    check("a schema2 tag moved to a list", &ns);
    tick();
    let new_list = s.manifest("lib/app", list_with(&other).as_bytes());
    tick();
    s.tag("lib/app", "multi", &new_list);
    check("a list tag moved to a list with another amd64 child", &ns);
    tick();
    s.image("newrepo", "latest", &config(1), &[b"n"], LAYER);
    check("a new repository", &ns);
    tick();
    s.image("ns/deep/newrepo", "latest", &config(1), &[b"n"], LAYER);
    check("a new nested repository", &ns);
    tick();
    std::fs::remove_dir_all(repo_dir.join("newrepo")).unwrap();
    check("a repository deleted", &ns);
    tick();
    std::fs::remove_dir_all(repo_dir.join("ns/deep/newrepo")).unwrap();
    check("a nested repository deleted", &ns);

    // The app file's own time followed its content.
    assert_ne!(bytes(&ns, "app/lib___app.json"), app_file);
    app_file = bytes(&ns, "app/lib___app.json");
    assert!(time_of(&ns, "app/lib___app.json") <= last);
    let v: serde_json::Value = serde_json::from_slice(&app_file).unwrap();
    assert_eq!(
        v["manifest_list_amd64_tags"]["multi"][0],
        other.to_string(),
        "the moved list tag's new amd64 child"
    );
}

/// Two namespaces over one store (two mounts, or one before and after a restart) show
/// the same size and time for every path, in both layouts.
#[test]
fn every_time_comes_from_the_store() {
    let s = StoreBuilder::new();
    s.image("lib/app", "v1", &config(1), &[b"a"], LAYER);
    s.image("plain", "latest", &config(2), &[b"a", b"b"], LAYER);
    let stats = |ns: &Namespace, root: &str| -> Vec<(String, u64, SystemTime)> {
        let mut paths = vec![format!("{root}/")];
        paths.extend(walk(ns, root));
        paths
            .into_iter()
            .map(|p| {
                let timed = ns.lookup_timed(&p).unwrap();
                let len = match &timed.node {
                    Node::File(c) => c.len(),
                    Node::Link(target) => target.len() as u64,
                    Node::Dir => 0,
                };
                (p, len, timed.mtime)
            })
            .collect()
    };
    let first = stats(&s.open(settings()), "");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = stats(&s.open(settings()), "");
    assert_eq!(first, second);
    assert!(first.len() > 20, "{first:?}");
    let c1 = stats(&crane(&s), "");
    let c2 = stats(&crane(&s), "");
    assert_eq!(c1, c2);
    // A tag's files carry the time of its link (the push), not of the lookup.
    let link = s
        .v2()
        .join("repositories/plain/_manifests/tags/latest/current/link");
    let pushed = std::fs::metadata(&link).unwrap().modified().unwrap();
    assert_eq!(
        time_of(&s.open(settings()), "plain/manifests/latest/schema1"),
        pushed
    );
    assert_eq!(time_of(&crane(&s), "web/plain/manifests/1/latest"), pushed);
}

/// A mount reports every store change, so the Crane folders are answered from a kept
/// scan (Crane lists and stats `app/` at every poll) and follow the reported changes.
#[test]
fn reported_changes_update_the_kept_scan() {
    use registryfs::watch::StoreChange;
    let s = StoreBuilder::new();
    s.image("lib/app", "v1", &config(1), &[b"a"], LAYER);
    let ns = crane(&s);
    ns.track_store_changes();
    assert_eq!(names(&ns, "app"), ["lib___app.json"]);
    let before = time_of(&ns, "app");

    std::thread::sleep(std::time::Duration::from_millis(20));
    s.image("ns/new", "latest", &config(1), &[b"n"], LAYER);
    // Not reported yet: the kept scan still answers.
    assert_eq!(names(&ns, "app"), ["lib___app.json"]);
    assert_eq!(time_of(&ns, "app"), before);
    let stale = ns.store_changed(&[
        StoreChange::Children(String::new()),
        StoreChange::Repository("ns".into()),
    ]);
    assert!(!stale.is_empty());
    assert_eq!(names(&ns, "app"), ["lib___app.json", "ns___new.json"]);
    assert_eq!(names(&ns, "web"), ["lib___app/", "ns___new/"]);
    let after_new = time_of(&ns, "app");
    assert!(after_new > before);

    std::thread::sleep(std::time::Duration::from_millis(20));
    s.tag("lib/app", "v2", &Digest::of(b"nothing"));
    ns.store_changed(&[StoreChange::Repository("lib/app".into())]);
    assert!(time_of(&ns, "app") > after_new, "a new tag");

    std::fs::remove_dir_all(s.v2().join("repositories/ns")).unwrap();
    ns.store_changed(&[StoreChange::Children(String::new())]);
    assert_eq!(names(&ns, "app"), ["lib___app.json"]);
    // A rescan from scratch agrees with the kept scan.
    let kept = time_of(&ns, "app");
    ns.store_changed(&[StoreChange::Everything]);
    assert_eq!(time_of(&ns, "app"), kept);
    assert_eq!(time_of(&crane(&s), "app"), kept, "as an unkept scan says");
}

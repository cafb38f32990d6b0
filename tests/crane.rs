//! The Crane layout (`--layout crane`) over an on-disk store.

mod common;

use common::*;
use registryfs::namespace::crane::CraneOptions;
use registryfs::namespace::Namespace;

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

    assert_eq!(
        names(&ns, ""),
        ["lib___app/", "lib___app.json", "plain/", "plain.json"]
    );
    assert_eq!(names(&ns, "lib___app"), ["blobs/", "manifests/", "tags/"]);
    assert_eq!(names(&ns, "lib___app/manifests"), ["1/", "2/", "list/"]);
    assert_eq!(names(&ns, "lib___app/manifests/1"), ["multi", "v1"]);
    let mut two = vec![amd.to_string(), img.to_string(), "v1".to_string()];
    two.sort();
    assert_eq!(names(&ns, "lib___app/manifests/2"), two);
    assert_eq!(
        names(&ns, "lib___app/manifests/list"),
        ["multi".to_string(), list_digest.to_string()]
    );
    assert_eq!(names(&ns, "lib___app/tags"), ["list"]);
    assert_eq!(
        names(&ns, "lib___app/blobs"),
        names(&registry, "lib/app/blobs")
    );

    // Files are the registry namespace's.
    for (crane, reg) in [
        (
            "lib___app/manifests/1/v1",
            "lib/app/manifests/v1/schema1".to_string(),
        ),
        (
            "lib___app/manifests/1/multi",
            "lib/app/manifests/multi/schema1".into(),
        ),
        (
            "lib___app/manifests/2/v1",
            "lib/app/manifests/v1/schema2".into(),
        ),
        (
            "lib___app/manifests/list/multi",
            "lib/app/manifests/multi/list".into(),
        ),
        ("lib___app/tags/list", "lib/app/tags/list".into()),
    ] {
        assert_eq!(bytes(&ns, crane), bytes(&registry, &reg), "{crane}");
    }
    let amd_path = format!("lib___app/manifests/2/{amd}");
    assert_eq!(
        bytes(&ns, &amd_path),
        bytes(&registry, &format!("lib/app/manifests/{amd}/schema2"))
    );
    // A list tag has no manifests/2 entry: Crane sends schema2 clients to its amd64 digest.
    assert!(ns.lookup("lib___app/manifests/2/multi").is_err());
    assert!(ns.lookup("lib___app/manifests/2/nope").is_err());
    assert!(ns.lookup("lib/app/manifests").is_err());
    assert!(ns.lookup("nope.json").is_err());
    assert!(ns.lookup("nope").is_err());

    let app: serde_json::Value = serde_json::from_slice(&bytes(&ns, "lib___app.json")).unwrap();
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
    assert!(!ns.locate("lib___app.json").unwrap().is_dir());
    assert!(ns.locate("lib___app/manifests/1").unwrap().is_dir());
}

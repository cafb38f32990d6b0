//! Link files as the store reads them: arbitrary bytes as a tag's `current/link` and as
//! a blob's `_layers` link, looked up through the namespace.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registryfs::namespace::Namespace;
use registryfs::namespace::{Content, Node};
use registryfs::store::Store;
use registryfs_fuzz::DistributionFixture;
use std::sync::{Arc, OnceLock};

/// One store and namespace for the run: links are read afresh on every lookup, and the
/// schema1 cache (keyed by manifest digest) only spares re-signing the good tag.
static FIXTURE: OnceLock<(DistributionFixture, Arc<dyn Store>, Namespace)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (fx, store, ns) = FIXTURE.get_or_init(|| {
        let fx = DistributionFixture::new("link");
        let (store, ns) = fx.open();
        (fx, store, ns)
    });
    let tag_link = fx
        .v2()
        .join("repositories/app/_manifests/tags/fuzz/current/link");
    std::fs::create_dir_all(tag_link.parent().unwrap()).unwrap();
    std::fs::write(&tag_link, data).unwrap();
    let hex = fx.manifest.encoded();
    let layer_link = fx
        .v2()
        .join(format!("repositories/app/_layers/sha256/{hex}/link"));
    std::fs::create_dir_all(layer_link.parent().unwrap()).unwrap();
    std::fs::write(&layer_link, data).unwrap();

    let exact = data == fx.manifest.as_str().as_bytes() || data == fx.list.as_str().as_bytes();
    for kind in ["schema2", "list", "schema1"] {
        let path = format!("app/manifests/fuzz/{kind}");
        match ns.lookup(&path) {
            Ok(Node::File(Content::Bytes(bytes))) => {
                assert!(exact, "{path} served for link {data:?}");
                let loc = registryfs::namespace::Location::parse(store.as_ref(), &path).unwrap();
                registryfs_fuzz::check_served(&loc, &bytes, &ns.settings().key);
            }
            Ok(other) => panic!("{path}: {other:?}"),
            Err(e) => {
                // A link that is not exactly a digest is refused naming the link file.
                if !exact
                    && registryfs::digest::Digest::parse(&String::from_utf8_lossy(data)).is_err()
                {
                    let msg = e.to_string();
                    assert!(msg.contains("fuzz/current/link"), "{msg}");
                }
            }
        }
    }
    // The blob link names the manifest's digest only when it is exactly that digest.
    let blob = format!("app/blobs/{}", fx.manifest);
    if let Ok(Node::File(content)) = ns.lookup(&blob) {
        assert_eq!(
            data,
            fx.manifest.as_str().as_bytes(),
            "blob served for link {data:?}"
        );
        let bytes = registryfs_fuzz::served_bytes(ns, &content).expect("verified");
        assert!(fx.manifest.matches(&bytes));
    }
    let _ = ns.list("app/manifests");
    let _ = ns.list("app/blobs");
    let _ = ns.lookup("app/tags/list");
    // The good tag is untouched by the bad one.
    assert!(ns.lookup("app/manifests/t/schema1").is_ok());
});

//! Namespace paths (user input) over a small distribution store: whatever the path,
//! what is served hashes to its digest, and nothing outside the namespace is reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registryfs::namespace::{Location, Node};
use registryfs_fuzz::DistributionFixture;
use std::sync::OnceLock;

static FIXTURE: OnceLock<DistributionFixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let fx = FIXTURE.get_or_init(|| {
        let fx = DistributionFixture::new("path");
        // A secret next to the store that no path may reach.
        fx.store.write("docker/registry/v2/key.json", b"SECRET");
        fx.store
            .write("docker/registry/v2/repositories/app/key.json", b"SECRET");
        fx
    });
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let (store, ns) = fx.open();
    match ns.lookup(path) {
        Ok(Node::File(content)) => {
            let loc = Location::parse(store.as_ref(), path).expect("a served path parses");
            if let Some(bytes) = registryfs_fuzz::served_bytes(&ns, &content) {
                assert!(!bytes.windows(6).any(|w| w == b"SECRET"), "{path}");
                registryfs_fuzz::check_served(&loc, &bytes, &ns.settings().key);
            }
        }
        Ok(Node::Dir) => {
            assert!(!path.split('/').any(|c| c == ".." || c == "."), "{path}");
            let _ = ns.list(path);
        }
        Err(_) => {}
    }
});

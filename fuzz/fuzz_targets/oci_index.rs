//! An OCI layout's index.json: arbitrary bytes, opened with store::open, the whole
//! namespace walked and checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registryfs::digest::Digest;
use registryfs_fuzz::{config_json, TempStore, LAYER, SCHEMA2};
use std::sync::OnceLock;

static LAYOUT: OnceLock<TempStore> = OnceLock::new();

fn layout() -> TempStore {
    let s = TempStore::new("oci");
    let put = |bytes: &[u8]| {
        let d = Digest::of(bytes);
        s.write(&format!("img/blobs/sha256/{}", d.encoded()), bytes);
        d
    };
    let config = config_json(1);
    let c = put(config.as_bytes());
    let l = put(b"layer");
    // The seeds in fuzz/corpus/oci_index name this manifest's digest.
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{SCHEMA2}","config":{{"digest":"{c}","size":{}}},"layers":[{{"mediaType":"{LAYER}","digest":"{l}","size":5}}]}}"#,
        config.len()
    );
    put(m.as_bytes());
    s.write("img/oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    s
}

fuzz_target!(|data: &[u8]| {
    let s = LAYOUT.get_or_init(layout);
    s.write("img/index.json", data);
    let Ok(store) = registryfs::store::open(&s.root.join("img"), &Default::default()) else {
        return;
    };
    let ns = registryfs::namespace::Namespace::new(store.clone(), registryfs_fuzz::settings());
    registryfs_fuzz::walk(&store, &ns, 64);
});

//! Key files as `--signing-key` reads them: the same bytes as `key.json` (JWK) and as
//! `key.pem`. A key that loads must sign a payload that verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registryfs::schema1::{jws, SigningKey};
use registryfs_fuzz::TempStore;
use std::sync::OnceLock;

static DIR: OnceLock<TempStore> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| TempStore::new("key"));
    for name in ["key.json", "key.pem"] {
        let path = dir.write(name, data);
        let Ok(key) = SigningKey::load(&path) else {
            continue;
        };
        let kid = key.kid();
        assert_eq!(kid.len(), 59, "{kid}");
        assert_eq!(kid.split(':').count(), 12, "{kid}");
        registryfs::gojson::parse(&key.public_jwk_json()).expect("public JWK is JSON");
        let signed = jws::sign(b"{\"a\":1}", &key, "2024-01-02T03:04:05Z").expect("signs");
        assert_eq!(registryfs_fuzz::verify_signed(&signed, &key), b"{\"a\":1}");
        // What keygen writes loads back as the same key.
        let again = dir.write("again.json", &key.private_jwk_file());
        let reloaded = SigningKey::load(&again).expect("own JWK loads");
        assert_eq!(reloaded.kid(), kid);
    }
});

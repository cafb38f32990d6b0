//! The image-config decoder alone (Go's decode-into-existing-values rules).
#![no_main]

use libfuzzer_sys::fuzz_target;
use registryfs::schema1::config::ImageConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = ImageConfig::decode(data) {
        // Only valid JSON decodes.
        registryfs::gojson::parse(data).expect("decoded config is valid JSON");
        let _ = c.history.as_slice().len();
        if let Some(r) = &c.rootfs {
            let _ = r.diff_ids.as_slice().len();
        }
    }
});

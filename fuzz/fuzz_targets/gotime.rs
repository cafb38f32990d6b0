//! Go 1.19 time parsing (`Time.UnmarshalJSON` on a raw token) and its two outputs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registryfs::gotime::GoTime;

fuzz_target!(|data: &[u8]| {
    let Some(t) = GoTime::parse_json_token(data) else {
        return;
    };
    // What Go writes back parses again to the same time.
    let text = t.to_rfc3339_nano();
    let again = GoTime::parse_json_token(format!("\"{text}\"").as_bytes());
    assert_eq!(again, Some(t), "{text} does not round-trip");
    if let Some(utc) = t.to_utc_seconds() {
        registryfs_fuzz::assert_time_format(&utc);
    }
});

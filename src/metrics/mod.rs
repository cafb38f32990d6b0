//! Counters an operator can scrape: `registryfs mount --metrics-listen 127.0.0.1:9464`
//! serves them in the Prometheus text format ([`http`]).
//!
//! The counters are process-wide statics, counted where the thing happens (the FUSE
//! adapter, the namespace, the store follower) with one relaxed atomic add each, so
//! counting costs nothing measurable next to the work counted; they count whether or
//! not anyone listens.

pub mod http;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter per value of one label; `L` names the values.
pub struct Family<L: Label, const N: usize> {
    counters: [Counter; N],
    _label: std::marker::PhantomData<L>,
}

/// A label's values, numbered 0..N.
pub trait Label: Copy {
    const NAME: &'static str;
    const VALUES: &'static [&'static str];
    fn index(self) -> usize;
}

impl<L: Label, const N: usize> Family<L, N> {
    const fn new() -> Self {
        Family {
            counters: [const { Counter::new() }; N],
            _label: std::marker::PhantomData,
        }
    }

    pub fn inc(&self, label: L) {
        self.add(label, 1);
    }

    pub fn add(&self, label: L, n: u64) {
        if let Some(c) = self.counters.get(label.index()) {
            c.add(n);
        }
    }
}

/// Upper bounds of the schema1 generation time buckets, in seconds.
const SECONDS_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

pub struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when rendered).
    buckets: [Counter; SECONDS_BUCKETS.len()],
    count: Counter,
    sum_ns: Counter,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { Counter::new() }; SECONDS_BUCKETS.len()],
            count: Counter::new(),
            sum_ns: Counter::new(),
        }
    }

    pub fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        if let Some(i) = SECONDS_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i].inc();
        }
        self.count.inc();
        self.sum_ns
            .add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
}

macro_rules! label {
    ($(#[$doc:meta])* $name:ident, $label:literal, { $($variant:ident => $value:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl Label for $name {
            const NAME: &'static str = $label;
            const VALUES: &'static [&'static str] = &[$($value),+];
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label!(
    /// Where a folder listing came from: made ahead of a walk and taken, or made when
    /// asked for (none ready, or one made before a store change or too long ago).
    Listed, "from", {
        Ahead => "ahead",
        Asked => "asked",
    }
);

label!(
    /// What a FUSE lookup found.
    Found, "result", {
        Folder => "folder",
        File => "file",
        Link => "link",
        NotFound => "not_found",
        Error => "error",
    }
);

label!(
    /// How a file was opened: a document from memory (manifests, tag lists), or a blob
    /// read by the kernel (passthrough) or through the daemon.
    Opened, "kind", {
        Document => "document",
        BlobPassthrough => "blob_passthrough",
        BlobDaemon => "blob_daemon",
    }
);

label!(
    /// Where bytes read through the daemon came from.
    ReadFrom, "source", {
        Document => "document",
        Blob => "blob",
    }
);

label!(
    /// Why a tag has no schema1.
    Refusal, "reason", {
        NoPlatformEntry => "no_platform_entry",
        PlatformEntryMissing => "platform_entry_missing",
        NotAnImage => "not_an_image",
        OciNotConverted => "oci_not_converted",
        IndexNotConverted => "index_not_converted",
        ForeignLayer => "foreign_layer",
        Config => "config",
    }
);

label!(
    /// A cache's answer.
    CacheResult, "result", {
        Hit => "hit",
        Miss => "miss",
    }
);

label!(
    /// What kind of store error a request met (the FUSE adapter answers EIO).
    StoreError, "kind", {
        InvalidContent => "invalid_content",
        Io => "io",
        Conversion => "conversion",
        Other => "other",
    }
);

label!(
    /// A store change the mount followed.
    Change, "kind", {
        Repository => "repository",
        Children => "children",
        Everything => "everything",
    }
);

label!(
    /// A request to an S3 store (each page of a listing, each part of a blob counts).
    S3Request, "kind", {
        Get => "get",
        Head => "head",
        List => "list",
    }
);

label!(
    /// An S3 store's questions about links and listings: answered from memory, by
    /// asking the bucket while the reader waited, or asked again in the background
    /// before the answer kept would expire.
    Answer, "result", {
        Hit => "hit",
        Miss => "miss",
        Refreshed => "refreshed",
    }
);

pub struct Metrics {
    pub lookups: Family<Found, 5>,
    pub opens: Family<Opened, 3>,
    pub read_bytes: Family<ReadFrom, 2>,
    pub schema1_generated: Histogram,
    pub schema1_refused: Family<Refusal, 7>,
    pub schema1_cache: Family<CacheResult, 2>,
    pub content_cache: Family<CacheResult, 2>,
    pub listings: Family<Listed, 2>,
    pub blob_check_cache: Family<CacheResult, 2>,
    pub blob_hashed_bytes: Counter,
    pub store_errors: Family<StoreError, 4>,
    pub store_changes: Family<Change, 3>,
    pub s3_requests: Family<S3Request, 3>,
    pub s3_answers: Family<Answer, 3>,
}

pub static METRICS: Metrics = Metrics::new();

/// Counts a store error by its kind.
pub fn store_error(e: &crate::error::Error) {
    use crate::error::Error;
    let kind = match e {
        Error::InvalidContent { .. } => StoreError::InvalidContent,
        Error::Io { .. } => StoreError::Io,
        Error::Conversion { .. } => StoreError::Conversion,
        Error::NotFound(_) | Error::Usage(_) => StoreError::Other,
    };
    METRICS.store_errors.inc(kind);
}

impl Metrics {
    /// Every counter at zero.
    const fn new() -> Metrics {
        Metrics {
            lookups: Family::new(),
            opens: Family::new(),
            read_bytes: Family::new(),
            schema1_generated: Histogram::new(),
            schema1_refused: Family::new(),
            schema1_cache: Family::new(),
            content_cache: Family::new(),
            listings: Family::new(),
            blob_check_cache: Family::new(),
            blob_hashed_bytes: Counter::new(),
            store_errors: Family::new(),
            store_changes: Family::new(),
            s3_requests: Family::new(),
            s3_answers: Family::new(),
        }
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        family(
            &mut out,
            "registryfs_lookups_total",
            "FUSE lookups, by what they found",
            &self.lookups,
        );
        family(
            &mut out,
            "registryfs_opens_total",
            "Files opened, by how they are read",
            &self.opens,
        );
        family(
            &mut out,
            "registryfs_read_bytes_total",
            "Bytes read through the daemon (passthrough blob reads are the kernel's and not counted)",
            &self.read_bytes,
        );
        histogram(
            &mut out,
            "registryfs_schema1_generation_seconds",
            "Time to generate a schema1 manifest (converted and laid out; it is signed when first read)",
            &self.schema1_generated,
        );
        family(
            &mut out,
            "registryfs_schema1_refused_total",
            "Lookups of a tag that has no schema1, by why",
            &self.schema1_refused,
        );
        family(
            &mut out,
            "registryfs_schema1_cache_total",
            "Generated schema1 cache lookups",
            &self.schema1_cache,
        );
        family(
            &mut out,
            "registryfs_content_cache_total",
            "Opens of in-memory files answered from the kept bytes, or made again",
            &self.content_cache,
        );
        family(
            &mut out,
            "registryfs_listings_total",
            "Folder listings (with their names' lookups), by whether they were made ahead of a walk",
            &self.listings,
        );
        family(
            &mut out,
            "registryfs_blob_check_cache_total",
            "Blob opens whose digest check was remembered (hit) or hashed (miss)",
            &self.blob_check_cache,
        );
        counter(
            &mut out,
            "registryfs_blob_hashed_bytes_total",
            "Blob bytes hashed to check them against their digest",
            self.blob_hashed_bytes.get(),
        );
        family(
            &mut out,
            "registryfs_store_errors_total",
            "Requests that met a store error (answered EIO), by kind",
            &self.store_errors,
        );
        family(
            &mut out,
            "registryfs_store_changes_total",
            "Store changes followed, by kind",
            &self.store_changes,
        );
        family(
            &mut out,
            "registryfs_s3_requests_total",
            "Requests made to an S3 store, by kind",
            &self.s3_requests,
        );
        family(
            &mut out,
            "registryfs_s3_answers_total",
            "Questions about an S3 store's links and listings, by how they were answered",
            &self.s3_answers,
        );
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}.");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

fn family<L: Label, const N: usize>(out: &mut String, name: &str, help: &str, f: &Family<L, N>) {
    header(out, name, help, "counter");
    for (value, c) in L::VALUES.iter().zip(&f.counters) {
        let _ = writeln!(out, "{name}{{{}=\"{value}\"}} {}", L::NAME, c.get());
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    header(out, name, help, "histogram");
    let mut cumulative = 0;
    for (bound, c) in SECONDS_BUCKETS.iter().zip(&h.buckets) {
        cumulative += c.get();
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let count = h.count.get();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", h.sum_ns.get() as f64 / 1e9);
    let _ = writeln!(out, "{name}_count {count}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_histograms_render_in_the_text_format() {
        let m = Metrics::new();
        m.lookups.inc(Found::File);
        m.lookups.add(Found::NotFound, 3);
        m.schema1_generated.observe(Duration::from_micros(300));
        m.schema1_generated.observe(Duration::from_secs(1));
        m.schema1_refused.inc(Refusal::ForeignLayer);
        m.blob_hashed_bytes.add(42);
        let text = m.render();
        for line in [
            "# TYPE registryfs_lookups_total counter",
            "registryfs_lookups_total{result=\"file\"} 1",
            "registryfs_lookups_total{result=\"not_found\"} 3",
            "registryfs_lookups_total{result=\"folder\"} 0",
            "# TYPE registryfs_schema1_generation_seconds histogram",
            "registryfs_schema1_generation_seconds_bucket{le=\"0.00025\"} 0",
            "registryfs_schema1_generation_seconds_bucket{le=\"0.0005\"} 1",
            "registryfs_schema1_generation_seconds_bucket{le=\"0.1\"} 1",
            "registryfs_schema1_generation_seconds_bucket{le=\"+Inf\"} 2",
            "registryfs_schema1_generation_seconds_sum 1.0003",
            "registryfs_schema1_generation_seconds_count 2",
            "registryfs_schema1_refused_total{reason=\"foreign_layer\"} 1",
            "registryfs_blob_hashed_bytes_total 42",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // Every label value of every family is there, every HELP line has its TYPE.
        assert_eq!(
            text.matches("# HELP").count(),
            text.matches("# TYPE").count()
        );
        assert_eq!(text.matches("registryfs_store_errors_total{").count(), 4);
    }

    #[test]
    fn label_values_match_their_enums() {
        fn check<L: Label, const N: usize>(all: [L; N]) {
            assert_eq!(L::VALUES.len(), N);
            for (i, l) in all.iter().enumerate() {
                assert_eq!(l.index(), i);
            }
        }
        check([
            Found::Folder,
            Found::File,
            Found::Link,
            Found::NotFound,
            Found::Error,
        ]);
        check([
            Opened::Document,
            Opened::BlobPassthrough,
            Opened::BlobDaemon,
        ]);
        check([ReadFrom::Document, ReadFrom::Blob]);
        check([
            Refusal::NoPlatformEntry,
            Refusal::PlatformEntryMissing,
            Refusal::NotAnImage,
            Refusal::OciNotConverted,
            Refusal::IndexNotConverted,
            Refusal::ForeignLayer,
            Refusal::Config,
        ]);
        check([CacheResult::Hit, CacheResult::Miss]);
        check([
            StoreError::InvalidContent,
            StoreError::Io,
            StoreError::Conversion,
            StoreError::Other,
        ]);
        check([Change::Repository, Change::Children, Change::Everything]);
    }
}

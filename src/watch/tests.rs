//! The watcher against real folders: fanotify needs root (CAP_SYS_ADMIN); without it
//! those tests say so and skip.

use super::*;
use std::fs;
use std::path::PathBuf;
use std::sync::mpsc;
use StoreChange::{Children, Everything, Repository};

/// Generous: the machine may be busy; nothing here measures speed.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn repo(name: &str) -> StoreChange {
    Repository(name.to_string())
}

fn children(prefix: &str) -> StoreChange {
    Children(prefix.to_string())
}

fn channel_sink() -> (Sink, mpsc::Receiver<Vec<StoreChange>>) {
    let (tx, rx) = mpsc::channel();
    let sink: Sink = Box::new(move |changes| {
        // The receiver is gone only when the test is over.
        let _ = tx.send(changes);
    });
    (sink, rx)
}

/// Whether fanotify can watch `dir`; if not, says why on stderr (the test then skips).
fn fanotify_usable(dir: &Path, layout: Layout) -> bool {
    // SAFETY: plain system call.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: fanotify filesystem marks need root");
        return false;
    }
    let canonical = dir.canonicalize().expect("canonical store path");
    if let Some(reason) = fanotify::why_not(&canonical, layout) {
        eprintln!("skipping: {reason}");
        return false;
    }
    if let Err(e) = fanotify::Listener::new(&canonical, layout) {
        eprintln!("skipping: fanotify cannot be used here: {e}");
        return false;
    }
    true
}

/// A fanotify watcher on `dir` reporting to a channel, or None where fanotify cannot
/// be used.
fn fanotify_watcher(
    dir: &Path,
    layout: Layout,
) -> Option<(Watcher, mpsc::Receiver<Vec<StoreChange>>)> {
    if !fanotify_usable(dir, layout) {
        // Then the watcher polls instead.
        let (sink, _rx) = channel_sink();
        let hour = Duration::from_secs(3600);
        let watcher = watch(dir, layout, hour, sink).expect("watch");
        assert_eq!(watcher.mode(), &Mode::Poll(hour));
        stop(watcher);
        return None;
    }
    let (sink, rx) = channel_sink();
    let watcher = watch(dir, layout, Duration::ZERO, sink).expect("watch");
    assert_eq!(watcher.mode(), &Mode::Fanotify);
    Some((watcher, rx))
}

/// Drops a watcher on another thread and checks that this returns (the thread joined).
fn stop(watcher: Watcher) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(watcher);
        let _ = tx.send(());
    });
    rx.recv_timeout(RECEIVE_TIMEOUT)
        .expect("dropping the watcher stops its thread");
}

/// A temporary folder with a distribution store at `v2` below it (returned), holding one
/// repository, `library/app`.
fn distribution_store(v2: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let v2 = tmp.path().join(v2);
    let app = v2.join("repositories/library/app");
    for dir in [
        app.join("_manifests/tags"),
        app.join("_manifests/revisions/sha256").join("a".repeat(64)),
        app.join("_layers/sha256").join("b".repeat(64)),
        app.join("_uploads"),
        v2.join("repositories/marker/_manifests"),
        v2.join("blobs/sha256/aa").join("a".repeat(64)),
    ] {
        fs::create_dir_all(dir).expect("create store folder");
    }
    (tmp, v2)
}

/// Writes a link file, creating its folders.
fn write_link(link: &Path, digest: &str) {
    fs::create_dir_all(link.parent().expect("link folder")).expect("create link folder");
    fs::write(link, digest).expect("write link");
}

/// Collects what a distribution store's watcher reports for the changes made so far:
/// each call creates one probe folder (a single event) in repository `marker` and
/// gathers the batches up to the one reporting it. Events come in the order they
/// happened, so everything before the probe has been reported by then.
struct Probe {
    v2: PathBuf,
    rx: mpsc::Receiver<Vec<StoreChange>>,
    count: usize,
}

impl Probe {
    fn changes(&mut self) -> BTreeSet<StoreChange> {
        self.count += 1;
        let probe = self.v2.join(format!(
            "repositories/marker/_manifests/probe-{}",
            self.count
        ));
        fs::create_dir(&probe).expect("create probe folder");
        let marker = repo("marker");
        let deadline = Instant::now() + RECEIVE_TIMEOUT;
        let mut seen = BTreeSet::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let batch = self.rx.recv_timeout(left).unwrap_or_else(|e| {
                panic!("no report of {} ({e}); so far {seen:?}", probe.display())
            });
            let mut sorted = batch.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(batch, sorted, "batches are sorted and without duplicates");
            let done = batch.contains(&marker);
            seen.extend(batch.into_iter().filter(|c| *c != marker));
            if done {
                return seen;
            }
        }
    }
}

#[test]
fn distribution_changes_are_reported_in_repository_terms() {
    let (_tmp, v2) = distribution_store("docker/registry/v2");
    let Some((watcher, rx)) = fanotify_watcher(&v2, Layout::Distribution) else {
        return;
    };
    let mut probe = Probe {
        v2: v2.clone(),
        rx,
        count: 0,
    };
    let app = v2.join("repositories/library/app");
    let tag = app.join("_manifests/tags/v1");
    let link = tag.join("current/link");
    let expect = |changes: &[StoreChange]| changes.iter().cloned().collect::<BTreeSet<_>>();

    assert_eq!(probe.changes(), expect(&[]), "nothing happened yet");

    write_link(&link, &digest('a'));
    assert_eq!(probe.changes(), expect(&[repo("library/app")]), "new tag");

    // What registry 2.8.2 does when a tag moves: rewrite current/link in place.
    fs::write(&link, digest('c')).expect("rewrite tag link");
    assert_eq!(probe.changes(), expect(&[repo("library/app")]), "moved tag");

    // New times or modes (ATTRIB) on a link and on a folder (reported as "." in it).
    let unix_time = |secs| std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let read_only = fs::File::open(&link).expect("open link");
    // Both times, as touch(1) sets them: ATTRIB (mtime alone is reported as MODIFY).
    let times = fs::FileTimes::new()
        .set_accessed(unix_time(1_000_000))
        .set_modified(unix_time(1_000_000));
    read_only.set_times(times).expect("touch link");
    assert_eq!(
        probe.changes(),
        expect(&[repo("library/app")]),
        "touched link"
    );
    let mode = |m| std::os::unix::fs::PermissionsExt::from_mode(m);
    fs::set_permissions(&tag, mode(0o750)).expect("chmod tag folder");
    assert_eq!(probe.changes(), expect(&[repo("library/app")]), "chmod tag");
    fs::set_permissions(v2.join("repositories/library"), mode(0o750)).expect("chmod");
    assert_eq!(
        probe.changes(),
        expect(&[children(""), children("library"), repo("library")]),
        "chmod namespace folder"
    );

    fs::remove_dir_all(&tag).expect("rm -rf tag");
    assert_eq!(
        probe.changes(),
        expect(&[repo("library/app")]),
        "deleted tag"
    );

    let upload = app.join("_uploads/0f3c9b2e-upload");
    fs::create_dir_all(upload.join("hashstates/sha256")).expect("upload folder");
    fs::write(upload.join("data"), b"layer bytes").expect("upload data");
    fs::write(upload.join("startedat"), b"2026-01-01T00:00:00Z").expect("startedat");
    fs::remove_dir_all(&upload).expect("finish upload");
    let blob = v2.join("blobs/sha256/cc").join("c".repeat(64));
    fs::create_dir_all(&blob).expect("blob folder");
    fs::write(blob.join("data"), b"{}").expect("blob data");
    assert_eq!(
        probe.changes(),
        expect(&[]),
        "uploads and blobs change nothing"
    );

    let new_link = v2.join("repositories/ns/newrepo/_manifests/tags/latest/current/link");
    write_link(&new_link, &digest('a'));
    assert_eq!(
        probe.changes(),
        expect(&[
            children(""),
            children("ns"),
            children("ns/newrepo"),
            repo("ns"),
            repo("ns/newrepo"),
        ]),
        "new repository in a new namespace"
    );

    fs::remove_dir_all(&app).expect("rm -rf repository");
    assert_eq!(
        probe.changes(),
        expect(&[
            children("library"),
            children("library/app"),
            repo("library/app")
        ]),
        "removed repository"
    );
    stop(watcher);
}

#[test]
fn a_renamed_store_folder_is_followed() {
    let (tmp, v2) = distribution_store("registry/docker/registry/v2");
    let Some((watcher, rx)) = fanotify_watcher(&v2, Layout::Distribution) else {
        return;
    };
    fs::rename(tmp.path().join("registry"), tmp.path().join("moved")).expect("rename");
    let batch = rx.recv_timeout(RECEIVE_TIMEOUT).expect("rename reported");
    assert_eq!(batch, [Everything]);
    let moved = tmp.path().join("moved/docker/registry/v2");
    let mut probe = Probe {
        v2: moved.clone(),
        rx,
        count: 0,
    };
    let link = moved.join("repositories/library/app/_manifests/tags/v2/current/link");
    write_link(&link, &digest('a'));
    assert_eq!(probe.changes(), [repo("library/app")].into_iter().collect());
    stop(watcher);
}

#[test]
fn a_full_event_queue_reports_everything() {
    let (_tmp, v2) = distribution_store("docker/registry/v2");
    if !fanotify_usable(&v2, Layout::Distribution) {
        return;
    }
    let queue: usize = fs::read_to_string("/proc/sys/fs/fanotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16384);
    if queue > 100_000 {
        eprintln!("skipping: the fanotify queue holds {queue} events, too many to fill here");
        return;
    }
    // The sink holds the watcher's thread until the gate opens (its sender dropped),
    // so the kernel's queue fills up meanwhile.
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let (entered_tx, entered_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    let sink: Sink = Box::new(move |changes| {
        let _ = entered_tx.send(());
        let _ = gate_rx.recv();
        let _ = tx.send(changes);
    });
    let watcher = watch(&v2, Layout::Distribution, Duration::ZERO, sink).expect("watch");
    fs::create_dir(v2.join("repositories/marker/_manifests/probe")).expect("probe");
    entered_rx
        .recv_timeout(RECEIVE_TIMEOUT)
        .expect("the sink is called");
    let uploads = v2.join("repositories/library/app/_uploads/many");
    fs::create_dir(&uploads).expect("upload folder");
    for i in 0..=queue {
        fs::File::create(uploads.join(i.to_string())).expect("create file");
    }
    drop(gate_tx);
    let deadline = Instant::now() + RECEIVE_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = rx.recv_timeout(left).expect("overflow reported");
        if batch == [Everything] {
            break;
        }
    }
    stop(watcher);
}

#[test]
fn an_oci_layout_changes_with_its_index() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = tmp.path();
    fs::create_dir_all(layout.join("blobs/sha256")).expect("blobs");
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    fs::write(
        layout.join("index.json"),
        r#"{"schemaVersion":2,"manifests":[]}"#,
    )
    .expect("index");
    let Some((watcher, rx)) = fanotify_watcher(layout, Layout::OciLayout) else {
        return;
    };
    fs::write(layout.join("blobs/sha256").join("d".repeat(64)), b"{}").expect("blob");
    // How tools replace the index: write a new file, rename it into place.
    let tmp_index = layout.join("index.json.tmp");
    fs::write(&tmp_index, r#"{"schemaVersion":2,"manifests":[ ]}"#).expect("new index");
    fs::rename(&tmp_index, layout.join("index.json")).expect("rename index");
    let batch = rx
        .recv_timeout(RECEIVE_TIMEOUT)
        .expect("index change reported");
    assert_eq!(batch, [Everything]);
    stop(watcher);
}

/// A polling watcher (as if fanotify were unavailable) reporting to a channel.
fn polling(interval: Duration) -> (Watcher, mpsc::Receiver<Vec<StoreChange>>) {
    let (sink, rx) = channel_sink();
    let wake = eventfd().expect("eventfd");
    let watcher = start_polling(Path::new("/store"), wake, interval, sink, "test").expect("poll");
    assert_eq!(watcher.mode(), &Mode::Poll(interval));
    (watcher, rx)
}

#[test]
fn polling_reports_everything_at_each_interval() {
    let (watcher, rx) = polling(Duration::from_millis(10));
    for _ in 0..2 {
        let batch = rx.recv_timeout(RECEIVE_TIMEOUT).expect("periodic report");
        assert_eq!(batch, [Everything]);
    }
    stop(watcher);
}

#[test]
fn a_long_poll_interval_does_not_delay_stopping() {
    let (watcher, _rx) = polling(Duration::from_secs(3600));
    stop(watcher);
    let (never, _rx) = polling(Duration::ZERO);
    assert!(never.thread.is_none(), "a zero interval starts no thread");
}

#[test]
fn batches_collapse_into_everything() {
    let mut batch = Batch::default();
    batch.extend([repo("b"), children(""), repo("a"), repo("b")]);
    assert_eq!(batch.take(), [repo("a"), repo("b"), children("")]);
    assert!(batch.is_empty());
    batch.extend([repo("a"), Everything]);
    assert_eq!(batch.take(), [Everything]);
}

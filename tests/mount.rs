//! The FUSE mount, end to end: the built binary mounts a copy of samples/store and what
//! the mount serves is compared with `registryfs ls`/`cat`.
//!
//! Needs root and /dev/fuse; without them each test prints a skip line and passes.
//! Every daemon is unmounted and killed by PID when its guard drops (also when an
//! assertion fails), and a per-test watchdog does the same if the test runs too long,
//! so that a hung FUSE request turns into an error instead of a hung test run.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_registryfs");
const HELLO: &str = "demo/hello";
const TEST_LIMIT: Duration = Duration::from_secs(40);

fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("mount tests need root");
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("mount tests need /dev/fuse");
    }
    None
}

macro_rules! require_fuse {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("skip: {why}");
            return;
        }
    };
}

// ---------------------------------------------------------------------------------
// Harness

/// Kills the test's daemons and detaches its mounts if the test is still running after
/// `TEST_LIMIT`: blocked file operations then fail (ENOTCONN) and the test ends.
struct Watchdog {
    cancel: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    targets: Arc<Mutex<Vec<(i32, PathBuf)>>>,
}

impl Watchdog {
    fn new() -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let targets: Arc<Mutex<Vec<(i32, PathBuf)>>> = Arc::default();
        let t = targets.clone();
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(TEST_LIMIT) {
                eprintln!("watchdog: test still running after {TEST_LIMIT:?}; killing its daemons");
                for (pid, mnt) in t.lock().unwrap().iter() {
                    kill(*pid, libc::SIGKILL);
                    detach(mnt);
                }
            }
        });
        Watchdog {
            cancel: Some(tx),
            thread: Some(thread),
            targets,
        }
    }

    fn watch(&self, pid: i32, mnt: &Path) {
        self.targets.lock().unwrap().push((pid, mnt.to_path_buf()));
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.cancel.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: plain kill(2) on a PID this test started.
    unsafe { libc::kill(pid, sig) };
}

fn detach(mnt: &Path) {
    let c = std::ffi::CString::new(mnt.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// Mount entries at `mnt` in /proc/self/mountinfo: (fstype, source, super options,
/// mount options).
fn mounts_at(mnt: &Path) -> Vec<(String, String, String, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = mnt.to_str().unwrap();
    info.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            (left.get(4) == Some(&want)).then(|| {
                (
                    right[0].to_string(),
                    right[1].to_string(),
                    right.get(2).unwrap_or(&"").to_string(),
                    left[5].to_string(),
                )
            })
        })
        .collect()
}

fn is_mounted(mnt: &Path) -> bool {
    !mounts_at(mnt).is_empty()
}

fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // State is the field after "(comm)"; Z is a zombie.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// A copy of samples/store, a signing key and an empty mount point.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/store");
        copy_tree(&samples, &dir.path().join("store"));
        fs::create_dir(dir.path().join("mnt")).unwrap();
        let out = Command::new(BIN)
            .arg("keygen")
            .arg(dir.path().join("key.json"))
            .output()
            .unwrap();
        assert!(out.status.success(), "keygen: {out:?}");
        Fixture { dir }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("key.json")
    }
    fn v2(&self) -> PathBuf {
        self.store().join("docker/registry/v2")
    }

    /// `registryfs cat` with the fixture's key.
    fn cat(&self, path: &str) -> Vec<u8> {
        self.cat_with(&[], path)
            .unwrap_or_else(|e| panic!("cat {path}: {e}"))
    }

    fn cat_with(&self, flags: &[&str], path: &str) -> Result<Vec<u8>, String> {
        let out = Command::new(BIN)
            .arg("--signing-key")
            .arg(self.key())
            .args(flags)
            .arg("cat")
            .arg(self.store())
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `registryfs ls` lines (folders end in '/').
    fn ls(&self, path: &str) -> Vec<String> {
        let mut cmd = Command::new(BIN);
        cmd.arg("ls").arg(self.store());
        if !path.is_empty() {
            cmd.arg(path);
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "ls {path}: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.v2()
            .join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]))
    }

    fn tag_link(&self, repo: &str, tag: &str) -> PathBuf {
        self.v2().join(format!(
            "repositories/{repo}/_manifests/tags/{tag}/current/link"
        ))
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A running registryfs daemon and its mount. Dropping it detaches the mount and kills
/// the daemon by PID.
struct Mount {
    pid: i32,
    child: Option<Child>,
    mnt: PathBuf,
    log: PathBuf,
}

impl Mount {
    /// `registryfs --signing-key K mount STORE MNT args...` in the foreground, with
    /// debug logging of the adapter into `log`; returns once the mount is listed.
    fn start(w: &Watchdog, fx: &Fixture, args: &[&str], log_name: &str) -> Mount {
        let log = fx.dir.path().join(log_name);
        let child = Command::new(BIN)
            .arg("--signing-key")
            .arg(fx.key())
            .arg("mount")
            .arg(fx.store())
            .arg(fx.mnt())
            .args(args)
            .env("RUST_LOG", "info,registryfs::fuse=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        w.watch(pid, &fx.mnt());
        let mut m = Mount {
            pid,
            child: Some(child),
            mnt: fx.mnt(),
            log,
        };
        // Listed, and answering (a stale mount left there answers ENOTCONN).
        let up = wait_for(Duration::from_secs(10), || {
            (is_mounted(&m.mnt) && fs::metadata(&m.mnt).is_ok())
                || m.child.as_mut().unwrap().try_wait().unwrap().is_some()
        });
        assert!(up && m.is_running(), "mount did not come up:\n{}", m.log());
        m
    }

    /// A daemon started by someone else (mount(8)).
    fn adopt(w: &Watchdog, pid: i32, mnt: &Path, log: &Path) -> Mount {
        w.watch(pid, mnt);
        Mount {
            pid,
            child: None,
            mnt: mnt.to_path_buf(),
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => process_alive(self.pid),
        }
    }

    /// Waits (bounded) for the daemon to exit; the status if it is our child.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match &mut self.child {
                Some(c) => {
                    if let Some(status) = c.try_wait().unwrap() {
                        return Some(status);
                    }
                }
                None => {
                    if !process_alive(self.pid) {
                        return None;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "daemon {} still running after {limit:?}:\n{}",
                self.pid,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            detach(&self.mnt);
        }
        if self.is_running() {
            kill(self.pid, libc::SIGKILL);
        }
        if let Some(child) = &mut self.child {
            let _ = wait_for(Duration::from_secs(5), || {
                child.try_wait().map(|s| s.is_some()).unwrap_or(true)
            });
        }
        // A detached stale mount may linger underneath if the daemon died first.
        for _ in 0..4 {
            if !is_mounted(&self.mnt) {
                break;
            }
            detach(&self.mnt);
        }
    }
}

/// Every folder and file under `root`, relative, '/'-joined.
fn walk(root: &Path) -> (Vec<String>, Vec<String>) {
    let mut dirs = vec![String::new()];
    let mut files = Vec::new();
    let mut i = 0;
    while i < dirs.len() {
        let rel = dirs[i].clone();
        for entry in fs::read_dir(root.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if entry.file_type().unwrap().is_dir() {
                dirs.push(child);
            } else {
                files.push(child);
            }
        }
        i += 1;
    }
    files.sort();
    (dirs, files)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let slash = if e.file_type().unwrap().is_dir() {
                "/"
            } else {
                ""
            };
            format!("{}{slash}", e.file_name().to_str().unwrap())
        })
        .collect();
    names.sort();
    names
}

fn json_layers(manifest: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn errno(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// access(2)'s errno, None when allowed.
fn access(path: &Path, mode: libc::c_int) -> Option<i32> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    if unsafe { libc::access(c.as_ptr(), mode) } == 0 {
        None
    } else {
        std::io::Error::last_os_error().raw_os_error()
    }
}

/// The mount's readahead in KiB (its backing device's, in sysfs).
fn read_ahead_kb(mnt: &Path) -> Option<u32> {
    let dev = fs::metadata(mnt).ok()?.dev();
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    fs::read_to_string(knob).ok()?.trim().parse().ok()
}

// ---------------------------------------------------------------------------------
// Tests

fn every_file_matches_cat(extra: &[&str], passthrough: bool) {
    let w = Watchdog::new();
    let fx = Fixture::new();
    let m = Mount::start(&w, &fx, extra, "mount.log");
    // Reads the daemon answers come in 1 MiB requests (set just after the handshake).
    assert!(
        wait_for(Duration::from_secs(5), || read_ahead_kb(&m.mnt)
            == Some(1024)),
        "the mount's readahead: {:?} KiB",
        read_ahead_kb(&m.mnt)
    );
    let (dirs, files) = walk(&m.mnt);
    assert!(files.len() >= 24, "too few files: {files:?}");
    for dir in &dirs {
        assert_eq!(listing(&m.mnt.join(dir)), fx.ls(dir), "ls {dir:?}");
        let meta = fs::metadata(m.mnt.join(dir)).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o555, "{dir}");
    }
    for file in &files {
        let path = m.mnt.join(file);
        let served = fs::read(&path).unwrap_or_else(|e| panic!("read {file}: {e}"));
        assert!(served == fx.cat(file), "{file} differs from registryfs cat");
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), served.len() as u64, "stat size of {file}");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o444, "{file}");
        assert_eq!((meta.uid(), meta.gid()), (0, 0));
        // Reads at an offset (what a web server does for ranges) agree too.
        if served.len() > 10 {
            let mut buf = vec![0; served.len() - 7];
            File::open(&path)
                .unwrap()
                .read_exact_at(&mut buf, 7)
                .unwrap();
            assert_eq!(buf, served[7..], "{file} at offset 7");
        }
    }
    // The usual tools see the same tree.
    let find = Command::new("find")
        .arg(&m.mnt)
        .args(["-type", "f"])
        .output()
        .unwrap();
    assert!(find.status.success());
    assert_eq!(
        String::from_utf8_lossy(&find.stdout).lines().count(),
        files.len()
    );
    let ls = Command::new("ls").arg("-lR").arg(&m.mnt).output().unwrap();
    assert!(ls.status.success(), "ls -lR: {ls:?}");
    let blob = files.iter().find(|f| f.contains("/blobs/")).unwrap();
    let stat = Command::new("stat")
        .args(["-c", "%s %a"])
        .arg(m.mnt.join(blob))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&stat.stdout).trim(),
        format!("{} 444", fx.cat(blob).len())
    );
    // Missing names are ENOENT.
    assert_eq!(
        errno(fs::metadata(m.mnt.join("demo/nope"))),
        Some(libc::ENOENT)
    );
    assert_eq!(
        errno(fs::metadata(m.mnt.join("demo/hello/manifests/latest/oci"))),
        Some(libc::ENOENT)
    );
    let not_utf8 = std::ffi::OsStr::from_bytes(b"demo/\xff");
    assert_eq!(
        errno(fs::metadata(m.mnt.join(not_utf8))),
        Some(libc::ENOENT)
    );
    // Extended attributes are not supported (ENOSYS to the kernel, which then answers
    // EOPNOTSUPP itself without asking again).
    let c = std::ffi::CString::new(m.mnt.join(HELLO).as_os_str().as_bytes()).unwrap();
    let name = c"user.test";
    let mut buf = [0u8; 64];
    for _ in 0..2 {
        // SAFETY: valid path and name; buf is writable for its length.
        let rc = unsafe { libc::getxattr(c.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 64) };
        assert_eq!(rc, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EOPNOTSUPP)
        );
    }

    let log = m.log();
    assert!(
        !log.contains(" WARN "),
        "warnings while serving good files:\n{log}"
    );
    if passthrough {
        // Blob opens were handed to the kernel and no blob read reached the daemon.
        assert!(log.contains("FUSE passthrough negotiated"), "{log}");
        assert!(log.contains(": passthrough"), "{log}");
        assert!(!log.contains("daemon read"), "{log}");
    } else {
        assert!(log.contains("passthrough off"), "{log}");
        assert!(log.contains("daemon read"), "{log}");
    }
}

#[test]
fn every_file_matches_cat_with_passthrough() {
    require_fuse!();
    every_file_matches_cat(&[], true);
}

#[test]
fn every_file_matches_cat_without_passthrough() {
    require_fuse!();
    every_file_matches_cat(&["--no-passthrough", "--threads", "3"], false);
}

/// The links web servers resolve (a tag's `digest/`, `_catalog/page.<query>`): symlinks
/// the kernel follows, found by lookup only, naming what `registryfs ls` names.
#[test]
fn digest_and_catalog_links_resolve_through_the_mount() {
    require_fuse!();
    let w = Watchdog::new();
    let fx = Fixture::new();
    let m = Mount::start(&w, &fx, &[], "mount.log");
    let tag = m.mnt.join(HELLO).join("manifests/latest");
    let revision = fs::read_link(tag.join("digest/revision")).expect("readlink revision");
    let revision = revision.to_str().expect("UTF-8")["revision@".len()..].to_string();
    for kind in ["schema1", "schema2", "revision"] {
        let link = tag.join("digest").join(kind);
        let meta = fs::symlink_metadata(&link).expect("lstat the link");
        assert!(meta.file_type().is_symlink(), "{kind}");
        let target = fs::read_link(&link).expect("readlink");
        let target = target.to_str().expect("UTF-8");
        let digest = target
            .strip_prefix(&format!("{kind}@"))
            .expect("kind@digest");
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{target}"
        );
        assert_eq!(
            fs::read(&link).expect("read through the link"),
            digest.as_bytes()
        );
        let real = fs::canonicalize(&link).expect("realpath");
        assert_eq!(real, tag.join("digest").join(target));
        // nginx's 304 test: `revision=<digest>` is there for the revision only.
        let revision_is = tag.join("digest").join(format!("revision={digest}"));
        assert_eq!(revision_is.exists(), digest == revision, "{kind}");
        assert_eq!(kind == "schema1", digest != revision, "{kind}");
    }
    let stored = fs::read_link(tag.join("digest/schema2")).expect("readlink");
    let stored = stored
        .to_str()
        .expect("UTF-8")
        .trim_start_matches("schema2@");
    assert_eq!(
        fs::read(
            m.mnt
                .join(HELLO)
                .join("manifests")
                .join(stored)
                .join("schema2")
        )
        .expect("by digest"),
        fs::read(tag.join("schema2")).expect("by tag")
    );
    assert!(!listing(&tag).iter().any(|n| n.starts_with("digest")));
    assert!(!listing(&m.mnt).iter().any(|n| n.starts_with('_')));
    let page = m.mnt.join("_catalog/page.n=1");
    assert_eq!(
        fs::read_link(&page).expect("readlink page").to_str(),
        Some("more.last=demo%2Fhello&n=1")
    );
    assert_eq!(
        fs::read(&page).expect("page"),
        b"{\"repositories\":[\"demo/hello\"]}\n"
    );
}

#[test]
fn writes_are_refused_with_erofs_and_files_do_not_run() {
    require_fuse!();
    let w = Watchdog::new();
    let fx = Fixture::new();
    let m = Mount::start(&w, &fx, &[], "mount.log");
    let file = m.mnt.join(HELLO).join("tags/list");
    let dir = m.mnt.join(HELLO);
    let erofs = Some(libc::EROFS);
    assert_eq!(
        errno(fs::OpenOptions::new().write(true).open(&file)),
        erofs,
        "write"
    );
    assert_eq!(
        errno(fs::OpenOptions::new().append(true).open(&file)),
        erofs,
        "append"
    );
    assert_eq!(errno(File::create(dir.join("new"))), erofs, "create");
    assert_eq!(errno(fs::create_dir(dir.join("newdir"))), erofs, "mkdir");
    assert_eq!(
        errno(fs::rename(&file, dir.join("renamed"))),
        erofs,
        "rename"
    );
    assert_eq!(
        errno(fs::set_permissions(
            &file,
            fs::Permissions::from_mode(0o644)
        )),
        erofs,
        "chmod"
    );
    assert_eq!(errno(fs::remove_file(&file)), erofs, "unlink");
    assert_eq!(errno(fs::remove_dir(dir.join("tags"))), erofs, "rmdir");
    assert_eq!(
        errno(std::os::unix::fs::symlink("x", dir.join("l"))),
        erofs,
        "symlink"
    );
    assert_eq!(errno(fs::hard_link(&file, dir.join("h"))), erofs, "link");
    let (fstype, source, super_opts, opts) = mounts_at(&m.mnt).pop().unwrap();
    assert_eq!(fstype, "fuse.registryfs");
    assert_eq!(Path::new(&source), fx.store().canonicalize().unwrap());
    assert!(opts.split(',').any(|o| o == "ro"), "{opts}");
    // No default_permissions (docs/performance.md): the daemon answers access(2) as the
    // modes would, and the kernel refuses to run a file without an x bit.
    assert!(!super_opts.contains("default_permissions"), "{super_opts}");
    assert_eq!(access(&file, libc::R_OK), None, "access R_OK");
    assert_eq!(access(&dir, libc::X_OK), None, "access X_OK of a folder");
    assert_eq!(access(&file, libc::W_OK), erofs, "access W_OK");
    assert_eq!(access(&file, libc::X_OK), Some(libc::EACCES), "access X_OK");
    assert_eq!(
        errno(std::process::Command::new(&file).status()),
        Some(libc::EACCES),
        "exec"
    );
    assert!(
        !super_opts.contains("allow_other"),
        "allow_other is opt-in: {super_opts}"
    );
    // Still readable afterwards.
    assert_eq!(
        fs::read(&file).unwrap(),
        fx.cat(&format!("{HELLO}/tags/list"))
    );
}

#[test]
fn a_moved_tag_shows_up_after_the_ttl_and_open_files_keep_their_bytes() {
    require_fuse!();
    let w = Watchdog::new();
    let fx = Fixture::new();
    let m = Mount::start(&w, &fx, &["--tag-ttl", "1"], "mount.log");
    let s1 = format!("{HELLO}/manifests/latest/schema1");
    let s2 = format!("{HELLO}/manifests/latest/schema2");
    let old1 = fx.cat(&s1);
    let old2 = fx.cat(&s2);
    let new2 = fx.cat(&format!("{HELLO}/manifests/v1/schema2"));
    assert_ne!(old2, new2);

    // Open handles on the old versions, partly read.
    let h1 = File::open(m.mnt.join(&s1)).unwrap();
    let h2 = File::open(m.mnt.join(&s2)).unwrap();
    let mut head = vec![0; 100];
    h1.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, old1[..100]);
    h2.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, old2[..100]);

    // Readers running across the move must only ever see one whole version.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let (p1, p2) = (m.mnt.join(&s1), m.mnt.join(&s2));
        std::thread::spawn(move || {
            let mut seen = (BTreeSet::new(), BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.0.insert(fs::read(&p1).unwrap());
                seen.1.insert(fs::read(&p2).unwrap());
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(200));

    // Move latest to v1's manifest, as a push would (write and rename).
    let link = fx.tag_link(HELLO, "latest");
    let v1 = fs::read(fx.tag_link(HELLO, "v1")).unwrap();
    let tmp = link.with_extension("tmp");
    fs::write(&tmp, &v1).unwrap();
    fs::rename(&tmp, &link).unwrap();
    let moved = Instant::now();
    let new1 = fx.cat(&s1);
    assert_ne!(old1, new1);

    // A new open sees the new version within the TTL (plus slack for a loaded machine).
    assert!(
        wait_for(Duration::from_secs(5), || fs::read(m.mnt.join(&s2))
            .unwrap()
            == new2),
        "the moved tag never showed up"
    );
    assert!(
        moved.elapsed() < Duration::from_secs(4),
        "took {:?}",
        moved.elapsed()
    );
    assert_eq!(fs::read(m.mnt.join(&s1)).unwrap(), new1);
    assert_eq!(
        fs::metadata(m.mnt.join(&s1)).unwrap().len(),
        new1.len() as u64
    );

    // The open handles still read the old bytes, to the end and from the start.
    let mut rest = vec![0; old1.len() - 100];
    h1.read_exact_at(&mut rest, 100).unwrap();
    assert_eq!(rest, old1[100..]);
    let mut whole = vec![0; old2.len()];
    h2.read_exact_at(&mut whole, 0).unwrap();
    assert_eq!(whole, old2);
    assert_eq!(h1.metadata().unwrap().len(), old1.len() as u64);
    let mut past_end = [0u8; 8];
    assert_eq!(h1.read_at(&mut past_end, old1.len() as u64).unwrap(), 0);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (seen1, seen2) = reader.join().unwrap();
    let allowed1: BTreeSet<Vec<u8>> = [old1, new1].into_iter().collect();
    let allowed2: BTreeSet<Vec<u8>> = [old2, new2].into_iter().collect();
    assert!(seen1.is_subset(&allowed1), "schema1 mixed versions");
    assert!(seen2.is_subset(&allowed2), "schema2 mixed versions");
}

/// With change notifications the kernel caches tag paths for a minute, yet a push shows
/// at once: the daemon drops what the change made stale, cached names and cached
/// "no such name" answers alike, and folder times follow the store.
#[test]
fn with_change_notifications_pushes_show_at_once_despite_long_lifetimes() {
    require_fuse!();
    let w = Watchdog::new();
    let fx = Fixture::new();
    let m = Mount::start(&w, &fx, &[], "mount.log");
    let log = m.log();
    assert!(log.contains("with fanotify"), "{log}");
    assert!(log.contains("cached for 60s"), "{log}");
    let s2 = m.mnt.join(format!("{HELLO}/manifests/latest/schema2"));
    let new2 = fx.cat(&format!("{HELLO}/manifests/v1/schema2"));
    assert_ne!(fs::read(&s2).unwrap(), new2);
    let fresh = m.mnt.join(format!("{HELLO}/manifests/fresh"));
    assert_eq!(errno(fs::metadata(&fresh)), Some(libc::ENOENT));

    // Readers keep the tag's names in use across the moves: the kernel then keeps
    // the folder's old dentries, and only a new folder inode gives a fresh view.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, s2) = (stop.clone(), s2.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = fs::read(&s2);
                }
            })
        })
        .collect();
    // Move latest in place, as registry 2.8.2 writes links (truncate, then write),
    // back and forth.
    let link = fx.tag_link(HELLO, "latest");
    let v1 = fs::read(fx.tag_link(HELLO, "v1")).unwrap();
    let (old_link, old2) = (fs::read(&link).unwrap(), fs::read(&s2).unwrap());
    for (target, want) in [(&v1, &new2), (&old_link, &old2), (&v1, &new2)] {
        std::thread::sleep(Duration::from_millis(50));
        fs::write(&link, target).unwrap();
        let moved = Instant::now();
        assert!(
            wait_for(Duration::from_secs(5), || fs::read(&s2).unwrap() == *want),
            "the moved tag never showed up:\n{}",
            m.log()
        );
        assert!(
            moved.elapsed() < Duration::from_secs(5),
            "took {:?}; the lifetime is 60 s",
            moved.elapsed()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let pushed = fs::metadata(&link).unwrap().modified().unwrap();
    let tag_dir = s2.parent().unwrap();
    assert!(
        wait_for(Duration::from_secs(2), || fs::metadata(tag_dir)
            .unwrap()
            .modified()
            .unwrap()
            == pushed),
        "the tag folder's time is the push's"
    );

    // A new tag, looked up (and not found) before it was pushed. The folders whose
    // listing it changes were stat'ed before: their cached times must not outlive it.
    let folder_time = |p: &Path| fs::metadata(p).unwrap().modified().unwrap();
    let (mnt_tags, mnt_manifests) = (
        m.mnt.join(format!("{HELLO}/tags")),
        m.mnt.join(format!("{HELLO}/manifests")),
    );
    let before = (folder_time(&mnt_tags), folder_time(&mnt_manifests));
    let fresh_link = fx.tag_link(HELLO, "fresh");
    fs::create_dir_all(fresh_link.parent().unwrap()).unwrap();
    fs::write(&fresh_link, &v1).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || fresh.join("schema2").exists()),
        "the new tag never showed up:\n{}",
        m.log()
    );
    let store_tags = fresh_link.ancestors().nth(3).unwrap();
    assert!(
        wait_for(Duration::from_secs(2), || folder_time(&mnt_tags)
            == folder_time(store_tags)
            && folder_time(&mnt_manifests) >= folder_time(store_tags)),
        "tags/ and manifests/ take the store's new time (they were {before:?})"
    );
    assert_eq!(fs::read(fresh.join("schema2")).unwrap(), new2);
    let tags = fs::read_to_string(m.mnt.join(format!("{HELLO}/tags/list"))).unwrap();
    assert!(tags.contains("\"fresh\""), "{tags}");
}

#[test]
fn a_corrupt_blob_gives_eio_and_everything_else_still_serves() {
    require_fuse!();
    let w = Watchdog::new();
    let fx = Fixture::new();
    let layers = json_layers(&fx.cat(&format!("{HELLO}/manifests/latest/schema2")));
    let bad = layers[0].clone();
    let flip = |path: &Path| {
        let mut bytes = fs::read(path).unwrap();
        bytes[0] ^= 0xff;
        fs::write(path, bytes).unwrap();
    };
    flip(&fx.blob_file(&bad));
    let m = Mount::start(&w, &fx, &[], "mount.log");

    let bad_path = m.mnt.join(format!("{HELLO}/blobs/{bad}"));
    let len = fs::metadata(fx.blob_file(&bad)).unwrap().len();
    assert_eq!(
        fs::metadata(&bad_path).unwrap().len(),
        len,
        "stat still works"
    );
    assert_eq!(errno(fs::read(&bad_path)), Some(libc::EIO));
    assert_eq!(errno(fs::read(&bad_path)), Some(libc::EIO), "every time");
    assert!(fx.cat_with(&[], &format!("{HELLO}/blobs/{bad}")).is_err());

    // A blob corrupted while mounted, before its first open, is caught as well.
    let other = m.mnt.join("demo/multi/blobs");
    let multi_layers = json_layers(&fx.cat("demo/multi/manifests/latest/schema2"));
    flip(&fx.blob_file(&multi_layers[0]));
    assert_eq!(
        errno(fs::read(other.join(&multi_layers[0]))),
        Some(libc::EIO)
    );

    // Everything else is served as before.
    let (_, files) = walk(&m.mnt);
    let broken = [
        format!("{HELLO}/blobs/{bad}"),
        format!("demo/multi/blobs/{}", multi_layers[0]),
    ];
    let mut served = 0;
    for file in files.iter().filter(|f| !broken.contains(f)) {
        let bytes = fs::read(m.mnt.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(bytes == fx.cat(file), "{file}");
        served += 1;
    }
    assert!(served >= 22, "{served}");
    // The log names the bad file.
    let log = m.log();
    let data = fx.blob_file(&bad);
    assert!(
        log.contains(" WARN ") && log.contains(data.to_str().unwrap()),
        "the warning should name {}:\n{log}",
        data.display()
    );
}

/// `name` (with its labels) in a Prometheus text answer.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse::<f64>()
        .unwrap_or_else(|e| panic!("{name}: {e}")) as u64
}

#[test]
fn metrics_count_what_the_mount_serves() {
    require_fuse!();
    let w = Watchdog::new();
    let fx = Fixture::new();
    let good = json_layers(&fx.cat(&format!("{HELLO}/manifests/latest/schema2")))[0].clone();
    let bad = json_layers(&fx.cat("demo/multi/manifests/latest/schema2"))[0].clone();
    let mut bytes = fs::read(fx.blob_file(&bad)).unwrap();
    bytes[0] ^= 0xff;
    fs::write(fx.blob_file(&bad), bytes).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut m = Mount::start(
        &w,
        &fx,
        &["--no-passthrough", "--metrics-listen", &listen],
        "mount.log",
    );
    let schema1 = fs::read(m.mnt.join(format!("{HELLO}/manifests/latest/schema1"))).unwrap();
    assert_eq!(
        schema1,
        fx.cat(&format!("{HELLO}/manifests/latest/schema1"))
    );
    let good_len = fs::read(m.mnt.join(format!("{HELLO}/blobs/{good}")))
        .unwrap()
        .len() as u64;
    assert_eq!(
        errno(fs::read(m.mnt.join(format!("demo/multi/blobs/{bad}")))),
        Some(libc::EIO)
    );
    assert!(fs::metadata(m.mnt.join(format!("{HELLO}/manifests/nosuchtag"))).is_err());

    let scrape = || {
        use std::io::Read;
        let mut conn = std::net::TcpStream::connect(&listen).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        answer
    };
    let text = scrape();
    assert!(metric(&text, "registryfs_lookups_total{result=\"file\"}") >= 3);
    assert!(metric(&text, "registryfs_lookups_total{result=\"folder\"}") >= 4);
    assert!(metric(&text, "registryfs_lookups_total{result=\"not_found\"}") >= 1);
    assert!(metric(&text, "registryfs_schema1_generation_seconds_count") >= 1);
    assert!(metric(&text, "registryfs_schema1_cache_total{result=\"miss\"}") >= 1);
    assert!(metric(&text, "registryfs_opens_total{kind=\"document\"}") >= 1);
    assert!(metric(&text, "registryfs_opens_total{kind=\"blob_daemon\"}") >= 1);
    assert_eq!(
        metric(&text, "registryfs_opens_total{kind=\"blob_passthrough\"}"),
        0
    );
    assert!(metric(&text, "registryfs_read_bytes_total{source=\"blob\"}") >= good_len);
    assert!(
        metric(&text, "registryfs_read_bytes_total{source=\"document\"}") >= schema1.len() as u64
    );
    assert!(metric(&text, "registryfs_blob_hashed_bytes_total") >= good_len);
    assert!(
        metric(
            &text,
            "registryfs_store_errors_total{kind=\"invalid_content\"}"
        ) >= 1
    );
    // Counters only grow.
    fs::read(m.mnt.join(format!("{HELLO}/tags/list"))).unwrap();
    let later = scrape();
    let name = "registryfs_lookups_total{result=\"file\"}";
    assert!(metric(&later, name) >= metric(&text, name));
    // The listener's thread starts before the mount's: SIGTERM must still unmount.
    kill(m.pid, libc::SIGTERM);
    let status = m.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status:?}\n{}", m.log());
    assert!(!is_mounted(&m.mnt));
}

#[test]
fn sigterm_unmounts_and_exits_0() {
    require_fuse!();
    let w = Watchdog::new();
    let fx = Fixture::new();
    let mut m = Mount::start(&w, &fx, &[], "mount.log");
    assert!(!fs::read(m.mnt.join(format!("{HELLO}/tags/list")))
        .unwrap()
        .is_empty());
    kill(m.pid, libc::SIGTERM);
    let status = m.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status:?}\n{}", m.log());
    assert!(!is_mounted(&m.mnt));
    assert_eq!(
        fs::read_dir(&m.mnt).unwrap().count(),
        0,
        "the plain folder again"
    );
}

#[test]
fn sigterm_with_a_file_open_detaches_at_once_and_exits_after_the_grace() {
    require_fuse!();
    let w = Watchdog::new();
    let fx = Fixture::new();
    let mut m = Mount::start(&w, &fx, &[], "mount.log");
    let list = format!("{HELLO}/tags/list");
    let held = File::open(m.mnt.join(&list)).unwrap();
    kill(m.pid, libc::SIGTERM);
    // Detached right away although a file is open (a plain unmount would be EBUSY).
    assert!(
        wait_for(Duration::from_secs(3), || !is_mounted(&m.mnt)),
        "still mounted:\n{}",
        m.log()
    );
    // The open file is still served meanwhile.
    let mut buf = vec![0; fx.cat(&list).len()];
    held.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, fx.cat(&list));
    let status = m.wait_exit(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "{status:?}\n{}", m.log());
    drop(held);
}

#[test]
fn a_stale_mount_is_cleared_at_the_next_mount() {
    require_fuse!();
    let w = Watchdog::new();
    let fx = Fixture::new();
    let mut first = Mount::start(&w, &fx, &[], "first.log");
    kill(first.pid, libc::SIGKILL);
    first.wait_exit(Duration::from_secs(10));
    // stat reports the dead daemon once the root's attributes expire (the tag TTL).
    assert!(
        wait_for(Duration::from_secs(5), || {
            errno(fs::metadata(&first.mnt)) == Some(libc::ENOTCONN)
        }),
        "stat should give ENOTCONN"
    );
    assert_eq!(mounts_at(&fx.mnt()).len(), 1);

    let second = Mount::start(&w, &fx, &[], "second.log");
    assert!(
        second.log().contains("stale FUSE mount"),
        "{}",
        second.log()
    );
    assert_eq!(mounts_at(&fx.mnt()).len(), 1, "the stale mount is gone");
    let list = format!("{HELLO}/tags/list");
    assert_eq!(fs::read(second.mnt.join(&list)).unwrap(), fx.cat(&list));
}

/// Installs scripts/mount.fuse.registryfs as /sbin/mount.fuse.registryfs for the
/// test's duration.
struct Helper(PathBuf);

impl Helper {
    fn install() -> Option<Helper> {
        let target = PathBuf::from("/sbin/mount.fuse.registryfs");
        if target.exists() {
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mount.fuse.registryfs");
        fs::copy(&script, &target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
        Some(Helper(target))
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The daemon `registryfs mount --daemon ... MNT` (found by its command line).
fn daemon_pid(mnt: &Path) -> Option<i32> {
    let bin = fs::canonicalize(BIN).unwrap();
    fs::read_dir("/proc").ok()?.find_map(|e| {
        let e = e.ok()?;
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        if fs::read_link(e.path().join("exe")).ok()? != bin {
            return None;
        }
        let cmdline = fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        (args.contains(&&b"--daemon"[..]) && args.contains(&mnt.as_os_str().as_bytes()))
            .then_some(pid)
    })
}

/// Runs mount(8) (bounded), with the helper finding our binary through $REGISTRYFS.
fn run_mount(fx: &Fixture, args: &[&std::ffi::OsStr], log: &Path) -> ExitStatus {
    let mut child = Command::new("mount")
        .args(args)
        .env("REGISTRYFS", BIN)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // A file, not a pipe: the daemon keeps stderr as its log.
        .stderr(File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut status = None;
    let done = wait_for(Duration::from_secs(20), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !done {
        let _ = child.kill();
        let _ = child.wait();
        if let Some(pid) = daemon_pid(&fx.mnt()) {
            kill(pid, libc::SIGKILL);
        }
        detach(&fx.mnt());
        panic!(
            "mount(8) hung:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
    }
    status.unwrap()
}

fn umount(mnt: &Path) {
    let status = Command::new("umount").arg(mnt).status().unwrap();
    assert!(status.success(), "umount {}", mnt.display());
}

#[test]
fn mount_t_fuse_registryfs_and_fstab_work_through_the_helper() {
    require_fuse!();
    let Some(_helper) = Helper::install() else {
        eprintln!("skip: /sbin/mount.fuse.registryfs exists already; not replacing it");
        return;
    };
    let w = Watchdog::new();
    let fx = Fixture::new();
    let mnt = fx.mnt();

    // mount -t fuse.registryfs with options, as an admin would type it.
    let log = fx.dir.path().join("helper.log");
    let opts = format!(
        "allow_other,signing_key={},platform=linux/arm64,tag_ttl=0.5,nofail",
        fx.key().display()
    );
    let status = run_mount(
        &fx,
        &[
            "-t".as_ref(),
            "fuse.registryfs".as_ref(),
            "-o".as_ref(),
            opts.as_ref(),
            fx.store().as_os_str(),
            mnt.as_os_str(),
        ],
        &log,
    );
    assert!(
        status.success(),
        "mount -t: {status:?}\n{}",
        fs::read_to_string(&log).unwrap()
    );
    let pid = daemon_pid(&mnt).expect("daemon process");
    let mut m = Mount::adopt(&w, pid, &mnt, &log);
    let (fstype, _, super_opts, opts) = mounts_at(&mnt).pop().unwrap();
    assert_eq!(fstype, "fuse.registryfs");
    assert!(super_opts.contains("allow_other"), "{super_opts}");
    assert!(opts.split(',').any(|o| o == "ro"), "{opts}");
    // The options reached the namespace: the key signs schema1, the platform picks
    // the arm64 entry.
    let s1 = format!("{HELLO}/manifests/latest/schema1");
    assert_eq!(fs::read(mnt.join(&s1)).unwrap(), fx.cat(&s1));
    let multi = "demo/multi/manifests/latest/schema2";
    let arm = fx.cat_with(&["--platform", "linux/arm64"], multi).unwrap();
    assert_ne!(arm, fx.cat(multi));
    assert_eq!(fs::read(mnt.join(multi)).unwrap(), arm);
    // umount(8) stops the daemon.
    umount(&mnt);
    m.wait_exit(Duration::from_secs(10));
    drop(m);

    // An fstab line (mount -T reads another fstab than /etc/fstab).
    let fstab = fx.dir.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "# test\n{} {} fuse.registryfs signing_key={},tag_ttl=0,x-test.comment,_netdev 0 0\n",
            fx.store().display(),
            mnt.display(),
            fx.key().display()
        ),
    )
    .unwrap();
    let log = fx.dir.path().join("fstab.log");
    let status = run_mount(
        &fx,
        &["-T".as_ref(), fstab.as_os_str(), mnt.as_os_str()],
        &log,
    );
    assert!(
        status.success(),
        "mount -T: {status:?}\n{}",
        fs::read_to_string(&log).unwrap()
    );
    let pid = daemon_pid(&mnt).expect("daemon process");
    let mut m = Mount::adopt(&w, pid, &mnt, &log);
    assert_eq!(fs::read(mnt.join(&s1)).unwrap(), fx.cat(&s1));
    let (_, _, super_opts, _) = mounts_at(&mnt).pop().unwrap();
    assert!(!super_opts.contains("allow_other"), "{super_opts}");
    umount(&mnt);
    m.wait_exit(Duration::from_secs(10));

    // A bad option fails the mount with a message and leaves nothing behind.
    let log = fx.dir.path().join("bad.log");
    let status = run_mount(
        &fx,
        &[
            "-t".as_ref(),
            "fuse.registryfs".as_ref(),
            "-o".as_ref(),
            "tagttl=1".as_ref(),
            fx.store().as_os_str(),
            mnt.as_os_str(),
        ],
        &log,
    );
    assert!(!status.success());
    assert!(fs::read_to_string(&log).unwrap().contains("tagttl"));
    assert!(!is_mounted(&mnt));
    let _ = std::io::stderr().flush();
}

//! `registryfs mount` options: command-line flags plus `-o a,b=c` mount options, the form
//! fstab and mount(8) hand to `mount.fuse.registryfs`. Resolving them is pure, so every
//! rule here is unit-tested without a kernel.
//!
//! The `-o` names are the flags' names with `_` (`tag_ttl=0.5`, `allow_other`,
//! `signing_key=/etc/registryfs/key.json`, `platform=linux/arm64`). Generic mount options
//! that mount(8) passes along (`rw`, `nofail`, `_netdev`, `x-systemd.*`...) are accepted
//! and ignored: the mount is always read-only, nosuid and nodev. Anything else is an
//! error, so a typo in fstab fails loudly instead of being dropped.

use crate::manifest::PlatformChoice;
use std::path::PathBuf;
use std::time::Duration;

/// How long the kernel may cache what can never change (digest paths, and the attributes
/// of any inode, since an inode is tied to one content version).
pub const IMMUTABLE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Default `--change-poll`: where change notifications cannot see every change of the
/// store, how often the kept times are rescanned.
pub const DEFAULT_CHANGE_POLL: Duration = Duration::from_secs(30);

const MAX_THREADS: usize = 64;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct MountArgs {
    /// The registry store (distribution's root folder or an OCI image layout)
    pub store: PathBuf,
    /// The folder to mount on (a stale registryfs mount there is cleared first)
    pub mountpoint: PathBuf,
    /// How long the kernel may cache tag paths, tag lists and folders; 0 asks every time
    /// [default: 60 with change notifications (fanotify), which drop what a push changes
    /// at once; 1 where the store is polled]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub tag_ttl: Option<Duration>,
    /// Where change notifications cannot see every change (a network filesystem, no
    /// fanotify), rescan the store's times this often; 0 never [default: 30]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub change_poll: Option<Duration>,
    /// Let other users (e.g. a web server's) read the mount
    #[arg(long)]
    pub allow_other: bool,
    /// Let root, besides the mounting user, read the mount
    #[arg(long)]
    pub allow_root: bool,
    /// Serve blob reads from the daemon even where kernel passthrough is available
    #[arg(long)]
    pub no_passthrough: bool,
    /// Threads answering kernel requests (default: CPUs, 2 to 8)
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    pub threads: Option<usize>,
    /// Return once the mount is ready and keep serving in the background (stderr stays
    /// the log)
    #[arg(long)]
    pub daemon: bool,
    /// Serve Prometheus metrics at http://ADDRESS:PORT/metrics (no authentication: keep
    /// it local, e.g. 127.0.0.1:9464)
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Mount options, comma-separated (as in fstab); see `mount.fuse.registryfs`
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    pub options: Vec<String>,
}

/// Who may use the mount. The kernel only knows `allow_other`; fuser enforces `allow_root`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Owner,
    RootAndOwner,
    Everyone,
}

/// Everything the FUSE side needs, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct MountSettings {
    /// None: chosen by how store changes are followed (`changes::default_tag_ttl`).
    pub tag_ttl: Option<Duration>,
    pub change_poll: Duration,
    pub immutable_ttl: Duration,
    pub access: Access,
    pub passthrough: bool,
    pub threads: usize,
    pub daemon: bool,
    /// Where to serve metrics, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Namespace settings given as `-o` options; the command line applies them over its
/// global flags.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceOverrides {
    pub signing_key: Option<PathBuf>,
    pub platform: Option<PlatformChoice>,
    pub convert_oci: bool,
    pub allow_foreign_layers: bool,
    pub oci_repo: Option<String>,
    pub schema1_cache_mib: Option<usize>,
}

impl MountArgs {
    /// Merges flags and `-o` options (an `-o` value wins over its flag).
    pub fn resolve(&self) -> Result<(MountSettings, NamespaceOverrides), String> {
        let mut settings = MountSettings {
            tag_ttl: self.tag_ttl,
            change_poll: self.change_poll.unwrap_or(DEFAULT_CHANGE_POLL),
            immutable_ttl: IMMUTABLE_TTL,
            access: Access::Owner,
            passthrough: !self.no_passthrough,
            threads: self.threads.unwrap_or_else(default_threads),
            daemon: self.daemon,
            metrics_listen: self.metrics_listen,
        };
        let mut allow_other = self.allow_other;
        let mut allow_root = self.allow_root;
        let mut ns = NamespaceOverrides::default();
        for list in &self.options {
            for option in split_options(list) {
                match parse_option(&option)? {
                    MountOption::Ignored => {}
                    MountOption::AllowOther => allow_other = true,
                    MountOption::AllowRoot => allow_root = true,
                    MountOption::TagTtl(ttl) => settings.tag_ttl = Some(ttl),
                    MountOption::ChangePoll(interval) => settings.change_poll = interval,
                    MountOption::NoPassthrough => settings.passthrough = false,
                    MountOption::Threads(n) => settings.threads = n,
                    MountOption::SigningKey(path) => ns.signing_key = Some(path),
                    MountOption::Platform(p) => ns.platform = Some(p),
                    MountOption::ConvertOci => ns.convert_oci = true,
                    MountOption::AllowForeignLayers => ns.allow_foreign_layers = true,
                    MountOption::OciRepo(name) => ns.oci_repo = Some(name),
                    MountOption::Schema1CacheMib(n) => ns.schema1_cache_mib = Some(n),
                    MountOption::MetricsListen(addr) => settings.metrics_listen = Some(addr),
                }
            }
        }
        settings.access = match (allow_other, allow_root) {
            (true, true) => return Err("allow_other and allow_root exclude each other".into()),
            (true, false) => Access::Everyone,
            (false, true) => Access::RootAndOwner,
            (false, false) => Access::Owner,
        };
        Ok((settings, ns))
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

/// One `-o` option, understood.
#[derive(Clone, Debug, PartialEq)]
enum MountOption {
    Ignored,
    AllowOther,
    AllowRoot,
    TagTtl(Duration),
    ChangePoll(Duration),
    NoPassthrough,
    Threads(usize),
    SigningKey(PathBuf),
    Platform(PlatformChoice),
    ConvertOci,
    AllowForeignLayers,
    OciRepo(String),
    Schema1CacheMib(usize),
    MetricsListen(std::net::SocketAddr),
}

/// Options mount(8) and libmount may pass to a helper, and FUSE options that describe
/// what registryfs does anyway.
const GENERIC_OPTIONS: &[&str] = &[
    "defaults",
    "rw",
    "ro",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "nofail",
    "_netdev",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "sync",
    "async",
    "dirsync",
    "silent",
    "loud",
    "default_permissions",
];
const GENERIC_PREFIXES: &[&str] = &[
    "x-", "X-", "comment=", "user=", "helper=", "uhelper=", "fsname=", "subtype=",
];

fn parse_option(option: &str) -> Result<MountOption, String> {
    if option.is_empty()
        || GENERIC_OPTIONS.contains(&option)
        || GENERIC_PREFIXES.iter().any(|p| option.starts_with(p))
    {
        return Ok(MountOption::Ignored);
    }
    let (key, value) = match option.split_once('=') {
        Some((k, v)) => (k.replace('-', "_"), Some(v)),
        None => (option.replace('-', "_"), None),
    };
    let need = |v: Option<&str>| -> Result<String, String> {
        v.map(str::to_string)
            .ok_or_else(|| format!("mount option {key} needs a value ({key}=...)"))
    };
    let bad = |e: String| format!("mount option {option}: {e}");
    let flag = |o: MountOption| -> Result<MountOption, String> {
        match value {
            None => Ok(o),
            Some(_) => Err(format!("mount option {key} takes no value")),
        }
    };
    match key.as_str() {
        "allow_other" => flag(MountOption::AllowOther),
        "allow_root" => flag(MountOption::AllowRoot),
        "no_passthrough" => flag(MountOption::NoPassthrough),
        "convert_oci" => flag(MountOption::ConvertOci),
        "allow_foreign_layers" => flag(MountOption::AllowForeignLayers),
        "tag_ttl" => parse_seconds(&need(value)?)
            .map(MountOption::TagTtl)
            .map_err(bad),
        "change_poll" => parse_seconds(&need(value)?)
            .map(MountOption::ChangePoll)
            .map_err(bad),
        "threads" => parse_threads(&need(value)?)
            .map(MountOption::Threads)
            .map_err(bad),
        "signing_key" => {
            let v = need(value)?;
            if v.is_empty() {
                return Err(bad("empty path".into()));
            }
            Ok(MountOption::SigningKey(PathBuf::from(v)))
        }
        "platform" => need(value)?
            .parse::<PlatformChoice>()
            .map(MountOption::Platform)
            .map_err(bad),
        "oci_repo" => Ok(MountOption::OciRepo(need(value)?)),
        "metrics_listen" => need(value)?
            .parse::<std::net::SocketAddr>()
            .map(MountOption::MetricsListen)
            .map_err(|e| bad(e.to_string())),
        "schema1_cache_mib" => need(value)?
            .parse::<usize>()
            .map(MountOption::Schema1CacheMib)
            .map_err(|e| bad(e.to_string())),
        _ => Err(format!("unknown mount option {option:?}")),
    }
}

/// Splits `a,b=c\,d` at unescaped commas (`\,` is a literal comma, `\\` a backslash), as
/// libfuse does, so a key path may contain a comma.
pub fn split_options(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = list.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => current.push(next),
                None => current.push('\\'),
            },
            ',' => out.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    out.push(current);
    out.retain(|o| !o.is_empty());
    out
}

/// Seconds as a decimal (`0`, `1`, `0.25`), at most a year.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.0..=365.0 * 86400.0).contains(&secs) {
        return Err(format!("{s:?}: seconds must be between 0 and one year"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn parse_threads(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        _ => Err(format!("{s:?}: threads must be 1 to {MAX_THREADS}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MountArgs,
    }

    fn args(argv: &[&str]) -> MountArgs {
        let mut full = vec!["registryfs", "/store", "/mnt"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full).expect("parse").args
    }

    fn resolve(argv: &[&str]) -> Result<(MountSettings, NamespaceOverrides), String> {
        args(argv).resolve()
    }

    #[test]
    fn defaults() {
        let (s, ns) = resolve(&[]).unwrap();
        assert_eq!(s.tag_ttl, None, "chosen by how changes are followed");
        assert_eq!(s.change_poll, Duration::from_secs(30));
        assert_eq!(s.immutable_ttl, Duration::from_secs(86400));
        assert_eq!(s.access, Access::Owner);
        assert!(s.passthrough);
        assert!(!s.daemon);
        assert!((2..=8).contains(&s.threads));
        assert_eq!(ns, NamespaceOverrides::default());
    }

    #[test]
    fn flags() {
        let (s, _) = resolve(&[
            "--tag-ttl",
            "0",
            "--allow-other",
            "--no-passthrough",
            "--threads",
            "3",
            "--daemon",
        ])
        .unwrap();
        assert_eq!(s.tag_ttl, Some(Duration::ZERO));
        assert_eq!(s.access, Access::Everyone);
        assert!(!s.passthrough);
        assert_eq!(s.threads, 3);
        assert!(s.daemon);
        assert_eq!(
            resolve(&["--tag-ttl", "0.25"]).unwrap().0.tag_ttl,
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn bad_flags_are_refused_by_the_parser() {
        let mut full = vec!["registryfs", "/store", "/mnt"];
        for bad in [
            ["--tag-ttl", "-1"],
            ["--tag-ttl", "soon"],
            ["--threads", "0"],
        ] {
            full.truncate(3);
            full.extend_from_slice(&bad);
            assert!(Cli::try_parse_from(&full).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fstab_options_map_to_settings() {
        let (s, ns) = resolve(&[
            "-o",
            "rw,nofail,_netdev,x-systemd.automount,allow_other,tag_ttl=0.5,no_passthrough",
            "-o",
            "signing_key=/etc/registryfs/key.json,platform=linux/arm64/v8,threads=4",
            "-o",
            "convert_oci,allow_foreign_layers,oci_repo=library/app,schema1_cache_mib=16",
        ])
        .unwrap();
        assert_eq!(s.access, Access::Everyone);
        assert_eq!(s.tag_ttl, Some(Duration::from_millis(500)));
        assert!(!s.passthrough);
        assert_eq!(s.threads, 4);
        assert_eq!(
            ns,
            NamespaceOverrides {
                signing_key: Some("/etc/registryfs/key.json".into()),
                platform: Some("linux/arm64/v8".parse().unwrap()),
                convert_oci: true,
                allow_foreign_layers: true,
                oci_repo: Some("library/app".into()),
                schema1_cache_mib: Some(16),
            }
        );
    }

    #[test]
    fn metrics_listen_as_flag_or_option() {
        let (s, _) = resolve(&[]).unwrap();
        assert_eq!(s.metrics_listen, None, "off unless asked for");
        let (s, _) = resolve(&["--metrics-listen", "127.0.0.1:9464"]).unwrap();
        assert_eq!(s.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        let (s, _) = resolve(&["-o", "metrics_listen=[::1]:9000"]).unwrap();
        assert_eq!(s.metrics_listen, Some("[::1]:9000".parse().unwrap()));
        let e = resolve(&["-o", "metrics_listen=localhost"]).unwrap_err();
        assert!(e.contains("metrics_listen=localhost"), "{e}");
    }

    #[test]
    fn dashes_work_like_underscores_and_o_wins_over_flags() {
        let (s, _) = resolve(&["--tag-ttl", "5", "-o", "tag-ttl=2,allow-root"]).unwrap();
        assert_eq!(s.tag_ttl, Some(Duration::from_secs(2)));
        assert_eq!(s.access, Access::RootAndOwner);
    }

    #[test]
    fn bad_options_are_errors() {
        for bad in [
            "tag_ttl",
            "tag_ttl=-1",
            "tag_ttl=forever",
            "threads=0",
            "threads=1000",
            "platform=linux",
            "signing_key=",
            "allow_other=yes",
            "schema1_cache_mib=many",
            "tagttl=1",
            "bogus",
        ] {
            assert!(resolve(&["-o", bad]).is_err(), "{bad} should be refused");
        }
        assert!(resolve(&["-o", "allow_other,allow_root"]).is_err());
    }

    #[test]
    fn escaped_commas() {
        assert_eq!(
            split_options(r"signing_key=/k\,1.pem,allow_other,,a\\b"),
            ["signing_key=/k,1.pem", "allow_other", r"a\b"]
        );
        let (_, ns) = resolve(&["-o", r"signing_key=/k\,1.pem"]).unwrap();
        assert_eq!(ns.signing_key, Some("/k,1.pem".into()));
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        assert_eq!(parse_seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_seconds("NaN").is_err());
        assert!(parse_seconds("inf").is_err());
        assert!(parse_seconds("1e12").is_err());
    }
}

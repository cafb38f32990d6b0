//! The `registryfs` command line: `ls`, `cat`, `keygen` (and `mount`).

use clap::{Args, Parser, Subcommand};
use registryfs::error::{Error, Result};
use registryfs::manifest::PlatformChoice;
use registryfs::namespace::{Content, Namespace, Node, Settings};
use registryfs::schema1::SigningKey;
use registryfs::store::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// `registryfs --version`: the package version and the git commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("REGISTRYFS_GIT_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "registryfs",
    version = VERSION,
    about = "A container registry's store as plain files, schema1 included"
)]
struct Cli {
    #[command(flatten)]
    options: NamespaceOptions,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct NamespaceOptions {
    /// libtrust signing key for schema1 (`.json`/`.jwk`: JWK, else PEM); default: a
    /// throwaway key, so signatures differ between runs
    #[arg(long, global = true, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// Manifest-list entry that tags convert from
    #[arg(
        long,
        global = true,
        value_name = "OS/ARCH[/VARIANT]",
        default_value = "linux/amd64"
    )]
    platform: PlatformChoice,
    /// Also generate schema1 for OCI image manifests (registry 2.8 does not)
    #[arg(long, global = true)]
    convert_oci: bool,
    /// Generate schema1 for images with foreign layers, dropping their URLs (registry 2.8 does)
    #[arg(long, global = true)]
    allow_foreign_layers: bool,
    /// Repository name for an OCI layout's tags (default: the layout folder's name)
    #[arg(long, global = true, value_name = "NAME")]
    oci_repo: Option<String>,
    /// S3 store: folder for downloaded blobs (default: per bucket and root below
    /// /var/cache/registryfs/s3 for root, else $XDG_CACHE_HOME or ~/.cache/registryfs/s3)
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// S3 store: most bytes of blobs kept in the cache folder, least recently used
    /// evicted first (suffix K, M, G or T: powers of 1024) [default: 10G]
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_size)]
    cache_max_bytes: Option<u64>,
    /// S3 store: path-style requests (`ENDPOINT/BUCKET/KEY`) also for AWS [default: on
    /// for AWS_ENDPOINT_URL, else AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false turns it on]
    #[arg(long, global = true)]
    s3_path_style: bool,
    /// S3 store: allow plain HTTP [default: on for an http:// endpoint, or with
    /// AWS_ALLOW_HTTP=true]
    #[arg(long, global = true)]
    s3_allow_http: bool,
    /// S3 store: give up on one request to the server after this long (an operation
    /// fails with EIO); retries of quick failures begin within half of it [default: 10]
    #[arg(long, global = true, value_name = "SECONDS", value_parser = parse_timeout)]
    s3_timeout: Option<Duration>,
    /// S3 store (mount): keep answers about links and listings young in the background
    /// for this long after a reader last asked (about 8 requests per tag in use per tag
    /// lifetime); 0: never, every lookup after a lifetime waits for the server
    /// [default: 30]
    #[arg(long, global = true, value_name = "SECONDS", value_parser = registryfs::fuse::options::parse_seconds)]
    s3_keep_warm: Option<Duration>,
    /// MiB of generated schema1 documents kept in memory (with the mount's other caches,
    /// listed in `registryfs mount --help`)
    #[arg(long, global = true, value_name = "MIB", default_value_t = 2)]
    schema1_cache_mib: usize,
    /// Paths of the namespace: the registry's (`<repo>/manifests/<ref>/<kind>`), or the
    /// tree Pulp publishes for Crane (`app/<repo_id>.json` for Crane's data_dir,
    /// `web/<repo_id>/manifests/2/<ref>`... for the web server)
    #[arg(long, global = true, value_enum, default_value = "registry")]
    layout: Layout,
    /// Crane layout: the URL the tree is published at (each app file's `url` is
    /// URL/<repo_id>/)
    #[arg(long, global = true, value_name = "URL", default_value = registryfs::namespace::crane::DEFAULT_CRANE_URL)]
    crane_url: String,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Layout {
    Registry,
    Crane,
}

#[derive(Subcommand)]
enum Command {
    /// List a folder of the namespace (directories end in '/')
    Ls {
        store: PathBuf,
        path: Option<String>,
    },
    /// Write a file of the namespace to stdout, byte for byte as a mount serves it
    Cat { store: PathBuf, path: String },
    /// Write a new P-256 signing key (`.json`/`.jwk`: libtrust JWK, else PEM)
    Keygen { path: PathBuf },
    /// Mount the namespace read-only with FUSE (foreground unless --daemon)
    #[command(after_help = registryfs::fuse::memory::bounds_help())]
    Mount(registryfs::fuse::MountArgs),
    /// Print an nginx or Apache config serving the Registry v2 pull API from a mount
    HttpdConfig(registryfs::httpd::HttpdConfigArgs),
    /// Check a store: blob data against digests, links, references, schema1 conversion,
    /// unreferenced blobs. Exit status 0: sound; 1: faults found; 2: could not check
    Verify(VerifyArgs),
    /// Write the man pages and shell completions generated from these definitions into
    /// a folder (for packaging: scripts/build-deb.sh)
    #[command(hide = true)]
    GenerateDocs { out_dir: PathBuf },
}

#[derive(Args)]
struct VerifyArgs {
    /// The registry store (as for `mount`)
    store: PathBuf,
    /// Check only these repositories (and the blobs they link or reference); default:
    /// the whole store, unreferenced blobs included
    repositories: Vec<String>,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
    /// Threads hashing blob data (default: CPUs)
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // ls and cat explain failures in their error message; a mount logs what it refuses,
    // and how it follows the store and what it caches for how long.
    let default_level = match cli.command {
        Command::Ls { .. } | Command::Cat { .. } | Command::Verify(_) => "error",
        Command::Mount(_) => "warn,registryfs::watch=info,registryfs::fuse::session=info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .init();
    if let Command::Verify(args) = &cli.command {
        return match verify(&cli.options, args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("registryfs: {e}");
                ExitCode::from(2)
            }
        };
    }
    let result = match &cli.command {
        Command::Ls { store, path } => ls(&cli.options, store, path.as_deref().unwrap_or("")),
        Command::Cat { store, path } => cat(&cli.options, store, path),
        Command::Keygen { path } => keygen(path),
        Command::GenerateDocs { out_dir } => generate_docs(out_dir),
        Command::Mount(args) => mount(&cli.options, args),
        // Answered above: its exit status has three values.
        Command::Verify(_) => Ok(()),
        Command::HttpdConfig(args) => args.render().and_then(|text| {
            std::io::stdout()
                .write_all(text.as_bytes())
                .map_err(|e| Error::io("stdout", e))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader closed the pipe (`| head`): it wanted no more output.
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("registryfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn namespace(
    options: &NamespaceOptions,
    store_root: &Path,
    warn_throwaway_key: bool,
    remote_ttl: Duration,
) -> Result<Namespace> {
    let key = match &options.signing_key {
        Some(path) => SigningKey::load(path)?,
        None => {
            if warn_throwaway_key {
                eprintln!("registryfs: warning: no --signing-key: schema1 is signed with a throwaway key (see `registryfs keygen`)");
            }
            SigningKey::generate()?
        }
    };
    let store = store::open(
        store_root,
        &OpenOptions {
            oci_repository: options.oci_repo.clone(),
            cache_dir: options.cache_dir.clone(),
            cache_max_bytes: options.cache_max_bytes,
            s3_keep_warm: options.s3_keep_warm,
            s3: store::S3Overrides {
                path_style: options.s3_path_style,
                allow_http: options.s3_allow_http,
                request_timeout: options.s3_timeout,
            },
            remote_ttl,
        },
    )?;
    let ns = Namespace::new(
        store,
        Settings {
            key,
            platform: options.platform.clone(),
            convert_oci: options.convert_oci,
            allow_foreign_layers: options.allow_foreign_layers,
            schema1_cache_bytes: options.schema1_cache_mib << 20,
        },
    );
    Ok(match options.layout {
        Layout::Registry => ns,
        Layout::Crane => ns.with_crane_layout(registryfs::namespace::crane::CraneOptions {
            url: options.crane_url.clone(),
        }),
    })
}

fn ls(options: &NamespaceOptions, store_root: &Path, path: &str) -> Result<()> {
    let ns = namespace(options, store_root, false, Duration::ZERO)?;
    let mut out = std::io::stdout().lock();
    match ns.lookup(path)? {
        Node::Dir => {
            for entry in ns.list(path)? {
                let slash = if entry.is_dir { "/" } else { "" };
                writeln!(out, "{}{slash}", entry.name).map_err(|e| Error::io("stdout", e))?;
            }
        }
        Node::File(_) => writeln!(out, "{}", path.rsplit('/').next().unwrap_or(path))
            .map_err(|e| Error::io("stdout", e))?,
        Node::Link(target) => writeln!(
            out,
            "{} -> {target}",
            path.rsplit('/').next().unwrap_or(path)
        )
        .map_err(|e| Error::io("stdout", e))?,
    }
    Ok(())
}

fn cat(options: &NamespaceOptions, store_root: &Path, path: &str) -> Result<()> {
    let ns = namespace(
        options,
        store_root,
        path.ends_with("schema1"),
        Duration::ZERO,
    )?;
    let content = match ns.lookup(path)? {
        Node::File(content) => content,
        Node::Dir => return Err(Error::Usage(format!("{path}: is a folder (use ls)"))),
        // As through the mount: the link's target, a file in the same folder.
        Node::Link(target) => {
            let folder = path
                .trim_end_matches('/')
                .rsplit_once('/')
                .map_or("", |p| p.0);
            match ns.lookup(&format!("{folder}/{target}"))? {
                Node::File(content) => content,
                _ => {
                    return Err(Error::Usage(format!(
                        "{path}: link to {target}, not a file"
                    )))
                }
            }
        }
    };
    let mut out = std::io::stdout().lock();
    match content {
        Content::Bytes(bytes) => out.write_all(&bytes).map_err(|e| Error::io("stdout", e))?,
        Content::Jws(doc) => out
            .write_all(&doc.signed())
            .map_err(|e| Error::io("stdout", e))?,
        Content::Blob { file, digest } => {
            // Verify before writing anything: a mismatching blob must not reach stdout.
            // The checked descriptor is the one copied.
            match ns.open_blob(&file, &digest)? {
                store::BlobReader::File(mut f) => {
                    std::io::copy(&mut f, &mut out).map_err(|e| Error::io(&file.path, e))?;
                }
                store::BlobReader::Streaming(stream) => {
                    let io = |e| Error::io(&file.path, e);
                    stream.verified().map_err(io)?;
                    let mut offset = 0;
                    let mut buf = vec![0u8; 1 << 20];
                    while offset < file.len {
                        let n = stream.read_at(offset, &mut buf).map_err(io)?;
                        if n == 0 {
                            break;
                        }
                        out.write_all(&buf[..n])
                            .map_err(|e| Error::io("stdout", e))?;
                        offset += n as u64;
                    }
                }
            }
        }
    }
    out.flush().map_err(|e| Error::io("stdout", e))
}

fn mount(options: &NamespaceOptions, args: &registryfs::fuse::MountArgs) -> Result<()> {
    let (settings, overrides) = args.resolve().map_err(Error::Usage)?;
    // `-o` namespace options (from fstab) over the global flags.
    let mut options = options.clone();
    if let Some(key) = overrides.signing_key {
        options.signing_key = Some(key);
    }
    if let Some(platform) = overrides.platform {
        options.platform = platform;
    }
    options.convert_oci |= overrides.convert_oci;
    options.allow_foreign_layers |= overrides.allow_foreign_layers;
    if let Some(name) = overrides.oci_repo {
        options.oci_repo = Some(name);
    }
    if let Some(n) = overrides.schema1_cache_mib {
        options.schema1_cache_mib = n;
    }
    // Absolute: a daemon leaves the current folder.
    let store = if store::is_remote(&args.store) {
        args.store.clone()
    } else {
        args.store
            .canonicalize()
            .map_err(|e| Error::io(&args.store, e))?
    };
    if let Some(dir) = &options.cache_dir {
        options.cache_dir = Some(std::path::absolute(dir).map_err(|e| Error::io(dir, e))?);
    }
    // A remote store keeps its answers as long as the kernel keeps tag paths; it is
    // always polled, so the tag lifetime defaults to the polled one.
    let remote_ttl = settings.tag_ttl.unwrap_or_else(|| {
        registryfs::fuse::default_tag_ttl(&registryfs::watch::Mode::Poll(settings.change_poll))
    });
    let ns = namespace(&options, &store, true, remote_ttl)?;
    registryfs::fuse::mount(ns, &store, &args.mountpoint, &settings)
}

/// `1024`, `512M`, `10G`...: bytes, with an optional binary suffix.
fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{s:?}: the suffix must be K, M, G or T")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{s:?} is not a size (bytes, or a number with K, M, G or T)"))
}

fn parse_timeout(s: &str) -> std::result::Result<Duration, String> {
    match registryfs::fuse::options::parse_seconds(s)? {
        t if t.is_zero() => Err("a timeout must be more than 0 seconds".to_string()),
        t => Ok(t),
    }
}

/// Prints the report; Ok(whether the store is sound).
fn verify(options: &NamespaceOptions, args: &VerifyArgs) -> Result<bool> {
    use std::io::IsTerminal;
    let ns = namespace(options, &args.store, false, Duration::ZERO)?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    });
    let verify_options = registryfs::verify::Options {
        repositories: args.repositories.clone(),
        threads,
    };
    let show_progress = std::io::stderr().is_terminal();
    let mut progress = |p: registryfs::verify::Progress| {
        if show_progress {
            eprint!(
                "\rhashing blobs: {}/{} files, {} of {}  ",
                p.files_done,
                p.files,
                registryfs::verify::human_bytes(p.bytes_done),
                registryfs::verify::human_bytes(p.bytes)
            );
        }
    };
    let report = registryfs::verify::verify(
        &ns,
        &args.store.display().to_string(),
        &verify_options,
        &mut progress,
    )?;
    if show_progress {
        eprintln!();
    }
    let text = if args.json {
        report.json()
    } else {
        report.text()
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(Error::io("stdout", e)),
    }
    Ok(report.sound)
}

/// `OUT/man/registryfs.1` and one page per command (`registryfs-mount.1`...);
/// `OUT/completions/` for bash (`registryfs.bash`), zsh (`_registryfs`) and fish
/// (`registryfs.fish`).
fn generate_docs(out_dir: &Path) -> Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let man_dir = out_dir.join("man");
    let completions_dir = out_dir.join("completions");
    for dir in [&man_dir, &completions_dir] {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    // The commands an operator sees: completions would offer hidden ones too.
    let full = Cli::command();
    let visible = full.get_subcommands().filter(|c| !c.is_hide_set()).cloned();
    let mut top = clap::Command::new("registryfs")
        .version(VERSION)
        .args(full.get_arguments().cloned())
        .subcommands(visible)
        .subcommand_required(true);
    if let Some(about) = full.get_about() {
        top = top.about(about.clone());
    }
    let mut pages = vec![("registryfs".to_string(), top.clone())];
    for sub in top.get_subcommands() {
        let name = format!("registryfs-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, command) in pages {
        let path = man_dir.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .map_err(|e| Error::io(&path, e))?;
        std::fs::write(&path, page).map_err(|e| Error::io(&path, e))?;
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut top.clone(), "registryfs", &completions_dir)
            .map_err(|e| Error::io(&completions_dir, e))?;
    }
    Ok(())
}

fn keygen(path: &Path) -> Result<()> {
    let key = SigningKey::generate()?;
    let is_jwk = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("json" | "jwk")
    );
    let bytes = if is_jwk {
        key.private_jwk_file()
    } else {
        key.private_pem_file()
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.write_all(&bytes).map_err(|e| Error::io(path, e))?;
    println!("{}", key.kid());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("10g"), Ok(10 << 30));
        assert!(parse_size("10X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err(), "overflow");
    }
}

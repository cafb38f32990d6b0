//! Where an S3 store is and how to reach it: `s3://BUCKET[/ROOT]` plus the standard AWS
//! environment variables and profile files, as operators already have them. Pure: the
//! environment and the files come in as functions, so every rule is unit-tested.

use std::path::PathBuf;
use std::time::Duration;

/// Region used when neither the environment nor the profile names one (the AWS default).
const DEFAULT_REGION: &str = "us-east-1";

/// Default `--s3-timeout`: one request to the server (connect, answer and body) gives
/// up after this long. A FUSE request waits on it, and a client (a web server) should
/// get an error in seconds rather than hang while the server is unreachable or stalled.
/// The largest request is one part of a blob download (8 MiB): 10 s allows a link
/// down to about 1 MB/s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `s3://BUCKET[/ROOT]`: the bucket and the registry's `rootdirectory` (no slashes at
/// either end; "" for none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    pub root: String,
}

impl Location {
    /// Parses `s3://BUCKET[/ROOT]`; None if `url` is not an `s3://` URL at all.
    pub fn parse(url: &str) -> Option<Result<Location, String>> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, root) = rest.split_once('/').unwrap_or((rest, ""));
        if !is_bucket_name(bucket) {
            return Some(Err(format!(
                "{url}: {bucket:?} is not a bucket name (3-63 of a-z 0-9 . -)"
            )));
        }
        // The s3 driver joins its rootdirectory with '/' and drops the leading one.
        let root = root.trim_matches('/');
        if root
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
            && !root.is_empty()
        {
            return Some(Err(format!(
                "{url}: the root directory has an empty, '.' or '..' component"
            )));
        }
        Some(Ok(Location {
            bucket: bucket.to_string(),
            root: root.to_string(),
        }))
    }

    /// The key prefix of distribution's layout: `<root>/docker/registry/v2/`.
    pub fn v2_prefix(&self) -> String {
        if self.root.is_empty() {
            "docker/registry/v2/".to_string()
        } else {
            format!("{}/docker/registry/v2/", self.root)
        }
    }
}

/// S3's bucket naming rules, loosely (dots and dashes allowed, no upper case).
fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

// Never print secrets (error messages, debug logs).
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Everything the client needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub region: String,
    /// A custom endpoint (self-hosted stores); None: AWS's endpoint for the region.
    pub endpoint: Option<String>,
    /// None: the client's default chain (web identity, container or instance role).
    pub credentials: Option<Credentials>,
    /// `http://` endpoint: plain HTTP is allowed.
    pub allow_http: bool,
    /// `BUCKET.host` addressing; off for a custom endpoint (self-hosted stores rarely
    /// have wildcard DNS), on for AWS.
    pub virtual_hosted_style: bool,
    /// PEM certificates trusted besides the system's (`AWS_CA_BUNDLE`, or `ca_bundle`
    /// in the profile): a self-hosted store with its own CA.
    pub ca_bundle: Option<PathBuf>,
    /// How long one request may take ([`DEFAULT_REQUEST_TIMEOUT`]).
    pub request_timeout: Duration,
}

/// What the command line says beyond the AWS settings (`--s3-path-style`...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Path-style addressing (`host/BUCKET/key`) even for AWS's endpoints.
    pub path_style: bool,
    /// Plain HTTP allowed even for an endpoint that does not say `http://`.
    pub allow_http: bool,
    pub request_timeout: Option<Duration>,
}

impl Settings {
    /// The command line wins over the environment and the profile.
    pub fn with_overrides(mut self, overrides: &Overrides) -> Settings {
        if overrides.path_style {
            self.virtual_hosted_style = false;
        }
        self.allow_http |= overrides.allow_http;
        if let Some(timeout) = overrides.request_timeout {
            self.request_timeout = timeout;
        }
        self
    }
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`) of a switch variable, naming it if neither.
fn switch(name: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("{name}={value:?}: expected true or false")),
    }
}

/// Where the process's settings come from: the environment and the profile files.
pub struct Sources<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub read_file: &'a dyn Fn(&std::path::Path) -> Option<String>,
}

impl Sources<'_> {
    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }

    /// `AWS_SHARED_CREDENTIALS_FILE`/`AWS_CONFIG_FILE`, else `~/.aws/<default_name>`.
    fn profile_file(&self, variable: &str, default_name: &str) -> Option<Ini> {
        let path = match self.var(variable) {
            Some(path) => PathBuf::from(path),
            None => PathBuf::from(self.var("HOME")?)
                .join(".aws")
                .join(default_name),
        };
        (self.read_file)(&path).map(|text| Ini::parse(&text))
    }
}

/// Resolves settings like the AWS CLI and SDKs: variables first, then the profile
/// (`AWS_PROFILE`, else `default`) in the credentials file and the config file.
pub fn resolve(sources: &Sources<'_>) -> Result<Settings, String> {
    let profile = sources
        .var("AWS_PROFILE")
        .unwrap_or_else(|| "default".to_string());
    let credentials_file = sources.profile_file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let config_file = sources.profile_file("AWS_CONFIG_FILE", "config");
    // The config file names profiles `[profile NAME]`, except `[default]`.
    let config_section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    let from_profile = |key: &str| {
        credentials_file
            .as_ref()
            .and_then(|f| f.get(&profile, key))
            .or_else(|| {
                config_file
                    .as_ref()
                    .and_then(|f| f.get(&config_section, key))
            })
    };
    let from_config = |key: &str| {
        config_file
            .as_ref()
            .and_then(|f| f.get(&config_section, key))
    };

    let credentials = match (
        sources.var("AWS_ACCESS_KEY_ID"),
        sources.var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(access_key_id), Some(secret_access_key)) => Some(Credentials {
            access_key_id,
            secret_access_key,
            session_token: sources.var("AWS_SESSION_TOKEN"),
        }),
        (Some(_), None) | (None, Some(_)) => {
            return Err(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together".to_string(),
            )
        }
        (None, None) => match (
            from_profile("aws_access_key_id"),
            from_profile("aws_secret_access_key"),
        ) {
            (Some(access_key_id), Some(secret_access_key)) => Some(Credentials {
                access_key_id,
                secret_access_key,
                session_token: from_profile("aws_session_token"),
            }),
            (None, None) if sources.var("AWS_PROFILE").is_none() => None,
            _ => {
                return Err(format!(
                    "profile {profile:?}: needs aws_access_key_id and aws_secret_access_key \
                     (other credential sources of the AWS CLI are not supported)"
                ))
            }
        },
    };
    let region = sources
        .var("AWS_REGION")
        .or_else(|| sources.var("AWS_DEFAULT_REGION"))
        .or_else(|| from_config("region"))
        .unwrap_or_else(|| DEFAULT_REGION.to_string());
    let endpoint = sources
        .var("AWS_ENDPOINT_URL_S3")
        .or_else(|| sources.var("AWS_ENDPOINT_URL"))
        .or_else(|| from_config("endpoint_url"))
        .map(|e| e.trim_end_matches('/').to_string());
    let allow_http = match &endpoint {
        Some(e) if e.starts_with("http://") => true,
        Some(e) if e.starts_with("https://") => false,
        Some(e) => {
            return Err(format!(
                "endpoint {e:?} must start with http:// or https://"
            ))
        }
        None => false,
    };
    // object_store's names for the two switches (its `from_env` reads them too).
    let allow_http = match sources.var("AWS_ALLOW_HTTP") {
        Some(v) => allow_http || switch("AWS_ALLOW_HTTP", &v)?,
        None => allow_http,
    };
    let virtual_hosted_style = match sources.var("AWS_VIRTUAL_HOSTED_STYLE_REQUEST") {
        Some(v) => switch("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", &v)?,
        None => endpoint.is_none(),
    };
    let ca_bundle = sources
        .var("AWS_CA_BUNDLE")
        .or_else(|| from_config("ca_bundle"))
        .map(PathBuf::from);
    Ok(Settings {
        region,
        virtual_hosted_style,
        endpoint,
        credentials,
        allow_http,
        ca_bundle,
        request_timeout: DEFAULT_REQUEST_TIMEOUT,
    })
}

/// Sections of an AWS profile file (INI: `[name]`, `key = value`, `#`/`;` comments).
/// Indented lines belong to a nested block (`s3 =` sub-settings) and are skipped.
#[derive(Debug, Default)]
struct Ini {
    sections: Vec<(String, Vec<(String, String)>)>,
}

impl Ini {
    fn parse(text: &str) -> Ini {
        let mut ini = Ini::default();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if let Some(name) = trimmed.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
                ini.sections.push((name, Vec::new()));
                continue;
            }
            if line.starts_with([' ', '\t']) {
                continue;
            }
            if let (Some((key, value)), Some((_, entries))) =
                (trimmed.split_once('='), ini.sections.last_mut())
            {
                entries.push((key.trim().to_string(), value.trim().to_string()));
            }
        }
        ini
    }

    /// The last value of `key` in the last section called `section`, if not empty.
    fn get(&self, section: &str, key: &str) -> Option<String> {
        self.sections
            .iter()
            .rev()
            .filter(|(name, _)| name == section)
            .find_map(|(_, entries)| entries.iter().rev().find(|(k, _)| k == key))
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    fn resolve_with(env: &[(&str, &str)], files: &[(&str, &str)]) -> Result<Settings, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(k, v)| (PathBuf::from(k), v.to_string()))
            .collect();
        let env_fn = |name: &str| env.get(name).cloned();
        let file_fn = |path: &Path| files.get(path).cloned();
        resolve(&Sources {
            env: &env_fn,
            read_file: &file_fn,
        })
    }

    #[test]
    fn urls() {
        let parse = |u: &str| Location::parse(u).map(|r| r.map(|l| (l.bucket, l.root)));
        assert_eq!(parse("/srv/registry"), None, "a local path");
        assert_eq!(parse("s3://b12"), Some(Ok(("b12".into(), "".into()))));
        assert_eq!(parse("s3://b12/"), Some(Ok(("b12".into(), "".into()))));
        assert_eq!(
            parse("s3://my.bucket/a/b/"),
            Some(Ok(("my.bucket".into(), "a/b".into())))
        );
        for bad in [
            "s3://",
            "s3://Bucket/x",
            "s3://ab",
            "s3://b12/a//b",
            "s3://b12/../x",
        ] {
            assert!(matches!(parse(bad), Some(Err(_))), "{bad}");
        }
        let location = Location::parse("s3://b12/reg").and_then(Result::ok);
        assert_eq!(
            location.map(|l| l.v2_prefix()).as_deref(),
            Some("reg/docker/registry/v2/")
        );
    }

    #[test]
    fn self_hosted_from_variables_alone() {
        let s = resolve_with(
            &[
                ("AWS_ACCESS_KEY_ID", "GKid"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
                ("AWS_REGION", "garage"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:3900/"),
            ],
            &[],
        )
        .expect("settings");
        assert_eq!(s.region, "garage");
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert!(s.allow_http, "an http:// endpoint implies plain HTTP");
        assert!(!s.virtual_hosted_style, "path style for a custom endpoint");
        let c = s.credentials.expect("credentials");
        assert_eq!((c.access_key_id.as_str(), c.session_token), ("GKid", None));
    }

    #[test]
    fn aws_defaults() {
        let s = resolve_with(&[("AWS_DEFAULT_REGION", "eu-west-1")], &[]).expect("settings");
        assert_eq!(s.region, "eu-west-1");
        assert!(s.virtual_hosted_style && !s.allow_http && s.endpoint.is_none());
        assert_eq!(s.credentials, None, "left to the default chain");
        let s = resolve_with(&[], &[]).expect("settings");
        assert_eq!(s.region, DEFAULT_REGION);
        assert!(resolve_with(&[("AWS_ACCESS_KEY_ID", "x")], &[]).is_err());
        assert!(resolve_with(&[("AWS_ENDPOINT_URL", "ftp://x")], &[]).is_err());
    }

    #[test]
    fn addressing_http_and_ca_switches() {
        let s = resolve_with(
            &[
                ("AWS_ENDPOINT_URL", "https://s3.internal:9000"),
                ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "true"),
                ("AWS_ALLOW_HTTP", "1"),
                ("AWS_CA_BUNDLE", "/etc/ssl/internal.pem"),
            ],
            &[],
        )
        .expect("settings");
        assert!(s.virtual_hosted_style && s.allow_http);
        assert_eq!(s.ca_bundle, Some(PathBuf::from("/etc/ssl/internal.pem")));
        assert_eq!(s.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert!(resolve_with(&[("AWS_ALLOW_HTTP", "maybe")], &[]).is_err());
        let s = resolve_with(&[], &[])
            .expect("settings")
            .with_overrides(&Overrides {
                path_style: true,
                allow_http: true,
                request_timeout: Some(Duration::from_secs(2)),
            });
        assert!(!s.virtual_hosted_style && s.allow_http, "flags win");
        assert_eq!(s.request_timeout, Duration::from_secs(2));
    }

    const CREDENTIALS: &str = "\
[default]
aws_access_key_id = DEF
aws_secret_access_key = defsecret

# a comment
[ops]
aws_access_key_id=OPS
aws_secret_access_key=opssecret
aws_session_token = tok
";
    const CONFIG: &str = "\
[default]
region = us-west-2
[profile ops]
region = eu-central-1
endpoint_url = https://s3.example.net
s3 =
    addressing_style = path
    region = nested-is-not-the-profile-region
";

    #[test]
    fn profile_files() {
        let files = [
            ("/home/u/.aws/credentials", CREDENTIALS),
            ("/home/u/.aws/config", CONFIG),
        ];
        let s = resolve_with(&[("HOME", "/home/u")], &files).expect("default profile");
        assert_eq!(s.region, "us-west-2");
        assert_eq!(
            s.credentials.map(|c| c.access_key_id).as_deref(),
            Some("DEF")
        );
        let s = resolve_with(&[("HOME", "/home/u"), ("AWS_PROFILE", "ops")], &files)
            .expect("named profile");
        assert_eq!(s.region, "eu-central-1");
        assert_eq!(s.endpoint.as_deref(), Some("https://s3.example.net"));
        assert!(!s.allow_http && !s.virtual_hosted_style);
        let c = s.credentials.expect("credentials");
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("OPS", Some("tok"))
        );
        // Variables win over the profile.
        let s = resolve_with(
            &[
                ("HOME", "/home/u"),
                ("AWS_PROFILE", "ops"),
                ("AWS_ACCESS_KEY_ID", "ENV"),
                ("AWS_SECRET_ACCESS_KEY", "envsecret"),
                ("AWS_REGION", "r1"),
            ],
            &files,
        )
        .expect("settings");
        assert_eq!(s.region, "r1");
        assert_eq!(
            s.credentials.map(|c| c.access_key_id).as_deref(),
            Some("ENV")
        );
        assert!(
            resolve_with(&[("HOME", "/home/u"), ("AWS_PROFILE", "nope")], &files).is_err(),
            "a named profile without keys"
        );
    }

    #[test]
    fn profile_file_variables() {
        let files = [("/etc/creds", CREDENTIALS), ("/etc/conf", CONFIG)];
        let s = resolve_with(
            &[
                ("AWS_SHARED_CREDENTIALS_FILE", "/etc/creds"),
                ("AWS_CONFIG_FILE", "/etc/conf"),
            ],
            &files,
        )
        .expect("settings");
        assert_eq!(s.region, "us-west-2");
        assert_eq!(
            s.credentials.map(|c| c.access_key_id).as_deref(),
            Some("DEF")
        );
    }
}

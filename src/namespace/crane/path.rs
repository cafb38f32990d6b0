//! Paths of the Crane layout, parsed without the store. Depends on the registry
//! layout's [`Location`] (a Crane file is a registry file under another name), never the
//! other way round.

use crate::digest::Digest;
use crate::manifest::ManifestKind;
use crate::namespace::{Location, Reference};

/// The folder of app files: Crane's `data_dir`. It holds `<repo_id>.json` files and
/// nothing else, whatever the store holds.
pub const APP: &str = "app";
/// The folder the web server publishes (Pulp's `Alias /pulp/docker/v2`).
pub const WEB: &str = "web";

/// Where `/` goes in a repository id.
pub const SLASH: &str = "___";

/// The Crane repository id of a repository name.
pub fn repo_id(name: &str) -> String {
    name.replace('/', SLASH)
}

/// The repository name of a Crane repository id, if `id` is one we would write.
pub fn repo_name(id: &str) -> Option<String> {
    let name = id.replace(SLASH, "/");
    let canonical = !id.is_empty()
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && !name
            .split('/')
            .any(|c| c.starts_with('_') || c == "." || c == "..")
        && repo_id(&name) == id;
    canonical.then_some(name)
}

/// The three manifest folders of a Crane repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Section {
    /// `manifests/1`: schema1.
    One,
    /// `manifests/2`: schema2.
    Two,
    /// `manifests/list`: manifest lists.
    List,
}

impl Section {
    pub const ALL: [Section; 3] = [Section::One, Section::Two, Section::List];

    pub fn name(self) -> &'static str {
        match self {
            Section::One => "1",
            Section::Two => "2",
            Section::List => "list",
        }
    }

    fn from_name(name: &str) -> Option<Section> {
        Section::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The file of a registry manifest folder this section serves.
    pub fn kind(self) -> ManifestKind {
        match self {
            Section::One => ManifestKind::Schema1,
            Section::Two => ManifestKind::Schema2,
            Section::List => ManifestKind::List,
        }
    }
}

/// A node of the Crane tree that has no counterpart in the registry namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CraneNode {
    /// Holds `app/` and `web/` only.
    Root,
    /// `app/`.
    App,
    /// `app/<repo_id>.json` of the named repository.
    AppFile(String),
    /// `web/`.
    Web,
    /// `web/<repo_id>/`.
    RepoDir(String),
    /// `web/<repo_id>/manifests/`.
    Manifests(String),
    /// `web/<repo_id>/manifests/<1|2|list>/`.
    Section(String, Section),
}

impl CraneNode {
    pub fn is_dir(&self) -> bool {
        !matches!(self, CraneNode::AppFile(_))
    }

    /// The repository the node belongs to, if any.
    pub fn repository(&self) -> Option<&str> {
        match self {
            CraneNode::Root | CraneNode::App | CraneNode::Web => None,
            CraneNode::AppFile(r)
            | CraneNode::RepoDir(r)
            | CraneNode::Manifests(r)
            | CraneNode::Section(r, _) => Some(r),
        }
    }
}

/// A Crane path: what it names if the repository exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CranePath {
    Node(CraneNode),
    /// A registry-namespace location (files and the blobs/tags folders) below `web/`.
    Mapped(Location),
}

/// Parses a Crane path ("web/a___b/manifests/2/latest"). Pure; None if it can name
/// nothing.
pub fn parse(path: &str) -> Option<CranePath> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let node = |n| Some(CranePath::Node(n));
    match parts.as_slice() {
        [] => node(CraneNode::Root),
        [APP] => node(CraneNode::App),
        [APP, file] => {
            let name = repo_name(file.strip_suffix(".json")?)?;
            node(CraneNode::AppFile(name))
        }
        [WEB] => node(CraneNode::Web),
        [WEB, id, rest @ ..] => parse_web(repo_name(id)?, rest),
        _ => None,
    }
}

/// The part of a `web/<repo_id>/…` path after the repository id.
fn parse_web(name: String, rest: &[&str]) -> Option<CranePath> {
    let node = |n| Some(CranePath::Node(n));
    let mapped = |l| Some(CranePath::Mapped(l));
    match rest {
        [] => node(CraneNode::RepoDir(name)),
        ["manifests"] => node(CraneNode::Manifests(name)),
        ["manifests", s] => node(CraneNode::Section(name, Section::from_name(s)?)),
        ["manifests", s, r] => {
            let section = Section::from_name(s)?;
            mapped(Location::ManifestFile(
                name,
                Reference::parse(r)?,
                section.kind(),
            ))
        }
        ["blobs"] => mapped(Location::Blobs(name)),
        ["blobs", d] => {
            let digest = Digest::parse(d).ok().filter(|d| d.sha256_hex().is_some())?;
            mapped(Location::Blob(name, digest))
        }
        ["tags"] => mapped(Location::Tags(name)),
        ["tags", "list"] => mapped(Location::TagList(name)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn repo_ids_are_one_component_and_reversible() {
        assert_eq!(repo_id("single"), "single");
        assert_eq!(repo_id("a/b/c"), "a___b___c");
        assert_eq!(repo_id("library/my_app__x"), "library___my_app__x");
        for name in [
            "single",
            "a/b/c",
            "library/my_app__x",
            "Registry.example/x-y",
        ] {
            assert_eq!(repo_name(&repo_id(name)).as_deref(), Some(name));
            assert!(!repo_id(name).contains('/'));
        }
        for bad in ["", "___a", "a___", "a______b", "a/b", "_x", "a_____b"] {
            assert_eq!(repo_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn app_holds_app_files_only() {
        let m = |p: &str| parse(p);
        assert_eq!(m(""), Some(CranePath::Node(CraneNode::Root)));
        assert_eq!(m("app"), Some(CranePath::Node(CraneNode::App)));
        assert_eq!(
            m("app/a___b.json"),
            Some(CranePath::Node(CraneNode::AppFile("a/b".into())))
        );
        // Nothing else below app/: no folders, no other names, whatever a store holds.
        for bad in [
            "app/a___b",
            "app/a___b/manifests",
            "app/x.json/y",
            "app/emptylayers/manifests/2/hijack.json",
            "app/.json",
            "app/___.json",
            "a___b.json",
            "lib",
            "app/web",
        ] {
            assert_eq!(m(bad), None, "{bad}");
        }
    }

    #[test]
    fn web_maps_onto_the_registry_namespace() {
        let m = |p: &str| parse(p);
        let tag = |t: &str| Reference::Tag(t.into());
        let digest = Reference::Digest(Digest::parse(D).unwrap());
        assert_eq!(m("web"), Some(CranePath::Node(CraneNode::Web)));
        assert_eq!(
            m("web/a___b/"),
            Some(CranePath::Node(CraneNode::RepoDir("a/b".into())))
        );
        assert_eq!(
            m("web/a___b/manifests"),
            Some(CranePath::Node(CraneNode::Manifests("a/b".into())))
        );
        assert_eq!(
            m("web/x/manifests/list"),
            Some(CranePath::Node(CraneNode::Section(
                "x".into(),
                Section::List
            )))
        );
        assert_eq!(
            m("web/a___b/manifests/1/latest"),
            Some(CranePath::Mapped(Location::ManifestFile(
                "a/b".into(),
                tag("latest"),
                ManifestKind::Schema1
            )))
        );
        assert_eq!(
            m(&format!("web/x/manifests/2/{D}")),
            Some(CranePath::Mapped(Location::ManifestFile(
                "x".into(),
                digest.clone(),
                ManifestKind::Schema2
            )))
        );
        assert_eq!(
            m("web/x/manifests/list/v1.0"),
            Some(CranePath::Mapped(Location::ManifestFile(
                "x".into(),
                tag("v1.0"),
                ManifestKind::List
            )))
        );
        assert_eq!(
            m(&format!("web/x/blobs/{D}")),
            Some(CranePath::Mapped(Location::Blob(
                "x".into(),
                Digest::parse(D).unwrap()
            )))
        );
        assert_eq!(
            m("web/x/blobs"),
            Some(CranePath::Mapped(Location::Blobs("x".into())))
        );
        assert_eq!(
            m("web/x/tags/list"),
            Some(CranePath::Mapped(Location::TagList("x".into())))
        );
        for bad in [
            "web/x/manifests/3/latest",
            "web/x/manifests/2/latest/extra",
            "web/x/manifests/2/-bad",
            "web/x/blobs/md5:00",
            "web/x/tags/other",
            "web/x/other",
            "web/a/b/manifests",
            "x/manifests/2/latest",
        ] {
            assert_eq!(m(bad), None, "{bad}");
        }
    }
}

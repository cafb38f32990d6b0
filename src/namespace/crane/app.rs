//! The Crane app file (metadata version 4), in the shape pulp_docker writes it.

use super::repo_id;
use std::collections::BTreeMap;

/// What the app file of a repository says (besides names and URL).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppData {
    /// Tags and digests of stored schema2 manifests.
    pub schema2: Vec<String>,
    /// Tags and digests of stored manifest lists.
    pub lists: Vec<String>,
    /// List tags → (their platform entry's digest, 1 or 2).
    pub amd64: BTreeMap<String, (String, u8)>,
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

fn json_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| json_string(s)).collect();
    format!("[{}]", inner.join(", "))
}

/// The Crane metadata file (version 4), in the shape pulp_docker writes it (Python's
/// `json.dumps`), lists sorted.
pub fn app_json(name: &str, base_url: &str, data: &AppData) -> String {
    let id = repo_id(name);
    let url = format!("{}/{id}/", base_url.trim_end_matches('/'));
    let mut schema2 = data.schema2.clone();
    schema2.sort();
    schema2.dedup();
    let mut lists = data.lists.clone();
    lists.sort();
    lists.dedup();
    let amd64: Vec<String> = data
        .amd64
        .iter()
        .map(|(tag, (digest, v))| format!("{}: [{}, {v}]", json_string(tag), json_string(digest)))
        .collect();
    format!(
        "{{\"type\": \"pulp-docker-redirect\", \"version\": 4, \"repository\": {}, \
         \"repo-registry-id\": {}, \"url\": {}, \"protected\": false, \
         \"schema2_data\": {}, \"manifest_list_data\": {}, \"manifest_list_amd64_tags\": {{{}}}}}\n",
        json_string(&id),
        json_string(name),
        json_string(&url),
        json_list(&schema2),
        json_list(&lists),
        amd64.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn app_file_is_crane_metadata_version_4() {
        let mut data = AppData {
            schema2: vec!["latest".into(), D.into()],
            lists: vec!["multi".into()],
            ..AppData::default()
        };
        data.amd64.insert("multi".into(), (D.into(), 2));
        let text = app_json("a/b", "https://h.example/pulp/docker/v2/", &data);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], 4);
        assert_eq!(v["type"], "pulp-docker-redirect");
        assert_eq!(v["repository"], "a___b");
        assert_eq!(v["repo-registry-id"], "a/b");
        assert_eq!(v["url"], "https://h.example/pulp/docker/v2/a___b/");
        assert_eq!(v["protected"], false);
        assert_eq!(v["schema2_data"], serde_json::json!(["latest", D]));
        assert_eq!(v["manifest_list_data"], serde_json::json!(["multi"]));
        assert_eq!(
            v["manifest_list_amd64_tags"],
            serde_json::json!({"multi": [D, 2]})
        );
        assert!(text.starts_with("{\"type\": \"pulp-docker-redirect\", \"version\": 4, "));
        let empty = app_json("x", "/pulp/docker/v2", &AppData::default());
        let v: serde_json::Value = serde_json::from_str(&empty).unwrap();
        assert_eq!(v["url"], "/pulp/docker/v2/x/");
        assert_eq!(v["manifest_list_amd64_tags"], serde_json::json!({}));
    }
}

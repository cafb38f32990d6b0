//! The command line's own behaviour: `--version`, and the generated man pages and
//! shell completions.

use std::process::Command;

fn registryfs(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_registryfs"))
        .args(args)
        .output()
        .expect("runs")
}

#[test]
fn version_names_the_git_commit() {
    let out = registryfs(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let commit = head.as_deref().unwrap_or("unknown");
    assert_eq!(
        text,
        format!(
            "registryfs {} (commit {commit})\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

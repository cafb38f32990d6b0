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

#[test]
fn man_pages_and_completions_come_from_the_command_definitions() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = registryfs(&[
        "generate-docs",
        out_dir.path().to_str().expect("UTF-8 path"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |rel: &str| {
        std::fs::read_to_string(out_dir.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    let top = read("man/registryfs.1");
    assert!(top.contains(".TH registryfs 1"), "{top}");
    for command in ["ls", "cat", "mount", "keygen", "httpd-config", "verify"] {
        let roff_name = command.replace('-', "\\-");
        assert!(
            top.contains(&format!("registryfs\\-{roff_name}(1)")),
            "{command}: {top}"
        );
        let page = read(&format!("man/registryfs-{command}.1"));
        assert!(
            page.contains(&format!(".TH registryfs-{command} 1")),
            "{page}"
        );
    }
    // The hidden packaging command has no page and is not completed.
    assert!(!out_dir
        .path()
        .join("man/registryfs-generate-docs.1")
        .exists());
    for (file, shell) in [
        ("completions/registryfs.bash", "bash"),
        ("completions/_registryfs", "zsh"),
        ("completions/registryfs.fish", "fish"),
    ] {
        let text = read(file);
        assert!(text.contains("verify") && text.contains("json"), "{file}");
        assert!(
            !text.contains("generate-docs") && !text.contains("generate__subcmd"),
            "{file}"
        );
        if shell == "bash" {
            let syntax = Command::new("bash")
                .arg("-n")
                .arg(out_dir.path().join(file))
                .status()
                .expect("bash");
            assert!(syntax.success(), "{file} is not valid bash");
        }
    }
}

//! Build script: the short git commit as `SIPWARD_GIT_COMMIT` (for `sipward_build_info` and
//! `--version`), `unknown` when built outside a git checkout or without git.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SIPWARD_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=build.rs");
    // Rerun after a commit or checkout; only paths that exist (a missing one reruns always).
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        for file in ["HEAD", "logs/HEAD"] {
            let path = PathBuf::from(&dir).join(file);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}

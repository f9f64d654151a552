//! Build script: records the git commit the binary is built from as `SIPWARD_GIT_COMMIT`
//! (`git rev-parse --short HEAD`), for `sipward --version`, the start-up log line and the
//! package. "unknown" when git or the repository is absent (a source tarball); the
//! `SIPWARD_GIT_COMMIT` environment variable, when set, overrides it.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SIPWARD_GIT_COMMIT");
    let commit = std::env::var("SIPWARD_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    // Rebuild when HEAD moves: HEAD itself (a branch switch) and the file of the branch it names
    // (a commit), plus packed-refs; paths from git so a worktree's `.git` file works too.
    for path in [
        git(&["rev-parse", "--git-path", "HEAD"]),
        git(&["rev-parse", "--symbolic-full-name", "HEAD"])
            .and_then(|r| git(&["rev-parse", "--git-path", &r])),
        git(&["rev-parse", "--git-path", "packed-refs"]),
    ]
    .into_iter()
    .flatten()
    {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rustc-env=SIPWARD_GIT_COMMIT={commit}");
}

/// One line of `git` output, or `None` when git fails or prints nothing.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

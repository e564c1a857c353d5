//! Records the commit the program is built from, for the `commit` label
//! of `sipwarden_build_info`: `SIPWARDEN_COMMIT` when set (a build from a
//! tarball or in a container without `.git`), else `git rev-parse`; the
//! program says "unknown" when neither gives one. Reruns only when HEAD
//! or the branch it points to moves, not at every edit.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SIPWARDEN_COMMIT");
    let commit = std::env::var("SIPWARDEN_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit);
    if let Some(c) = commit {
        println!("cargo:rustc-env=SIPWARDEN_COMMIT={c}");
    }
}

/// One line of `git ARGS` in the package's directory, if git ran and
/// printed one.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let line = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !line.is_empty()).then_some(line)
}

fn git_commit() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // The files that move with HEAD: HEAD itself (a checkout), the ref of
    // the branch (a commit) and packed-refs. Only those that exist: a
    // missing one would rerun this script at every build.
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watch.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for w in watch {
        if let Some(p) = git(&["rev-parse", "--git-path", &w]) {
            if std::path::Path::new(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
    Some(commit)
}

//! Stamps the build with its git commit: `COMM100_BRIDGE_COMMIT` when set (a container
//! build has no `.git`), else `git rev-parse HEAD`, else "unknown".

use std::path::PathBuf;
use std::process::Command;

// The build script is no test process: no mock broker to race (clippy.toml).
#[allow(clippy::disallowed_methods)]
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=COMM100_BRIDGE_COMMIT");
    let commit = match std::env::var("COMM100_BRIDGE_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => commit.trim().to_owned(),
        _ => {
            if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) {
                // A new commit moves HEAD or the branch it names.
                println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
                if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    println!("cargo:rerun-if-changed={}", dir.join(branch).display());
                }
                println!(
                    "cargo:rerun-if-changed={}",
                    dir.join("packed-refs").display()
                );
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env=COMM100_BRIDGE_COMMIT={commit}");
}

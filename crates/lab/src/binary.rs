//! Finding the `sorcha-peer` binary to run: the flag, else a release build next to the
//! workspace (or next to this executable), else `PATH`.

use std::path::{Path, PathBuf};

const NAME: &str = "sorcha-peer";

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("--binary {0}: no such executable file")]
    Missing(PathBuf),
    #[error(
        "no sorcha-peer binary found (looked in {looked}, then PATH): build it with `cargo build --release -p sorcha-peer`, or pass --binary PATH"
    )]
    NotFound { looked: String },
}

/// The workspace this lab was built from.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where a release build may be, in order of preference.
pub fn candidates() -> Vec<PathBuf> {
    let mut dirs = vec![workspace().join("target/release")];
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(target).join("release"));
    }
    // peer-lab itself usually sits in <target>/<profile>/, next to the node's build.
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        dirs.push(dir);
    }
    dirs.into_iter().map(|d| d.join(NAME)).collect()
}

pub fn find(flag: Option<&Path>) -> Result<PathBuf, BinaryError> {
    if let Some(path) = flag {
        return if is_executable(path) {
            Ok(path.to_owned())
        } else {
            Err(BinaryError::Missing(path.to_owned()))
        };
    }
    let candidates = candidates();
    if let Some(found) = candidates.iter().find(|p| is_executable(p)) {
        return Ok(clean(found));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(NAME))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .find(|p| is_executable(p))
        .ok_or_else(|| BinaryError::NotFound {
            looked: candidates
                .iter()
                .map(|p| clean(p).display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn clean(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_owned())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_flag_binary_is_named() {
        let e = find(Some(Path::new("/nonexistent/sorcha-peer"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/sorcha-peer"), "{e}");
    }

    #[test]
    fn the_workspace_release_build_comes_first() {
        assert!(candidates()[0].ends_with("target/release/sorcha-peer"));
    }
}

//! Where the workspace and its built binaries are.

use std::path::PathBuf;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

/// A binary built by `cargo build --workspace --bins` into the same target directory as the
/// running test (tests run from `target/<profile>/deps/`).
pub fn bin(name: &str) -> PathBuf {
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.parent()
            .and_then(|deps| deps.parent())
            .map(|dir| dir.join(name))
    });
    match from_exe {
        Some(p) if p.exists() => p,
        _ => workspace_root().join("target/debug").join(name),
    }
}

/// Like [`bin`], failing with a clear message when the binary was not built.
pub fn existing_bin(name: &str) -> anyhow::Result<PathBuf> {
    let p = bin(name);
    if p.exists() {
        Ok(p)
    } else {
        anyhow::bail!(
            "{} not found: run `cargo build --workspace --bins` first",
            p.display()
        )
    }
}

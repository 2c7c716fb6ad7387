//! Where the tests find BochsCPU, the x86-64 emulator with AVX-512 that runs the AVX-512 code
//! (`scripts/x86-emulate`). Shared by the integration tests (`common`) and the compiler's unit
//! tests (included by path).

use std::path::{Path, PathBuf};

/// The repository root, from a crate's manifest directory (the root or a member crate): the
/// nearest folder above it that holds `scripts/x86-emulate`.
pub fn repo_root(manifest_dir: &str) -> PathBuf {
    let dir = Path::new(manifest_dir);
    dir.ancestors()
        .find(|d| d.join("scripts/x86-emulate").exists())
        .unwrap_or(dir)
        .to_path_buf()
}

/// A Python that has BochsCPU: `BERTC_X86_EMULATOR`, or the venv `scripts/setup-x86-emulator`
/// makes. Without one, `None` (the test says it skips), unless `BERTC_REQUIRE_EMULATOR=1`
/// (CI), where it panics.
pub fn x86_emulator(repo: &Path) -> Option<PathBuf> {
    let python = std::env::var_os("BERTC_X86_EMULATOR")
        .map(PathBuf::from)
        .or_else(|| Some(repo.join("target/x86-emu-venv/bin/python")).filter(|p| p.exists()));
    if python.is_none() {
        assert!(
            std::env::var("BERTC_REQUIRE_EMULATOR").as_deref() != Ok("1"),
            "BERTC_REQUIRE_EMULATOR=1 but no emulator: run scripts/setup-x86-emulator"
        );
        eprintln!("skipped: no x86 emulator (scripts/setup-x86-emulator installs it)");
    }
    python
}

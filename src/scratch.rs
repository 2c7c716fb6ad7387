//! Scratch folders for what bertc hands to the C compiler, removed when dropped, and the one
//! way a compiled model's sources are written into them (object, header, C glue).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use bertc_codegen::{self as codegen, shim, Compiled};
use bertc_ir::Graph;
use bertc_targets::Target;

use crate::CliError;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh folder under the temporary directory; removed with its contents on drop.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Result<Scratch, CliError> {
        let dir = std::env::temp_dir().join(format!(
            "bertc-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| CliError::Io {
            what: dir.display().to_string(),
            source: e,
        })?;
        Ok(Scratch { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn write(&self, file: &str, data: &[u8]) -> Result<(), CliError> {
        std::fs::write(self.path(file), data).map_err(|e| CliError::Io {
            what: self.path(file).display().to_string(),
            source: e,
        })
    }

    /// Compiles `g` (output selected, fused) and writes `NAME.o`, `NAME.h` and `NAME_glue.c`.
    pub fn write_model(
        &self,
        g: &Graph,
        target: &Target,
        name: &str,
        source: &str,
        opts: &codegen::Options,
    ) -> Result<Compiled, CliError> {
        let c = codegen::compile_with(g, target, name, opts)
            .map_err(|e| CliError::Input(format!("{source}: {e}")))?;
        let cpu = target.cpu_checks();
        // the output `select_output` kept is named by its kind
        let kind = g.outputs.first().map(|o| o.0.clone()).unwrap_or_default();
        let info = shim::ShimInfo {
            name,
            output_kind: &kind,
            cpu_features: cpu,
            target: &target.triple,
            source,
        };
        self.write(&format!("{name}.o"), &c.object)?;
        self.write(
            &format!("{name}.h"),
            shim::header(&c.program, &info).as_bytes(),
        )?;
        self.write(
            &format!("{name}_glue.c"),
            shim::glue(&c.program, &info, &c.scratch_floats_c).as_bytes(),
        )?;
        Ok(c)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

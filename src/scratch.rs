//! Scratch folders for what bertc hands to the C compiler, removed when dropped; the one way a
//! compiled model's sources are written into them (object, header, C glue); running the
//! target's toolchain there (`run_tool`, `build_so`); and the C names of artifacts.

use std::path::{Path, PathBuf};
use std::process::Command;
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

    /// Compiles `g` (output selected, fused) and writes `NAME.o`, `NAME.h` and `NAME_glue.c`,
    /// and `NAME_text.c` when the artifact has a tokenizer.
    pub fn write_model(
        &self,
        g: &Graph,
        target: &Target,
        (name, source): (&str, &str),
        text: Option<&bertc_text::TextSpec>,
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
            text,
            labels: &[],
        };
        if let Some(t) = text {
            if t.model.vocab_len() > c.program.vocab {
                return Err(CliError::Input(format!(
                    "{}: {} tokens, more than the {} rows of {source}'s embedding table (compile with --tokenizer none for an artifact that takes token ids)",
                    t.source,
                    t.model.vocab_len(),
                    c.program.vocab
                )));
            }
            let tables = bertc_text::Tables::new(t);
            self.write(
                &format!("{name}_text.c"),
                codegen::tokenizer::tokenizer_c(&info, t, &tables).as_bytes(),
            )?;
        }
        self.write(&format!("{name}.o"), &c.object)?;
        self.write(
            &format!("{name}.h"),
            shim::header(&c.program, &info).as_bytes(),
        )?;
        self.write(&format!("{name}_glue.c"), shim::glue(&c, &info).as_bytes())?;
        Ok(c)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A C identifier from a file stem: letters, digits and `_`, not starting with a digit.
pub(crate) fn c_name(stem: &str) -> String {
    let mut s: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert_str(0, "m_");
    }
    s
}

pub(crate) fn run_tool(cmd: &mut Command, what: &str, target: &Target) -> Result<(), CliError> {
    let program = cmd.get_program().to_string_lossy().to_string();
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CliError::Input(format!(
                "{what}: '{program}' not found; {} needs it (Debian packages: {})",
                target.triple,
                target.cc_packages()
            ))
        } else {
            CliError::Io {
                what: format!("{what}: {program}"),
                source: e,
            }
        }
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // the linker's own line says why (`ld: final link failed: No space left on device`);
        // the driver's `collect2: error: ld returned 1 exit status` only that it did
        let first = err
            .lines()
            .find(|l| {
                !l.starts_with("collect2")
                    && (l.contains("undefined reference")
                        || l.contains("error:")
                        || l.contains("ld: "))
            })
            .or_else(|| err.lines().next())
            .unwrap_or("");
        return Err(CliError::Input(format!(
            "{what}: {program} failed: {}",
            first.trim()
        )));
    }
    Ok(())
}

/// The stem (of the header and the symbols) and the file name of an artifact with extension
/// `ext` (`lib`: named `libSTEM.ext`, as libraries are) for the file name `-o` gives: a name
/// that already ends in `ext` is kept as it is, its `lib` prefix left out of the stem.
pub fn artifact_names(file: &str, ext: &str, lib: bool) -> (String, String) {
    match file.strip_suffix(ext) {
        Some(base) => {
            let stem = base.strip_prefix("lib").filter(|s| lib && !s.is_empty());
            (stem.unwrap_or(base).to_string(), file.to_string())
        }
        None if lib => (file.to_string(), format!("lib{file}{ext}")),
        None => (file.to_string(), format!("{file}{ext}")),
    }
}

/// The symbol prefix of a shared library artifact (`libNAME.so` or `NAME.so`): `name` if
/// given, else from the file name as `bertc compile` derives it.
pub fn artifact_name(path: &Path, name: Option<&str>) -> Result<String, CliError> {
    if let Some(n) = name {
        return Ok(n.to_string());
    }
    path.file_name()
        .and_then(|s| s.to_str())
        .filter(|s| s.ends_with(".so"))
        .map(|s| c_name(&artifact_names(s, ".so", true).0))
        .ok_or_else(|| {
            CliError::Input(format!(
                "{}: give the artifact's symbol prefix with --name",
                path.display()
            ))
        })
}

/// Compiles a graph ready for code generation into `libNAME.so` in `dir` (host target).
pub fn build_so(
    g: &Graph,
    target: &Target,
    name: &str,
    dir: &Scratch,
) -> Result<PathBuf, CliError> {
    dir.write_model(
        g,
        target,
        (name, "bertc"),
        None,
        &codegen::Options::default(),
    )?;
    let mut cc = target.toolchain().shared(
        &format!("lib{name}.so"),
        &[format!("{name}_glue.c"), format!("{name}.o")],
    );
    cc.current_dir(dir.dir());
    run_tool(&mut cc, "link", target)?;
    // the object holds the weights a second time; measuring many models at once (the
    // report's prefixes) would otherwise need twice the disk
    let _ = std::fs::remove_file(dir.path(&format!("{name}.o")));
    Ok(dir.path(&format!("lib{name}.so")))
}

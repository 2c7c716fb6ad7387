//! `bertc compile`: raise, select the output, generate the object, and package it with the
//! target's C compiler as an executable, a static or shared library with its header, or an
//! object with its header.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bertc_codegen::{self as codegen, shim};

use crate::scratch::{artifact_name, c_name, run_tool, Scratch};
use bertc_passes::{select_output, OutputKind};
use bertc_targets::Target;

use crate::CliError;

/// What `bertc compile` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    Exe,
    Staticlib,
    Sharedlib,
    Obj,
}

pub struct Options {
    pub model: PathBuf,
    pub out: PathBuf,
    pub emit: Emit,
    pub target: Option<String>,
    pub cpu: Option<String>,
    pub output: OutputKind,
    pub max_seq: Option<usize>,
    pub name: Option<String>,
    /// Link the executable statically (always so when cross compiling).
    pub static_exe: bool,
    pub quiet: bool,
    /// Structured pruning before code generation.
    pub prune: Option<crate::prune::PruneOptions>,
    /// Quantization after pruning and fusion.
    pub quantize: Option<crate::quantize::QuantizeOptions>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            model: PathBuf::new(),
            out: PathBuf::new(),
            emit: Emit::Exe,
            target: None,
            cpu: None,
            output: OutputKind::LastHiddenState,
            max_seq: None,
            name: None,
            static_exe: false,
            quiet: false,
            prune: None,
            quantize: None,
        }
    }
}

/// What `compile` did, for reports.
pub struct Outcome {
    pub prune: Option<crate::prune::PruneOutcome>,
    /// The pruned graph (raised, every output), when pruning ran.
    pub pruned_graph: Option<bertc_ir::Graph>,
    /// Each linear's measured int8 error and precision, when quantization had calibration.
    pub quantized: Vec<crate::quantize::LayerReport>,
}

pub fn compile(o: &Options) -> Result<Outcome, CliError> {
    let start = Instant::now();
    if o.static_exe && o.emit != Emit::Exe {
        return Err(CliError::Input(
            "--static links executables: it needs --emit exe".into(),
        ));
    }
    let target = match &o.target {
        Some(t) => Target::with_cpu(t, o.cpu.as_deref()),
        None => Target::with_cpu(&Target::host().triple, o.cpu.as_deref()),
    }
    .map_err(|e| CliError::Input(e.to_string()))?;
    if let Some(q) = &o.quantize {
        q.check()?;
    }
    let (mut g, mut reports) = crate::load_raised(&o.model)?;
    let mut pruned = None;
    let mut pruned_graph = None;
    if let Some(p) = &o.prune {
        let (r, outcome) = crate::prune::prune(&mut g, &o.model, p, o.quiet)?;
        reports.push(r);
        pruned = Some(outcome);
        pruned_graph = Some(g.clone());
    }
    select_output(&mut g, o.output)?;
    reports.extend(bertc_passes::optimize(&mut g)?);
    let mut quantized = Vec::new();
    if let Some(q) = &o.quantize {
        let (r, layers) = crate::quantize::quantize_model(&mut g, &o.model, q, o.quiet)?;
        reports.push(r);
        if !o.quiet {
            eprint!("{}", crate::quantize::layer_lines(&layers));
        }
        quantized = layers;
    }
    if let Some(m) = o.max_seq {
        let model_max = g.max_seq.unwrap_or(usize::MAX);
        if m == 0 || m > model_max {
            return Err(CliError::Input(format!(
                "--max-seq {m}: must be between 1 and the model's maximum of {model_max}"
            )));
        }
        g.max_seq = Some(m);
    }
    let stem = o
        .out
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    if stem.is_empty() {
        return Err(CliError::Input(format!(
            "-o {}: not a file name",
            o.out.display()
        )));
    }
    let name = c_name(o.name.as_deref().unwrap_or(&stem));
    let dir = o
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let source = o
        .model
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = Scratch::new(&name)?;
    let compiled = tmp.write_model(&g, &target, &name, &source, &codegen::Options::default())?;
    let info = shim::ShimInfo {
        name: &name,
        output_kind: o.output.name(),
        cpu_features: vec![],
        target: &target.triple,
        source: &source,
    };
    let write = |file: &str, data: &[u8]| tmp.write(file, data);
    let (obj, glue, main, h) = (
        format!("{name}.o"),
        format!("{name}_glue.c"),
        format!("{name}_main.c"),
        format!("{name}.h"),
    );
    let tc = target.toolchain();
    let here = |mut c: Command| {
        c.current_dir(tmp.dir());
        c
    };
    let mut produced = Vec::new();
    let mut copy_out = |from: &str, to: PathBuf| -> Result<(), CliError> {
        std::fs::copy(tmp.path(from), &to).map_err(|e| CliError::Io {
            what: to.display().to_string(),
            source: e,
        })?;
        produced.push(to);
        Ok(())
    };
    match o.emit {
        Emit::Exe => {
            write(&main, shim::main_c(&info).as_bytes())?;
            let mut c = here(tc.executable("a.out", &[&main, &glue, &obj], &[], o.static_exe));
            run_tool(&mut c, "link", &target)?;
            copy_out("a.out", o.out.clone())?;
        }
        Emit::Staticlib | Emit::Obj => {
            run_tool(
                &mut here(tc.object(&glue, "glue.o")),
                "compile the glue",
                &target,
            )?;
            if o.emit == Emit::Staticlib {
                run_tool(
                    &mut here(tc.archive("lib.a", &[obj.as_str(), "glue.o"])),
                    "archive",
                    &target,
                )?;
                copy_out("lib.a", dir.join(format!("lib{stem}.a")))?;
            } else {
                run_tool(
                    &mut here(tc.relocatable("all.o", &[obj.as_str(), "glue.o"])),
                    "link the object",
                    &target,
                )?;
                copy_out("all.o", dir.join(format!("{stem}.o")))?;
            }
            copy_out(&h, dir.join(format!("{stem}.h")))?;
        }
        Emit::Sharedlib => {
            run_tool(
                &mut here(tc.shared("lib.so", &[&glue, &obj])),
                "link the shared library",
                &target,
            )?;
            copy_out("lib.so", dir.join(format!("lib{stem}.so")))?;
            copy_out(&h, dir.join(format!("{stem}.h")))?;
        }
    }
    drop(tmp);
    if !o.quiet {
        for r in &reports {
            eprintln!("      {r}");
        }
        let p = &compiled.program;
        eprintln!(
            "   Compiled {} for {} in {:.2}s: {} kernel steps, {} weights ({:.1} MB), {} Cranelift instructions{}",
            o.model.display(),
            target,
            start.elapsed().as_secs_f64(),
            p.steps.len(),
            p.weights.len(),
            p.weights.iter().map(|w| w.bytes.len()).sum::<usize>() as f64 / 1e6,
            compiled.instructions,
            match compiled.gemm_families.as_slice() {
                [] => format!(", {} portable kernels", compiled.isa),
                f => format!(", {} GEMM microkernels ({})", compiled.isa, f.join(", ")),
            }
        );
        if let Some(p) = &pruned {
            eprintln!(
                "     Pruned ({}) in {:.1}s (calibration {:.1}s on {} sequences / {} tokens, levels {:.1}s, search {:.1}s, refit {:.1}s): predicted {:.2} ms, dense {:.2} ms ({:.2}x), target {:.2} ms",
                p.method.name(),
                p.total_secs,
                p.calibration_secs,
                p.calibration_sequences,
                p.calibration_tokens,
                p.database_secs,
                p.search_secs,
                p.refit_secs,
                p.predicted_ms,
                p.dense_ms,
                p.dense_ms / p.predicted_ms,
                p.target_ms
            );
            for (kind, what) in [
                (bertc_targets::BlockKind::Attention, "heads"),
                (bertc_targets::BlockKind::Ffn, "FFN neurons"),
            ] {
                let v: Vec<String> = p
                    .blocks
                    .iter()
                    .filter(|b| b.kind == kind)
                    .map(|b| format!("{}/{}", b.kept, b.size))
                    .collect();
                eprintln!("            {what} kept by layer: {}", v.join(" "));
            }
        }
        for f in &produced {
            eprintln!("    Wrote {}", f.display());
        }
    }
    Ok(Outcome {
        prune: pruned,
        pruned_graph,
        quantized,
    })
}

/// A `.so` artifact as it is (its symbol prefix from `name` or its file name), or a model
/// compiled here to `lib{tag}.so` in `tmp` with `output` (and `quantize`): the library and
/// its prefix.
pub fn shared_library(
    path: &Path,
    name: Option<&str>,
    (output, quantize): (OutputKind, Option<crate::quantize::Quantize>),
    cpu: Option<&str>,
    tmp: &Scratch,
    tag: &str,
) -> Result<(PathBuf, String), CliError> {
    if path.extension().is_some_and(|e| e == "so") {
        return Ok((path.to_path_buf(), artifact_name(path, name)?));
    }
    compile(&Options {
        model: path.to_path_buf(),
        out: tmp.path(tag),
        emit: Emit::Sharedlib,
        cpu: cpu.map(str::to_string),
        output,
        name: Some(tag.into()),
        quiet: true,
        quantize: quantize.map(crate::quantize::QuantizeOptions::plain),
        ..Options::default()
    })?;
    Ok((tmp.path(&format!("lib{tag}.so")), tag.to_string()))
}

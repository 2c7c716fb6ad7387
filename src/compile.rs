//! `bertc compile`: raise, select the output, generate the object, and package it with the
//! target's C compiler as an executable, a static or shared library with its header, or an
//! object with its header.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bertc_codegen::{self as codegen, shim};

use crate::scratch::{artifact_name, artifact_names, c_name, run_tool, Scratch};
use bertc_import::st::DenseAct;
use bertc_ir::{GeluApprox, Op, UnaryOp};
use bertc_passes::{select_embedding, select_output, OutputKind, Pool};
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

impl Emit {
    /// The extension of a library or object (`None`: an executable).
    fn extension(self) -> Option<&'static str> {
        match self {
            Emit::Exe => None,
            Emit::Staticlib => Some(".a"),
            Emit::Sharedlib => Some(".so"),
            Emit::Obj => Some(".o"),
        }
    }

    /// The stem that names the header and the symbols, and the artifact's file name, for the
    /// file name of `-o`: `model` gives `model` and `libmodel.so` (`libmodel.a`, `model.o`);
    /// a name that already ends in the artifact's extension is kept as it is (`model.so` or
    /// `libmodel.so` both give the stem `model`).
    pub fn names(self, file: &str) -> (String, String) {
        match self.extension() {
            Some(ext) => artifact_names(file, ext, self != Emit::Obj),
            None => (file.to_string(), file.to_string()),
        }
    }
}

/// Which tokenizer goes into the artifact.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TokenizerChoice {
    /// The model folder's `tokenizer.json`, or the one beside the `.onnx` file, if any.
    #[default]
    Beside,
    File(PathBuf),
    /// None: the artifact takes token ids only.
    None,
}

impl TokenizerChoice {
    fn load(&self, model: &Path) -> Result<Option<bertc_text::TextSpec>, CliError> {
        let file = match self {
            TokenizerChoice::None => return Ok(None),
            TokenizerChoice::File(f) => f.clone(),
            TokenizerChoice::Beside => crate::inputs::tokenizer_beside(model),
        };
        let Some((text, source)) = crate::inputs::tokenizer_json(&file)? else {
            return Ok(None);
        };
        bertc_text::TextSpec::from_json(&text, &source)
            .map(Some)
            .map_err(|e| {
                CliError::Input(format!(
                    "{e} (compile with --tokenizer none for an artifact that takes token ids)"
                ))
            })
    }
}

pub struct Options {
    pub model: PathBuf,
    pub out: PathBuf,
    pub emit: Emit,
    pub target: Option<String>,
    pub cpu: Option<String>,
    /// The caches to block for instead of the `--cpu` level's (or this machine's).
    pub caches: Option<bertc_targets::Caches>,
    /// `None`: the folder's sentence-transformers embedding if it has one, else the last
    /// hidden state.
    pub output: Option<OutputKind>,
    pub max_seq: Option<usize>,
    pub name: Option<String>,
    pub tokenizer: TokenizerChoice,
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
            caches: None,
            output: None,
            max_seq: None,
            name: None,
            tokenizer: TokenizerChoice::Beside,
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
    let target = Target::select(o.target.as_deref(), o.cpu.as_deref(), o.caches)
        .map_err(|e| CliError::Input(e.to_string()))?;
    if let Some(q) = &o.quantize {
        q.check()?;
    }
    let text = o.tokenizer.load(&o.model)?;
    if text.is_none() && o.tokenizer == TokenizerChoice::Beside && !o.quiet {
        let dir = bertc_import::st::companion_dir(&o.model);
        if let Some(f) = dir
            .iter()
            .flat_map(|d| ["sentencepiece.bpe.model", "spiece.model"].map(|f| d.join(f)))
            .find(|f| f.is_file())
        {
            eprintln!(
                "    Note: {} without a tokenizer.json: the artifact takes token ids (save the tokenizer as tokenizer.json, e.g. with transformers' save_pretrained, to compile it in)",
                f.display()
            );
        }
    }
    let (mut g, mut reports) = crate::load_raised(&o.model)?;
    if !o.model.is_dir() {
        if let Some((node, op)) = bertc_import::onnx::interpreted_only_node(&o.model) {
            return Err(CliError::Input(format!(
                "{}: node '{node}' ({op}): ONNX Runtime's operator format (QOperator) runs in `bertc run` but is not compiled (its attention multiplies quantized integers, which bertc computes in f32); quantize_static's QDQ format compiles, or compile the float model, with --quantize int8 for bertc's own int8",
                o.model.display()
            )));
        }
    }
    crate::quantize::refuse_quantized_file(&g, &o.model, o.prune.is_some(), o.quantize.is_some())?;
    let mut pruned = None;
    let mut pruned_graph = None;
    if let Some(p) = &o.prune {
        let (r, outcome) = crate::prune::prune(&mut g, &o.model, p, o.quiet)?;
        reports.push(r);
        pruned = Some(outcome);
        pruned_graph = Some(g.clone());
    }
    let (output, st, r) = select(&mut g, &o.model, o.output)?;
    reports.extend(r);
    reports.extend(bertc_passes::optimize(&mut g)?);
    let mut quantized = Vec::new();
    if let Some(q) = &o.quantize {
        let q = q.clone().for_target(&target);
        let (r, layers) = crate::quantize::quantize_model(&mut g, &o.model, &q, o.quiet)?;
        reports.push(r);
        if !o.quiet {
            eprint!("{}", crate::quantize::layer_lines(&layers));
        }
        quantized = layers;
    }
    let st_max = st.as_ref().and_then(|p| p.max_seq_length);
    if let (None, Some(m)) = (o.max_seq, st_max) {
        if g.max_seq.is_none_or(|model| m < model) {
            g.max_seq = Some(m);
            reports.push(bertc_passes::PassReport {
                pass: "max-seq",
                summary: format!("{m} tokens (sentence_bert_config.json's max_seq_length)"),
            });
        }
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
    let file = o
        .out
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let (stem, artifact) = o.emit.names(&file);
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
    let compiled = tmp.write_model(
        &g,
        &target,
        (&name, &source),
        text.as_ref(),
        &codegen::Options::default(),
    )?;
    let labels = if output == OutputKind::Logits {
        bertc_import::hf::id2label(&o.model).map_err(|e| CliError::Input(e.to_string()))?
    } else {
        Vec::new()
    };
    let info = shim::ShimInfo {
        name: &name,
        output_kind: output.name(),
        cpu_features: vec![],
        target: &target.triple,
        source: &source,
        text: text.as_ref(),
        labels: &labels,
    };
    let write = |file: &str, data: &[u8]| tmp.write(file, data);
    let (obj, glue, main, h) = (
        format!("{name}.o"),
        format!("{name}_glue.c"),
        format!("{name}_main.c"),
        format!("{name}.h"),
    );
    // the C sources beside the object: the glue, and the tokenizer when there is one
    let mut sources = vec![glue.clone()];
    if text.is_some() {
        sources.push(format!("{name}_text.c"));
    }
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
            let inputs: Vec<&str> = [main.as_str()]
                .into_iter()
                .chain(sources.iter().map(String::as_str))
                .chain([obj.as_str()])
                .collect();
            let mut c = here(tc.executable("a.out", &inputs, &[], o.static_exe));
            run_tool(&mut c, "link", &target)?;
            copy_out("a.out", o.out.clone())?;
        }
        Emit::Staticlib | Emit::Obj => {
            let mut objects = vec![obj.clone()];
            for (i, src) in sources.iter().enumerate() {
                let o = format!("c{i}.o");
                run_tool(&mut here(tc.object(src, &o)), "compile the glue", &target)?;
                objects.push(o);
            }
            if o.emit == Emit::Staticlib {
                run_tool(&mut here(tc.archive("lib.a", &objects)), "archive", &target)?;
                copy_out("lib.a", dir.join(&artifact))?;
            } else {
                run_tool(
                    &mut here(tc.relocatable("all.o", &objects)),
                    "link the object",
                    &target,
                )?;
                copy_out("all.o", dir.join(&artifact))?;
            }
            copy_out(&h, dir.join(format!("{stem}.h")))?;
        }
        Emit::Sharedlib => {
            run_tool(
                &mut here(tc.shared("lib.so", &sources.iter().chain([&obj]).collect::<Vec<_>>())),
                "link the shared library",
                &target,
            )?;
            copy_out("lib.so", dir.join(&artifact))?;
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
                "     Pruned ({}) in {:.1}s (calibration {:.1}s on {} {}sequences / {} tokens, levels {:.1}s, search {:.1}s, refit {:.1}s): predicted {:.2} ms, dense {:.2} ms ({:.2}x), target {:.2} ms",
                p.method.name(),
                p.total_secs,
                p.calibration_secs,
                p.calibration_sequences,
                if p.calibration_builtin { "built-in " } else { "" },
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

/// Keeps the output `output` asks for (`None`: the model folder's sentence-transformers
/// embedding if it has one, else the last hidden state); `embedding` reads the folder's
/// pipeline. Returns the kind kept, the pipeline and what was done.
pub fn select(
    g: &mut bertc_ir::Graph,
    model: &Path,
    output: Option<OutputKind>,
) -> Result<
    (
        OutputKind,
        Option<bertc_import::st::SentencePipeline>,
        Vec<bertc_passes::PassReport>,
    ),
    CliError,
> {
    let st = bertc_import::st::read(model).map_err(|e| CliError::Input(e.to_string()))?;
    let in_graph = g
        .outputs
        .iter()
        .any(|o| o.0 == "sentence_embedding" && g.ty(o.1).rank() == 2);
    let output = output.unwrap_or(if st.is_some() || in_graph {
        OutputKind::Embedding
    } else {
        OutputKind::LastHiddenState
    });
    let mut reports = Vec::new();
    match (output, &st) {
        (OutputKind::Embedding, Some(p)) if !in_graph => {
            let pools: Vec<Pool> = p
                .pooling
                .iter()
                .map(|m| match m {
                    bertc_import::st::Pooling::Mean => Pool::Mean,
                    bertc_import::st::Pooling::Cls => Pool::Cls,
                    bertc_import::st::Pooling::Max => Pool::Max,
                    bertc_import::st::Pooling::Mode(m) => Pool::Mode(*m),
                })
                .collect();
            let pooling = pools
                .iter()
                .map(Pool::to_string)
                .collect::<Vec<_>>()
                .join(" + ");
            let dense: Vec<bertc_passes::Projection> = p
                .dense
                .iter()
                .map(|d| bertc_passes::Projection {
                    weight: d.weight.clone(),
                    bias: d.bias.clone(),
                    act: match d.act {
                        DenseAct::Identity => None,
                        DenseAct::Tanh => Some(Op::Unary(UnaryOp::Tanh)),
                        DenseAct::Relu => Some(Op::Unary(UnaryOp::Relu)),
                        DenseAct::Gelu => Some(Op::Gelu {
                            approx: GeluApprox::Erf,
                        }),
                    },
                })
                .collect();
            select_embedding(g, &pools, &dense, p.normalize)?;
            let projections: String = p
                .dense
                .iter()
                .map(|d| {
                    format!(
                        ", dense {}->{} {:?}",
                        d.weight.shape[1], d.weight.shape[0], d.act
                    )
                })
                .collect();
            reports.push(bertc_passes::PassReport {
                pass: "select-output",
                summary: format!(
                    "embedding = {pooling} pooling{projections}{} (from {})",
                    if p.normalize { ", L2-normalized" } else { "" },
                    p.dir.join("modules.json").display()
                ),
            });
        }
        (k, _) => select_output(g, k)?,
    }
    Ok((output, st, reports))
}

/// The `--cpu` and `--caches` of a command that compiles for this machine to run here.
#[derive(Clone, Debug, Default)]
pub struct HostCpu {
    pub cpu: Option<String>,
    pub caches: Option<bertc_targets::Caches>,
}

/// A `.so` artifact as it is (its symbol prefix from `name` or its file name), or a model
/// compiled here to `lib{tag}.so` in `tmp` with `output` (and `quantize`): the library and
/// its prefix.
pub fn shared_library(
    path: &Path,
    name: Option<&str>,
    (output, quantize): (OutputKind, Option<crate::quantize::Quantize>),
    cpu: &HostCpu,
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
        cpu: cpu.cpu.clone(),
        caches: cpu.caches,
        output: Some(output),
        name: Some(tag.into()),
        quiet: true,
        // (`compile` sets the options for its target)
        quantize: quantize.map(|q| crate::quantize::QuantizeOptions::plain(q, &Target::host())),
        ..Options::default()
    })?;
    Ok((tmp.path(&format!("lib{tag}.so")), tag.to_string()))
}

#[cfg(test)]
mod tests {
    use super::Emit;

    #[test]
    fn output_names_give_the_stem_and_the_artifact() {
        let cases = [
            (Emit::Exe, "model", "model", "model"),
            (Emit::Exe, "model.so", "model.so", "model.so"),
            (Emit::Sharedlib, "model", "model", "libmodel.so"),
            (Emit::Sharedlib, "model.so", "model", "model.so"),
            (Emit::Sharedlib, "libmodel.so", "model", "libmodel.so"),
            (Emit::Sharedlib, "lib.so", "lib", "lib.so"),
            (Emit::Staticlib, "model", "model", "libmodel.a"),
            (Emit::Staticlib, "libmodel.a", "model", "libmodel.a"),
            (Emit::Obj, "model", "model", "model.o"),
            (Emit::Obj, "libmodel.o", "libmodel", "libmodel.o"),
        ];
        for (emit, file, stem, artifact) in cases {
            let got = emit.names(file);
            assert_eq!(got, (stem.into(), artifact.into()), "{emit:?} -o {file}");
        }
    }
}

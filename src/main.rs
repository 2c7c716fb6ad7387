//! `bertc`, the driver: parses the command line, loads models through the importers, runs the
//! passes and the interpreter, and reports errors in one line with their context.

mod bench;
mod compile;
mod encoder;
mod eval;
mod help;
mod inputs;
mod inspect;
mod profile;
mod progress;
mod prune;
mod quantize;
mod report;
mod scratch;

use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bertc_interp::{self as interp, Value};
use bertc_ir::Graph;
use bertc_passes::{canonicalize, select_output, OutputKind, PassReport};

/// Everything that can go wrong in a command, reported as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Load(#[from] bertc_import::ImportError),
    #[error(transparent)]
    Pass(#[from] bertc_passes::PassError),
    #[error("{0}")]
    Interp(#[from] interp::InterpError),
    #[error(transparent)]
    Runtime(#[from] bertc_runtime::RuntimeError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Input(String),
}

/// Structured pruning (ZipLM) options of `bertc compile`.
#[derive(clap::Args)]
struct PruneArgs {
    /// Prune heads and FFN neurons until the predicted latency is the dense model's / X.
    #[arg(long, requires = "profile", conflicts_with = "latency")]
    speedup: Option<f64>,
    /// Prune until the predicted latency is at most MS milliseconds.
    #[arg(long, requires = "profile")]
    latency: Option<f64>,
    /// The latency profile (from `bertc profile`) the prediction uses.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Calibration text, one text a line (or an STS Benchmark file); needed to prune.
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Calibration texts used (the first N).
    #[arg(long = "calibration-samples", default_value = "512")]
    calibration_samples: usize,
    /// How structures are chosen: obs (second order, with weight updates) or magnitude
    /// (smallest weight norms, no update; the baseline).
    #[arg(long = "prune-method", value_enum, default_value = "obs")]
    prune_method: PruneMethod,
    /// The tokenizer.json for the calibration text (default: the one beside the model).
    #[arg(long = "calibration-tokenizer")]
    calibration_tokenizer: Option<PathBuf>,
    /// Refit the kept weights block by block on the pruned model's own inputs against the
    /// dense outputs (OBC's sequential order), instead of all at once on the dense inputs.
    /// Measured worse on all-MiniLM-L6-v2 (see BENCHMARKS.md); kept for other models.
    #[arg(long)]
    sequential: bool,
    /// Rounds of SPDY's correction: each measures the model's loss with each pruned block
    /// alone and scales the block's error by it before searching again (0: plain search).
    #[arg(long = "spdy-rounds", default_value = "1")]
    spdy_rounds: usize,
}

/// `--quantize` and its accuracy control (the calibration text is `--calibration`).
#[derive(Args)]
struct QuantizeArgs {
    /// Quantize the linears after pruning and fusion (int8: weights per output channel,
    /// activations per token at run time, word embeddings in int8 rows; `run` interprets the
    /// result with its integer arithmetic, `ir` prints it).
    #[arg(long, value_enum)]
    quantize: Option<quantize::Quantize>,
    /// How int8 weights are rounded: rtn or gptq (default: gptq with --calibration, rtn
    /// without).
    #[arg(long = "quantize-method", value_enum, requires = "quantize")]
    quantize_method: Option<quantize::QuantizeMethod>,
    /// With --calibration: a linear whose int8 output is further than this relative RMS
    /// error from its fp32 output stays fp32.
    #[arg(long = "quantize-budget", requires = "quantize", default_value_t = quantize::DEFAULT_BUDGET)]
    quantize_budget: f64,
}

impl QuantizeArgs {
    fn options(&self, p: &PruneArgs) -> Option<quantize::QuantizeOptions> {
        Some(quantize::QuantizeOptions {
            scheme: self.quantize?,
            method: self.quantize_method,
            budget: self.quantize_budget,
            calibration: p.calibration.clone(),
            samples: p.calibration_samples,
            tokenizer: p.calibration_tokenizer.clone(),
        })
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PruneMethod {
    Obs,
    Magnitude,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProfileEmit {
    Profile,
    Exe,
}

impl PruneArgs {
    fn options(&self, quantize: Option<quantize::Quantize>) -> Option<prune::PruneOptions> {
        if self.speedup.is_none() && self.latency.is_none() {
            return None;
        }
        Some(prune::PruneOptions {
            speedup: self.speedup,
            latency_ms: self.latency,
            profile: self.profile.clone()?,
            calibration: self.calibration.clone(),
            samples: self.calibration_samples,
            method: match self.prune_method {
                PruneMethod::Obs => bertc_passes::prune::Method::Obs,
                PruneMethod::Magnitude => bertc_passes::prune::Method::Magnitude,
            },
            tokenizer: self.calibration_tokenizer.clone(),
            sequential: self.sequential,
            spdy_rounds: self.spdy_rounds,
            quantize: quantize.map(|q| q.name()),
        })
    }
}

/// bertc: an ahead-of-time compiler for BERT-family text encoders.
#[derive(Parser)]
#[command(name = "bertc", version, about, after_help = help::EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile a model to a native executable, library or object.
    #[command(after_help = help::compile_help())]
    Compile {
        /// An .onnx file or a Hugging Face folder.
        model: PathBuf,
        /// The output path (see the artifact names below).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// What to produce.
        #[arg(long, value_enum, default_value = "exe")]
        emit: compile::Emit,
        /// Target triple (default: this machine's).
        #[arg(long)]
        target: Option<String>,
        /// CPU model whose features the code may use.
        #[arg(long)]
        cpu: Option<String>,
        /// What the artifact outputs: last_hidden_state, pooler, mean, cls or logits.
        #[arg(long, default_value = "last_hidden_state")]
        output: OutputKind,
        /// Longest sequence the artifact accepts (default: the model's maximum).
        #[arg(long = "max-seq")]
        max_seq: Option<usize>,
        /// Prefix of the C symbols (default: the output file name).
        #[arg(long)]
        name: Option<String>,
        /// Link the executable statically: no shared C library needed where it runs (always
        /// so for other architectures than this machine's).
        #[arg(long = "static")]
        static_exe: bool,
        /// Print nothing on success.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        quant: QuantizeArgs,
        #[command(flatten)]
        prune: PruneArgs,
        /// Write an HTML report of what pruning (--speedup or --latency) and quantization
        /// with --calibration did.
        #[arg(long)]
        report: Option<PathBuf>,
        /// STS Benchmark file to score the dense and the pruned model on for the report.
        #[arg(long, requires = "report")]
        sts: Option<PathBuf>,
    },
    /// Measure this machine's latency profile for structured pruning.
    #[command(after_help = "\
Measures one encoder layer's attention block for every number of kept heads and its FFN block
for kept neurons in steps, with the generated kernels, at the given shape and threads; writes
the JSON profile that `bertc compile --speedup/--latency --profile` reads. The layer shape
comes from MODEL, or from --hidden/--heads/--intermediate.

Examples:
  bertc profile model.onnx --batch 1 --seq 128 --threads 2 -o model.profile.json
  bertc profile model.onnx --target aarch64-unknown-linux-gnu --emit exe -o profiler-arm
  ./profiler-arm board.profile.json      # on the board")]
    Profile {
        /// A model whose layer shape to measure (.onnx or Hugging Face folder).
        model: Option<PathBuf>,
        /// Where to write the profile (or the profiler, with --emit exe).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// Target triple (default: this machine's).
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        cpu: Option<String>,
        /// `profile` measures here; `exe` writes the profiler executable for the target.
        #[arg(long, value_enum, default_value = "profile")]
        emit: ProfileEmit,
        #[arg(long, default_value = "1")]
        batch: usize,
        #[arg(long, default_value = "128")]
        seq: usize,
        /// Worker threads (0: all cores).
        #[arg(long, default_value = "0")]
        threads: usize,
        /// FFN neurons between measured levels.
        #[arg(long = "ffn-step", default_value = "32")]
        ffn_step: usize,
        /// Timed runs per level (the median is kept).
        #[arg(long, default_value = "30")]
        runs: usize,
        #[arg(long)]
        hidden: Option<usize>,
        #[arg(long)]
        heads: Option<usize>,
        #[arg(long)]
        intermediate: Option<usize>,
        /// Encoder layers (copies of the block measured together; default: the model's, or 6).
        #[arg(long)]
        layers: Option<usize>,
        /// Measure the layers quantized (for `compile --speedup/--latency --quantize`).
        #[arg(long, value_enum)]
        quantize: Option<quantize::Quantize>,
    },
    /// Score a model or a compiled shared library on sentence similarity.
    #[command(after_help = "\
--sts prints the Spearman correlation (x100) of the cosine similarities of the mean-pooled
embeddings against the gold scores of an STS Benchmark file; --against prints how closely
the embeddings agree with another model's on the same sentences (mean and least cosine).

Examples:
  bertc eval model.onnx --sts sts-test.csv
  bertc compile model.onnx -o small --emit sharedlib --output mean
  bertc eval libsmall.so --tokenizer tokenizer.json --sts sts-test.csv --against model.onnx")]
    Eval {
        /// A model (.onnx or Hugging Face folder) or a shared library artifact (libNAME.so).
        model: PathBuf,
        /// Symbol prefix of a .so artifact (default: its file name without lib).
        #[arg(long)]
        name: Option<String>,
        /// The tokenizer.json (default: the one beside the model).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// An STS Benchmark file (tab-separated: ..., score, sentence 1, sentence 2).
        #[arg(long)]
        sts: Option<PathBuf>,
        /// Another model or artifact to compare embeddings with.
        #[arg(long)]
        against: Option<PathBuf>,
        /// Symbol prefix of the --against .so artifact.
        #[arg(long = "against-name")]
        against_name: Option<String>,
        /// Worker threads (0: all cores).
        #[arg(long, default_value = "0")]
        threads: i32,
    },
    /// Measure generated code: the GEMM kernel (--gemm) or whole inferences of a model.
    #[command(after_help = "\
Examples:
  bertc bench --gemm 128x768x768             # GFLOP/s of the GEMM kernel, one thread, vs the FMA peak
  bertc bench --gemm 128x384x1536 --quantize int8   # the int8 kernel (integer ops counted as flops)
  bertc bench model.onnx --batch 1 --seq 128 # compile to a shared library and time inferences
  bertc bench model.onnx --curve --runs 5    # tokens per second from 1 x 16 to 64 x 128
  bertc compile model.onnx -o model --emit sharedlib
  bertc bench libmodel.so --name model --batch 8 --seq 128 --ragged
  bertc bench libmodel.so --against model.onnx --threads 2   # two artifacts, interleaved")]
    Bench {
        /// A model (.onnx or Hugging Face folder) or a compiled shared library (.so).
        model: Option<PathBuf>,
        /// Time the GEMM kernel on an MxKxN problem instead of a model.
        #[arg(long)]
        gemm: Option<String>,
        /// Symbol prefix of a .so artifact.
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "1")]
        batch: usize,
        #[arg(long, default_value = "128")]
        seq: usize,
        /// Sequence i of the batch has (i+1)*seq/batch real tokens, the rest padding.
        #[arg(long)]
        ragged: bool,
        /// Time the throughput curve (batch 1 to 64 at seq 128, seq 16 to 512 at batch 1, a
        /// ragged batch of 64 against a dense one of as many tokens) instead of one shape.
        #[arg(long, conflicts_with_all = ["batch", "seq", "ragged", "gemm"])]
        curve: bool,
        /// Worker threads (0: all cores).
        #[arg(long, default_value = "0")]
        threads: i32,
        /// Timed runs (after 3 warm-up runs).
        #[arg(long, default_value = "30")]
        runs: usize,
        /// CPU model for the generated code (default: this machine's).
        #[arg(long)]
        cpu: Option<String>,
        /// Another model or .so artifact to time in the same run (e.g. dense against pruned).
        #[arg(long)]
        against: Option<PathBuf>,
        /// Symbol prefix of the --against .so artifact.
        #[arg(long = "against-name")]
        against_name: Option<String>,
        /// Quantize MODEL when compiling it here (not --against), or time the int8 GEMM
        /// kernel with --gemm.
        #[arg(long, value_enum)]
        quantize: Option<quantize::Quantize>,
    },
    /// Print a model's architecture, sizes, parameters and op counts.
    #[command(
        after_help = "MODEL is an .onnx file or a Hugging Face folder (config.json + safetensors).\n\nExample:\n  bertc inspect model.onnx"
    )]
    Inspect {
        /// An .onnx file or a Hugging Face folder.
        model: PathBuf,
    },
    /// Print the IR of a model, raised (default) or as imported (--raw).
    #[command(
        after_help = "Examples:\n  bertc ir model.onnx --raw | less\n  bertc ir model.onnx --output mean\n  bertc ir model.onnx --output mean --lowered --target aarch64-unknown-linux-gnu"
    )]
    Ir {
        /// An .onnx file or a Hugging Face folder.
        model: PathBuf,
        /// Print the IR as the importer built it, before canonicalisation and raising.
        #[arg(long)]
        raw: bool,
        /// Keep only this output (last_hidden_state, pooler, mean, cls, logits).
        #[arg(long)]
        output: Option<OutputKind>,
        /// Print what each pass did (to stderr).
        #[arg(long)]
        report: bool,
        /// Also run the fusion passes that `bertc compile` runs (with --output).
        #[arg(long, requires = "output")]
        optimize: bool,
        #[command(flatten)]
        quant: QuantizeArgs,
        /// Print the lowered program code generation builds instead (buffers, weights in their
        /// layouts, steps with the kernels chosen for the target; with --output, fused).
        #[arg(long, requires = "output", conflicts_with = "raw")]
        lowered: bool,
        /// With --lowered: the target triple (default: this machine's).
        #[arg(long, requires = "lowered")]
        target: Option<String>,
        /// With --lowered: the CPU whose kernels to choose.
        #[arg(long, requires = "lowered")]
        cpu: Option<String>,
        /// Prune as `bertc compile` does (--speedup or --latency with --profile).
        #[command(flatten)]
        prune: PruneArgs,
    },
    /// Run a model with the reference interpreter.
    #[command(after_help = "\
Input: one sequence per line of standard input, as space-separated token ids (or --text).
Output: one line per input line, the output values separated by spaces, row-major.

Examples:
  echo '2 73 1043 3' | bertc run model.onnx --output last_hidden_state
  bertc run model.onnx --mask mask.txt --type-ids types.txt < ids.txt
  bertc run ./my-model --text 'A sentence.' --text 'Another one.' --output mean")]
    Run {
        /// An .onnx file or a Hugging Face folder.
        model: PathBuf,
        /// What to print: last_hidden_state, pooler, mean, cls or logits.
        #[arg(long, default_value = "last_hidden_state")]
        output: OutputKind,
        /// Attention masks (0 or 1), one line per input line; default all ones.
        #[arg(long)]
        mask: Option<PathBuf>,
        /// Token type ids, one line per input line; default all zeros.
        #[arg(long = "type-ids")]
        type_ids: Option<PathBuf>,
        /// A text to tokenize with the model's tokenizer.json instead of reading ids (repeatable).
        #[arg(long)]
        text: Vec<String>,
        /// The tokenizer.json to use with --text (default: the one beside the model).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Interpret the graph after the fusion passes that `bertc compile` runs.
        #[arg(long)]
        optimize: bool,
        #[command(flatten)]
        quant: QuantizeArgs,
        /// Prune as `bertc compile` does (--speedup or --latency with --profile), then run.
        #[command(flatten)]
        prune: PruneArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads, canonicalises and raises a model.
pub fn load_raised(path: &Path) -> Result<(Graph, Vec<PassReport>), CliError> {
    let mut g = bertc_import::load_model(path)?;
    let reports = canonicalize(&mut g)?;
    Ok((g, reports))
}

fn dispatch(cmd: Cmd) -> Result<(), CliError> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let io_err = |source| CliError::Io {
        what: "stdout".into(),
        source,
    };
    match cmd {
        Cmd::Compile {
            model,
            out: path,
            emit,
            target,
            cpu,
            output,
            max_seq,
            name,
            static_exe,
            quiet,
            prune,
            quant,
            report,
            sts,
        } => {
            let popts = prune.options(quant.quantize);
            let quantize = quant.options(&prune);
            let calibrated = quantize.as_ref().is_some_and(|q| q.calibration.is_some());
            if report.is_some() && popts.is_none() && !calibrated {
                return Err(CliError::Input(
                    "--report describes pruning (--speedup or --latency) or quantization with --calibration: give one".into(),
                ));
            }
            let o = compile::Options {
                model,
                out: path,
                emit,
                target,
                cpu,
                output,
                max_seq,
                name,
                static_exe,
                quiet,
                prune: popts,
                quantize,
            };
            let outcome = compile::compile(&o)?;
            if let Some(r) = report {
                report::write(&r, &o, &outcome, sts.as_deref())?;
                if !o.quiet {
                    eprintln!("    Wrote {}", r.display());
                }
            }
        }
        Cmd::Profile {
            model,
            out: path,
            target,
            cpu,
            emit,
            batch,
            seq,
            threads,
            ffn_step,
            runs,
            hidden,
            heads,
            intermediate,
            layers,
            quantize,
        } => {
            let shape = match (&model, hidden, heads, intermediate) {
                (Some(m), None, None, None) => {
                    let mut s = profile::LayerShape::of_model(m)?;
                    if let Some(l) = layers {
                        s.layers = l;
                    }
                    s
                }
                (None, Some(h), Some(n), Some(i)) if n > 0 && h % n == 0 => profile::LayerShape {
                    layers: layers.unwrap_or(6),
                    hidden: h,
                    heads: n,
                    head_dim: h / n,
                    intermediate: i,
                    act: profile::default_act(),
                    eps: 1e-12,
                },
                _ => return Err(CliError::Input(
                    "give a MODEL, or all of --hidden, --heads (dividing it) and --intermediate"
                        .into(),
                )),
            };
            let t = match &target {
                Some(t) => bertc_targets::Target::with_cpu(t, cpu.as_deref()),
                None => bertc_targets::Target::with_cpu(
                    &bertc_targets::Target::host().triple,
                    cpu.as_deref(),
                ),
            }
            .map_err(|e| CliError::Input(e.to_string()))?;
            let p = profile::profile(&profile::ProfileOptions {
                shape,
                target: t,
                batch,
                seq,
                threads,
                ffn_step,
                runs,
                out: path.clone(),
                emit_exe: emit == ProfileEmit::Exe,
                quantize,
            })?;
            if let Some(p) = p {
                eprint!("{}", profile::summary(&p));
                eprintln!("    Wrote {}", path.display());
            }
        }
        Cmd::Eval {
            model,
            name,
            tokenizer,
            sts,
            against,
            against_name,
            threads,
        } => {
            if sts.is_none() && against.is_none() {
                return Err(CliError::Input(
                    "give --sts FILE and/or --against OTHER".into(),
                ));
            }
            let tok_path = tokenizer.unwrap_or_else(|| inputs::tokenizer_beside(&model));
            let tok = bertc_runtime::Tokenizer::from_file(&tok_path)?;
            let mut enc = eval::open_encoder(&model, name.as_deref(), threads)?;
            let pairs = match &sts {
                Some(f) => Some(eval::read_sts(f)?),
                None => None,
            };
            if let (Some(f), Some(pairs)) = (&sts, &pairs) {
                let (sp, pe) = eval::sts_score(&mut enc, &tok, pairs)?;
                writeln!(
                    out,
                    "{}: STS Spearman x100 {sp:.2}, Pearson x100 {pe:.2} ({} pairs of {})",
                    model.display(),
                    pairs.len(),
                    f.display()
                )
                .map_err(io_err)?;
            }
            if let Some(other) = &against {
                let mut enc2 = eval::open_encoder(other, against_name.as_deref(), threads)?;
                let texts: Vec<String> =
                    match &pairs {
                        Some(p) => p.iter().flat_map(|p| [p.a.clone(), p.b.clone()]).collect(),
                        None => return Err(CliError::Input(
                            "--against compares embeddings of the --sts sentences: give --sts FILE"
                                .into(),
                        )),
                    };
                let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
                let seqs = eval::tokenize_texts(&tok, &refs)?;
                let (mean, min) = eval::agreement(&mut enc, &mut enc2, &seqs)?;
                writeln!(
                    out,
                    "{} against {}: embedding cosine mean {mean:.5}, least {min:.5} ({} texts)",
                    model.display(),
                    other.display(),
                    seqs.len()
                )
                .map_err(io_err)?;
            }
        }
        Cmd::Bench {
            model,
            gemm,
            name,
            batch,
            seq,
            ragged,
            curve,
            threads,
            runs,
            cpu,
            against,
            against_name,
            quantize,
        } => {
            let runs = runs.max(1);
            let text = match (gemm, model) {
                (Some(g), None) => bench::gemm(&g, cpu.as_deref(), runs, quantize.is_some())?,
                (None, Some(model)) => {
                    if batch == 0 || seq == 0 {
                        return Err(CliError::Input(
                            "--batch and --seq must be at least 1".into(),
                        ));
                    }
                    bench::model(&bench::ModelBench {
                        model,
                        name,
                        against,
                        against_name,
                        batch,
                        seq,
                        ragged,
                        curve,
                        threads,
                        runs,
                        cpu,
                        quantize,
                    })?
                }
                _ => {
                    return Err(CliError::Input(
                        "give a MODEL or --gemm MxKxN (not both)".into(),
                    ))
                }
            };
            out.write_all(text.as_bytes()).map_err(io_err)?;
        }
        Cmd::Inspect { model } => {
            let text = inspect::inspect(&model)?;
            out.write_all(text.as_bytes()).map_err(io_err)?;
        }
        Cmd::Ir {
            model,
            raw,
            output,
            report,
            optimize,
            quant,
            lowered,
            target,
            cpu,
            prune,
        } => {
            let quantize = quant.options(&prune);
            if quantize.is_some() && output.is_none() {
                return Err(CliError::Input(
                    "--quantize works on the fused graph of one output: give --output".into(),
                ));
            }
            // the target first: a bad --target or --cpu fails before any work
            let target = if lowered {
                let triple = target.unwrap_or_else(|| bertc_targets::Target::host().triple);
                Some(
                    bertc_targets::Target::with_cpu(&triple, cpu.as_deref())
                        .map_err(|e| CliError::Input(e.to_string()))?,
                )
            } else {
                None
            };
            let popts = prune.options(quant.quantize);
            if raw && (popts.is_some() || quantize.is_some()) {
                return Err(CliError::Input(
                    "--raw shows the imported IR: it cannot be pruned".into(),
                ));
            }
            let g = if raw {
                bertc_import::load_model(&model)?
            } else {
                let (mut g, mut reports) = load_raised(&model)?;
                if let Some(p) = &popts {
                    reports.push(prune::prune(&mut g, &model, p, true)?.0);
                }
                if report {
                    for r in reports {
                        eprintln!("{r}");
                    }
                }
                if let Some(k) = output {
                    select_output(&mut g, k)?;
                }
                if optimize || lowered || quantize.is_some() {
                    for r in bertc_passes::optimize(&mut g)? {
                        if report {
                            eprintln!("{r}");
                        }
                    }
                }
                if let Some(q) = &quantize {
                    let (r, layers) = quantize::quantize_model(&mut g, &model, q, true)?;
                    if report {
                        eprintln!("{r}");
                        eprint!("{}", quantize::layer_lines(&layers));
                    }
                }
                g
            };
            let text = match &target {
                Some(t) => bertc_codegen::lowered_text(&g, t)
                    .map_err(|e| CliError::Input(format!("{}: {e}", model.display())))?,
                None => g.to_text(),
            };
            out.write_all(text.as_bytes()).map_err(io_err)?;
        }
        Cmd::Run {
            model,
            output,
            mask,
            type_ids,
            text,
            tokenizer,
            optimize,
            quant,
            prune,
        } => {
            let quantize = quant.options(&prune);
            let (mut g, _) = load_raised(&model)?;
            if let Some(p) = prune.options(quant.quantize) {
                prune::prune(&mut g, &model, &p, true)?;
            }
            select_output(&mut g, output)?;
            if optimize || quantize.is_some() {
                bertc_passes::optimize(&mut g)?;
            }
            if let Some(q) = &quantize {
                quantize::quantize_model(&mut g, &model, q, true)?;
            }
            let batch = if text.is_empty() {
                inputs::read_id_files(mask.as_deref(), type_ids.as_deref())?
            } else {
                let tok = tokenizer.unwrap_or_else(|| inputs::tokenizer_beside(&model));
                inputs::tokenize(&tok, &text)?
            };
            let limits = inputs::Limits::of(&g);
            for (i, seq) in batch.iter().enumerate() {
                limits.check(seq, i + 1)?;
                let values = run_one(&g, seq)?;
                let line: Vec<String> = values.iter().map(|v| format!("{v:e}")).collect();
                writeln!(out, "{}", line.join(" ")).map_err(io_err)?;
            }
        }
    }
    out.flush().map_err(io_err)
}

/// Runs one sequence (batch 1) and returns the flattened output.
fn run_one(g: &Graph, seq: &inputs::Sequence) -> Result<Vec<f32>, CliError> {
    let n = seq.ids.len();
    let mut feeds: Vec<(&str, Value)> =
        vec![("input_ids", Value::i64(vec![1, n], seq.ids.clone()))];
    if g.input_named("attention_mask").is_some() {
        feeds.push(("attention_mask", Value::i64(vec![1, n], seq.mask.clone())));
    }
    if g.input_named("token_type_ids").is_some() {
        feeds.push((
            "token_type_ids",
            Value::i64(vec![1, n], seq.type_ids.clone()),
        ));
    }
    let outs = interp::run(g, &feeds)?;
    let (_, v) = outs
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Input("the model has no output".into()))?;
    Ok(v.as_f32().map_err(CliError::Input)?.to_vec())
}

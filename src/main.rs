//! `bertc`, the driver: parses the command line, loads models through the importers, runs the
//! passes and the interpreter, and reports errors in one line with their context.

mod bench;
mod bench_text;
mod cli;
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

use clap::Parser;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use bertc_interp::{self as interp, Value};
use bertc_ir::Graph;
use bertc_passes::{canonicalize, PassReport};
use cli::{Cli, Cmd, ProfileEmit};

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
            caches,
            output,
            max_seq,
            name,
            tokenizer,
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
                caches,
                output,
                max_seq,
                name,
                tokenizer: match tokenizer {
                    Some(t) if t.as_os_str() == "none" => compile::TokenizerChoice::None,
                    Some(t) => compile::TokenizerChoice::File(t),
                    None => compile::TokenizerChoice::Beside,
                },
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
            caches,
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
            let t = bertc_targets::Target::select(target.as_deref(), cpu.as_deref(), caches)
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
            let tok = inputs::open_tokenizer(&tok_path)?;
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
            tokenize,
            texts,
            threads,
            runs,
            cpu,
            caches,
            against,
            against_name,
            quantize,
        } => {
            let cpu = compile::HostCpu { cpu, caches };
            let runs = runs.max(1);
            let text = match (gemm, model) {
                (None, Some(model)) if tokenize => {
                    bench_text::tokenize(&model, texts.as_deref(), runs)?
                }
                (Some(g), None) => bench::gemm(&g, &cpu, runs, quantize.is_some())?,
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
            caches,
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
                Some(
                    bertc_targets::Target::select(target.as_deref(), cpu.as_deref(), caches)
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
                    compile::select(&mut g, &model, Some(k))?;
                }
                if optimize || lowered || quantize.is_some() {
                    for r in bertc_passes::optimize(&mut g)? {
                        if report {
                            eprintln!("{r}");
                        }
                    }
                }
                if let Some(q) = &quantize {
                    let q = match &target {
                        Some(t) => q.clone().for_target(t),
                        None => q.clone(),
                    };
                    let (r, layers) = quantize::quantize_model(&mut g, &model, &q, true)?;
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
            quantize::refuse_quantized_file(
                &g,
                &model,
                prune.options(quant.quantize).is_some(),
                quantize.is_some(),
            )?;
            if let Some(p) = prune.options(quant.quantize) {
                prune::prune(&mut g, &model, &p, true)?;
            }
            compile::select(&mut g, &model, output)?;
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

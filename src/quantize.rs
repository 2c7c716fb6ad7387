//! `--quantize`: the schemes the driver offers, and their accuracy control on calibration
//! text (`--calibration`): each linear's error measured, GPTQ rounding (`--quantize-method`),
//! the linears over `--quantize-budget` kept in fp32; the per-linear decisions for the
//! compile line and the HTML report.

use std::path::{Path, PathBuf};

use bertc_ir::{qlinear_max_abits, Graph};
use bertc_passes::quantize_calib::{self, LinearStats};
use bertc_passes::{quantize_rows, ActBits, LinearChoice, PassReport, QuantizeInt8};

use crate::CliError;

/// The quantization schemes `--quantize` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Quantize {
    /// Linears on int8 weights (symmetric per output channel), activations quantized per
    /// token at run time (see `Activations`), the word embeddings in int8 rows.
    Int8,
}

/// How many bits int8 linears quantize their activations to (per token, at run time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Activations {
    /// 8 bits where the target multiplies bytes faster than 16-bit pairs (AVX-VNNI,
    /// AVX512-VNNI), measured on the calibration text (or the built-in one): smoothed where
    /// that measures better, widened where still over the budget; the widest the depth allows
    /// elsewhere (where 8 bits would be no faster).
    Auto,
    /// 8 bits for every linear.
    #[value(name = "8")]
    Eight,
    /// The widest each linear's depth allows: 16 bits up to k = 516, 14 at k = 1536.
    Wide,
}

/// Whether `target`'s int8 kernels multiply 8-bit activations faster than wider ones
/// (they read them in fours, `vpdpbusd`).
pub fn bytes_are_faster(target: &bertc_targets::Target) -> bool {
    bertc_codegen::Isa::for_target(target).int8_format() == bertc_codegen::QFormat::Quads
}

impl Quantize {
    /// The scheme's name on the command line and in latency profiles.
    pub fn name(self) -> &'static str {
        match self {
            Quantize::Int8 => "int8",
        }
    }
}

/// How int8 weights are rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum QuantizeMethod {
    /// Round to nearest.
    Rtn,
    /// GPTQ/OBQ: each column's rounding error corrected on the columns after it, with the
    /// Hessian of the layer's inputs on the calibration text.
    Gptq,
}

impl QuantizeMethod {
    pub fn name(self) -> &'static str {
        match self {
            QuantizeMethod::Rtn => "rtn",
            QuantizeMethod::Gptq => "gptq",
        }
    }
}

/// The default `--quantize-budget`: a linear whose int8 output is further than this from
/// its fp32 output (relative RMS on the calibration text) stays fp32.
pub const DEFAULT_BUDGET: f64 = 0.02;

/// Everything `--quantize` and its companions ask for.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub scheme: Quantize,
    /// `None`: GPTQ with calibration text, round to nearest without.
    pub method: Option<QuantizeMethod>,
    pub budget: f64,
    pub calibration: Option<PathBuf>,
    pub samples: usize,
    pub tokenizer: Option<PathBuf>,
    pub activations: Activations,
    /// Whether the target multiplies 8-bit activations faster (`bytes_are_faster`): what
    /// `Activations::Auto` follows.
    pub bytes_faster: bool,
    /// Without `calibration`: measure `auto`'s 8-bit linears on the first `BUILTIN_SAMPLES`
    /// texts of bertc's built-in set when the model has a tokenizer (smoothing and widening
    /// them as calibration does; round to nearest, which keeps the compile to seconds).
    pub builtin: bool,
}

/// Texts of the built-in calibration set that `--quantize int8` measures 8-bit linears on
/// when no `--calibration` is given.
pub const BUILTIN_SAMPLES: usize = 64;

impl QuantizeOptions {
    /// These options for `target` (what `Activations::Auto` decides by).
    pub fn for_target(mut self, target: &bertc_targets::Target) -> QuantizeOptions {
        self.bytes_faster = bytes_are_faster(target);
        self
    }

    /// Whether linears start from 8-bit activations (else the widest their depth allows).
    fn narrow(&self) -> bool {
        match self.activations {
            Activations::Auto => self.bytes_faster,
            Activations::Eight => true,
            Activations::Wide => false,
        }
    }

    /// Round to nearest, no calibration (what `bertc profile` and `bench` time), for `target`.
    pub fn plain(scheme: Quantize, target: &bertc_targets::Target) -> QuantizeOptions {
        QuantizeOptions {
            scheme,
            method: None,
            budget: DEFAULT_BUDGET,
            calibration: None,
            samples: 128,
            tokenizer: None,
            activations: Activations::Auto,
            bytes_faster: false,
            builtin: false,
        }
        .for_target(target)
    }

    /// The calibration texts to measure on, if any: `--calibration`'s (up to `samples`), or
    /// the built-in set's first `BUILTIN_SAMPLES` where `auto` gives 8-bit activations and
    /// the model has a tokenizer (`None` in the pair: the built-in set).
    fn calibration_texts(&self, model: &Path) -> Result<Option<(Option<&Path>, usize)>, CliError> {
        if let Some(c) = &self.calibration {
            return Ok(Some((Some(c.as_path()), self.samples)));
        }
        if !(self.builtin && self.activations == Activations::Auto && self.bytes_faster) {
            return Ok(None);
        }
        let tok = self
            .tokenizer
            .clone()
            .unwrap_or_else(|| crate::inputs::tokenizer_beside(model));
        Ok(crate::inputs::tokenizer_json(&tok)?.map(|_| (None, BUILTIN_SAMPLES.min(self.samples))))
    }

    /// The rounding used: as asked, else GPTQ when there is calibration text.
    pub fn method(&self) -> QuantizeMethod {
        self.method.unwrap_or(match self.calibration {
            Some(_) => QuantizeMethod::Gptq,
            None => QuantizeMethod::Rtn,
        })
    }

    /// The options' own errors, before any work.
    pub fn check(&self) -> Result<(), CliError> {
        if !(self.budget > 0.0 && self.budget.is_finite()) {
            return Err(CliError::Input(format!(
                "--quantize-budget {}: must be a positive relative error (e.g. 0.02)",
                self.budget
            )));
        }
        if self.method == Some(QuantizeMethod::Gptq) && self.calibration.is_none() {
            return Err(CliError::Input(
                "--quantize-method gptq needs --calibration FILE: text like the model's inputs, one text a line (or an STS Benchmark file)".into(),
            ));
        }
        if let Some(c) = &self.calibration {
            let texts = crate::prune::read_texts(c).map_err(|e| match e {
                CliError::Io { source, .. } => {
                    CliError::Input(format!("--calibration {}: {source}", c.display()))
                }
                other => other,
            })?;
            if texts.is_empty() {
                return Err(CliError::Input(format!(
                    "--calibration {}: no calibration text",
                    c.display()
                )));
            }
        }
        Ok(())
    }
}

/// What was decided for one linear.
#[derive(Clone, Debug)]
pub struct LayerReport {
    /// The weight constant's name.
    pub weight: String,
    pub n: usize,
    pub k: usize,
    /// Activation bits of the int8 linear.
    pub abits: u8,
    /// Whether its activations are smoothed (SmoothQuant's per-channel migration).
    pub smoothed: bool,
    /// Relative RMS error of the int8 output with round-to-nearest and (if run) GPTQ weights.
    pub rtn_error: f64,
    pub gptq_error: Option<f64>,
    /// "int8" or "fp32" (over the budget).
    pub precision: &'static str,
}

/// Quantizes a fused graph's linears (and word embeddings) as `o` asks: with calibration
/// text, each linear's error is measured, its weights rounded by the method, and those over
/// the budget stay fp32. Returns the pass report and, with calibration, one line per linear.
pub fn quantize_model(
    g: &mut Graph,
    model: &Path,
    o: &QuantizeOptions,
    quiet: bool,
) -> Result<(PassReport, Vec<LayerReport>), CliError> {
    o.check()?;
    let mut pass = QuantizeInt8::default();
    if o.narrow() {
        pass.abits = ActBits::Fixed(8);
    }
    let mut layers = Vec::new();
    let texts = o.calibration_texts(model)?;
    if texts.is_none() && o.narrow() && o.activations == Activations::Auto && !quiet {
        eprintln!("    Note: 8-bit activations, not measured (no tokenizer for bertc's calibration text; --calibration FILE measures, smooths and widens them)");
    }
    if let Some((cal, samples)) = texts {
        let seqs = crate::prune::calibration_seqs(g, model, cal, samples, o.tokenizer.as_deref())?;
        let stats = quantize_calib::calibrate(g, &seqs, 0.01, &mut |d, t| {
            if !quiet {
                crate::progress::bar("Calibrating", d, t)
            }
        })
        .map_err(|e| CliError::Input(format!("{}: {e}", model.display())))?;
        for (i, s) in stats.iter().enumerate() {
            let (report, choice) = decide(g, s, o);
            layers.push(report);
            pass.choices.insert(s.weight.clone(), choice);
            if !quiet {
                crate::progress::bar("Quantizing", i + 1, stats.len());
            }
        }
    }
    let report = bertc_passes::run_pass(&pass, g)?;
    Ok((report, layers))
}

/// One way of rounding a linear: its weights as they are, or smoothed (SmoothQuant: the
/// input's channel `j` times `smooth[j]` at run time, the weights' column `j` divided by it),
/// rounded to nearest and (with GPTQ) by GPTQ, and the sample as the quantizer will see it.
struct Rounding {
    smooth: Option<Vec<f32>>,
    w: Vec<f32>,
    sample: Vec<f32>,
    rtn: (Vec<i8>, Vec<f32>),
    gptq: Option<(Vec<i8>, Vec<f32>)>,
}

impl Rounding {
    fn new(s: &LinearStats, w: &[f32], smooth: Option<Vec<f32>>, gptq: bool) -> Rounding {
        let k = s.k;
        let (w, sample, h) = match &smooth {
            Some(m) => {
                let w: Vec<f32> = w.iter().enumerate().map(|(i, v)| v / m[i % k]).collect();
                let x = s.sample.iter().enumerate().map(|(i, v)| v * m[i % k]);
                // the smoothed inputs' Hessian: diag(m) H diag(m)
                let mut h = s.hessian.clone();
                for r in 0..k {
                    for c in 0..k {
                        h.set(r, c, h.at(r, c) * m[r] as f64 * m[c] as f64);
                    }
                }
                (w, x.collect(), std::borrow::Cow::Owned(h))
            }
            None => (
                w.to_vec(),
                s.sample.clone(),
                std::borrow::Cow::Borrowed(&s.hessian),
            ),
        };
        let rtn = quantize_rows(&w, s.n, k);
        let gptq = gptq.then(|| quantize_calib::gptq(&w, s.n, k, &h)).flatten();
        Rounding {
            smooth,
            w,
            sample,
            rtn,
            gptq,
        }
    }

    /// The errors of round to nearest and of GPTQ with activations of `bits` bits.
    fn errors(&self, s: &LinearStats, bits: u8) -> (f64, Option<f64>) {
        let e = |(q, sc): &(Vec<i8>, Vec<f32>)| {
            quantize_calib::layer_error(&self.w, q, sc, s.n, s.k, &self.sample, bits)
        };
        (e(&self.rtn), self.gptq.as_ref().map(e))
    }
}

/// SmoothQuant's multipliers (α = 1/2) for a linear's input: `m_j = sqrt(max_i |w_ij| /
/// rms(x_j))` with the channel's RMS from the calibration Hessian's diagonal, normalised to a
/// geometric mean of 1 (a zero channel or column keeps 1). Dividing by `m` moves an outlier
/// channel's range from the activations, which share one scale a token, into the weights'
/// column, which the per-channel weight scales absorb.
fn smoothing(s: &LinearStats, w: &[f32]) -> Vec<f32> {
    let k = s.k;
    let mut m: Vec<f64> = (0..k)
        .map(|j| {
            let wmax = (0..s.n).fold(0f64, |a, i| a.max(w[i * k + j].abs() as f64));
            let xrms = s.hessian.at(j, j).max(0.0).sqrt();
            if wmax > 0.0 && xrms > 0.0 {
                (wmax / xrms).sqrt()
            } else {
                1.0
            }
        })
        .collect();
    let mean_log = m.iter().map(|v| v.ln()).sum::<f64>() / k.max(1) as f64;
    for v in &mut m {
        *v /= mean_log.exp();
    }
    m.into_iter().map(|v| v as f32).collect()
}

/// One linear's rounding and precision: its activations at 8 bits if the options start
/// there, smoothed where that measures better, widened
/// (under `Activations::Auto`) when still over it; the weights GPTQ's where they measure
/// better; fp32 when even that is over the budget.
fn decide(g: &Graph, s: &LinearStats, o: &QuantizeOptions) -> (LayerReport, LinearChoice) {
    let w = quantize_calib::weights(g, s);
    let wide = qlinear_max_abits(s.k);
    let mut abits = if o.narrow() { 8.min(wide) } else { wide };
    let gptq = o.method() == QuantizeMethod::Gptq;
    let best = |(r, g): (f64, Option<f64>)| g.map_or(r, |g| g.min(r));
    // the roundings do not depend on the activation bits: each is made once, measured at
    // whichever bits are tried
    let plain = Rounding::new(s, &w, None, gptq);
    let mut errors = plain.errors(s, abits);
    let mut smoothed = None;
    if abits < wide {
        // 8-bit activations lose most to outlier channels: smoothed where that measures better
        let sm = Rounding::new(s, &w, Some(smoothing(s, &w)), gptq);
        let e = sm.errors(s, abits);
        if best(e) < best(errors) {
            (smoothed, errors) = (Some(sm), e);
        }
    }
    if best(errors) > o.budget && o.activations == Activations::Auto && abits < wide {
        abits = wide;
        smoothed = None;
        errors = plain.errors(s, abits);
    }
    let r = smoothed.unwrap_or(plain);
    let (rtn_error, gptq_error) = errors;
    // GPTQ's weights where they measure better on the sample
    let smoothed = r.smooth.is_some();
    let (q, scales, error) = match (r.gptq, gptq_error) {
        (Some((q, sc)), Some(e)) if e <= rtn_error => (q, sc, e),
        _ => (r.rtn.0, r.rtn.1, rtn_error),
    };
    let over = error > o.budget;
    (
        LayerReport {
            weight: s.weight.clone(),
            n: s.n,
            k: s.k,
            abits,
            smoothed,
            rtn_error,
            gptq_error,
            precision: if over { "fp32" } else { "int8" },
        },
        if over {
            LinearChoice::Fp32
        } else {
            LinearChoice::Int8 {
                q,
                scales,
                abits,
                smooth: r.smooth,
            }
        },
    )
}

/// `quantize_model` without calibration (round to nearest everywhere), for `target`.
pub fn quantize_graph(
    g: &mut Graph,
    q: Quantize,
    target: &bertc_targets::Target,
) -> Result<PassReport, CliError> {
    Ok(quantize_model(g, Path::new(""), &QuantizeOptions::plain(q, target), true)?.0)
}

/// The per-linear lines for the compile output.
pub fn layer_lines(layers: &[LayerReport]) -> String {
    let mut s = String::new();
    for l in layers {
        let gptq = l
            .gptq_error
            .map_or(String::new(), |e| format!(", gptq {:.2}%", 100.0 * e));
        let smoothed = if l.smoothed { ", smoothed" } else { "" };
        s += &format!(
            "      {:<28} {:>5} x {:<5} {} (activations {} bits{smoothed}): error rtn {:.2}%{gptq}\n",
            l.weight,
            l.n,
            l.k,
            l.precision,
            l.abits,
            100.0 * l.rtn_error
        );
    }
    s
}

/// Pruning (`prune`) and `--quantize` (`quantize`) work on float models: a file quantized
/// already (its linears read `dynamic_quantize`, or it has `qdq` points) is refused with the first such node.
pub fn refuse_quantized_file(
    g: &Graph,
    model: &Path,
    prune: bool,
    quantize: bool,
) -> Result<(), CliError> {
    let what = match (prune, quantize) {
        (true, _) => "--speedup/--latency",
        (false, true) => "--quantize",
        (false, false) => return Ok(()),
    };
    match g
        .node_ids()
        .into_iter()
        .find(|&n| {
            matches!(g.op(n), bertc_ir::Op::DynamicQuantize { .. } | bertc_ir::Op::Qdq(_))
                || matches!(g.op(n), bertc_ir::Op::Attention { quant, .. } if !quant.is_none())
        })
    {
        Some(n) => Err(CliError::Input(format!(
            "{}: {what}: the file is quantized already (node '{}'); prune or quantize the float model",
            model.display(),
            g.node(n).name
        ))),
        None => Ok(()),
    }
}

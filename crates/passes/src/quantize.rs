//! `quantize-int8`: every linear with constant f32 weights (plain or fused, after `optimize`)
//! becomes a `qlinear`: weights symmetric int8 per output channel, rounded to nearest
//! (`scale = max|w_row| / 127`, `wq = round_ne(w / scale)` in [-127, 127]), activations
//! quantized per row at run time to `abits` bits (see `Op::QLinear`), the bias, activation and
//! residual add kept in the epilogue. Embeddings, LayerNorm, GELU outside a linear and
//! attention stay f32.

use std::collections::HashMap;

use bertc_ir::{qlinear_max_abits, DType, Graph, Op, Tensor};

use crate::{Pass, PassError};

/// Round-to-nearest int8 quantization of the linears (see the module documentation).
pub struct QuantizeInt8 {
    /// Bits of the run-time activation integers.
    pub abits: ActBits,
    /// Also store the word embedding table in int8 with one scale per row
    /// (`dequantize_rows`), a quarter of its f32 size.
    pub embeddings: bool,
    /// What calibration decided for a linear, by the name of its weight constant (the
    /// others: round to nearest).
    pub choices: HashMap<String, LinearChoice>,
}

/// A calibrated decision for one linear.
#[derive(Clone, Debug)]
pub enum LinearChoice {
    /// Stays an f32 linear (its int8 error was over the budget).
    Fp32,
    /// These int8 weights and per-row scales (GPTQ's), activations of `abits` bits; with
    /// `smooth`, the activations are multiplied by it per channel before quantization (the
    /// weights are then those of `w / smooth`).
    Int8 {
        q: Vec<i8>,
        scales: Vec<f32>,
        abits: u8,
        smooth: Option<Vec<f32>>,
    },
}

/// How many bits a linear's activations are quantized to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActBits {
    /// The same for every linear (2 to 16; at most `qlinear_max_abits(k)`, fewer where the
    /// depth needs it).
    Fixed(u8),
    /// For each linear the most its depth allows (`qlinear_max_abits(k)`: 16 bits up to
    /// k = 516, 14 at k = 1536): the kernels that multiply 16-bit pairs (`vpmaddwd` on AVX2,
    /// the portable ones) run them at the speed of 8-bit ones.
    Widest,
}

impl Default for QuantizeInt8 {
    fn default() -> Self {
        QuantizeInt8 {
            abits: ActBits::Widest,
            embeddings: true,
            choices: HashMap::new(),
        }
    }
}

/// Int8 weights `[n, k]` and their per-row scales, by round to nearest.
pub fn quantize_rows(w: &[f32], n: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    let qmax = 127.0f32;
    let mut q = vec![0i8; n * k];
    let mut scales = vec![0f32; n];
    for j in 0..n {
        let row = &w[j * k..(j + 1) * k];
        let amax = row.iter().fold(0f32, |m, &v| m.max(v.abs()));
        let s = if amax > 0.0 { amax / qmax } else { 1.0 };
        scales[j] = s;
        for (o, &v) in q[j * k..(j + 1) * k].iter_mut().zip(row) {
            *o = (v / s).round_ties_even().clamp(-qmax, qmax) as i8;
        }
    }
    (q, scales)
}

/// Replaces each embedding's f32 word table by `dequantize_rows` of int8 rows (round to
/// nearest, one scale per row); returns the tables' names and shapes.
fn quantize_embeddings(g: &mut Graph) -> Result<Vec<(String, usize, usize)>, bertc_ir::IrError> {
    let mut done = Vec::new();
    for n in g.canonical_order() {
        let Op::Embedding { types, .. } = g.op(n).clone() else {
            continue;
        };
        let mut ops = g.operands(n);
        let first = 1 + usize::from(types == bertc_ir::TokenTypes::Input);
        let word = ops[first];
        let Some(t) = g
            .const_value(word)
            .filter(|t| t.dtype == DType::F32 && t.shape.len() == 2)
        else {
            continue;
        };
        if g.use_count(word) != 1 {
            continue;
        }
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let (q, scales) = quantize_rows(&t.to_f32_vec(), rows, cols);
        let name = g.node(word).name.clone();
        let bytes: Vec<u8> = q.iter().map(|&v| v as u8).collect();
        let qt = Tensor::new(DType::I8, vec![rows, cols], bytes.into()).expect("int8 rows");
        let qn = g.add_const(&format!("{name}.q"), qt);
        let sn = g.add_const(
            &format!("{name}.scale"),
            Tensor::from_f32(vec![rows], &scales),
        );
        ops[first] = g.add(
            Op::DequantizeRows,
            &[qn, sn],
            &format!("{name}.dequantized"),
        )?;
        let op = g.op(n).clone();
        g.rewrite(n, op, &ops)?;
        done.push((name, rows, cols));
    }
    Ok(done)
}

impl Pass for QuantizeInt8 {
    fn name(&self) -> &'static str {
        "quantize-int8"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let ir = |source| PassError::Ir {
            pass: "quantize-int8",
            source,
        };
        let mut count = 0;
        let mut kept = 0;
        let mut smoothed = 0;
        let mut bits = std::collections::BTreeSet::new();
        for n in g.canonical_order() {
            let (act, residual) = match g.op(n) {
                Op::Linear => (None, false),
                Op::FusedLinear { act, residual } => (*act, *residual),
                _ => continue,
            };
            let ops = g.operands(n);
            let Some(w) = g.const_value(ops[1]).filter(|t| t.dtype == DType::F32) else {
                continue;
            };
            let (rows, k) = (w.shape[0], w.shape[1]);
            let bias = match ops.get(2) {
                Some(&b) => match g.const_value(b) {
                    Some(t) => t.to_f32_vec(),
                    None => continue,
                },
                None => vec![0.0; rows],
            };
            let name = g.node(ops[1]).name.clone();
            let default_bits = match self.abits {
                ActBits::Fixed(b) => b.min(qlinear_max_abits(k)),
                ActBits::Widest => qlinear_max_abits(k),
            };
            let (q, scales, abits, smooth) = match self.choices.get(&name) {
                Some(LinearChoice::Fp32) => {
                    kept += 1;
                    continue;
                }
                Some(LinearChoice::Int8 {
                    q,
                    scales,
                    abits,
                    smooth,
                }) => (q.clone(), scales.clone(), *abits, smooth.clone()),
                None => {
                    let (q, s) = quantize_rows(&w.to_f32_vec(), rows, k);
                    (q, s, default_bits, None)
                }
            };
            let bytes: Vec<u8> = q.iter().map(|&v| v as u8).collect();
            let qt =
                Tensor::new(DType::I8, vec![rows, k], bytes.into()).expect("rows x k int8 values");
            let wq = g.add_const(&format!("{name}.q"), qt);
            let sc = g.add_const(
                &format!("{name}.scale"),
                Tensor::from_f32(vec![rows], &scales),
            );
            let b = match ops.get(2) {
                Some(&b) => b,
                None => g.add_const(&format!("{name}.bias"), Tensor::from_f32(vec![rows], &bias)),
            };
            let mut operands = vec![ops[0], wq, sc, b];
            if residual {
                operands.push(ops[3]);
            }
            if let Some(m) = &smooth {
                smoothed += 1;
                let mc = g.add_const(&format!("{name}.smooth"), Tensor::from_f32(vec![k], m));
                operands.push(mc);
            }
            let op = Op::QLinear {
                act,
                residual,
                abits,
                smooth: smooth.is_some(),
            };
            g.rewrite(n, op, &operands).map_err(ir)?;
            count += 1;
            bits.insert(abits);
        }
        let tables = if self.embeddings {
            quantize_embeddings(g).map_err(ir)?
        } else {
            vec![]
        };
        let bits: Vec<String> = bits.iter().map(|b| b.to_string()).collect();
        let mut report = format!(
            "{count} linears on int8 weights (per channel), activations {} bits per row",
            if bits.is_empty() {
                "-".to_string()
            } else {
                bits.join("/")
            }
        );
        if smoothed > 0 {
            report += &format!("; {smoothed} with smoothed activations");
        }
        if kept > 0 {
            report += &format!("; {kept} kept in fp32");
        }
        for (name, rows, cols) in tables {
            report += &format!("; word embeddings '{name}' ({rows} x {cols}) int8 per row");
        }
        Ok(report)
    }
}

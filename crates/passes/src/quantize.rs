//! `quantize-int8`: every linear with constant f32 weights (plain or fused, after `optimize`)
//! becomes a `qlinear`: weights symmetric int8 per output channel, rounded to nearest
//! (`scale = max|w_row| / 127`, `wq = round_ne(w / scale)` in [-127, 127]), activations
//! quantized per row at run time to `abits` bits (see `Op::QLinear`), the bias, activation and
//! residual add kept in the epilogue. Embeddings, LayerNorm, GELU outside a linear and
//! attention stay f32.

use bertc_ir::{DType, Graph, Op, Tensor};

use crate::{Pass, PassError};

/// Round-to-nearest int8 quantization of the linears (see the module documentation).
pub struct QuantizeInt8 {
    /// Bits of the run-time activation integers (2 to 8).
    pub abits: u8,
}

impl Default for QuantizeInt8 {
    /// 8-bit activations: every kernel sums their products with the int8 weights exactly
    /// (AVX2 through 16-bit pairs, `vpmaddwd`, never the saturating `vpmaddubsw`).
    fn default() -> Self {
        QuantizeInt8 { abits: 8 }
    }
}

/// Int8 weights `[n, k]` and their per-row scales, by round to nearest.
pub fn quantize_rows(w: &[f32], n: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; n * k];
    let mut scales = vec![0f32; n];
    for j in 0..n {
        let row = &w[j * k..(j + 1) * k];
        let amax = row.iter().fold(0f32, |m, &v| m.max(v.abs()));
        let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
        scales[j] = s;
        for (o, &v) in q[j * k..(j + 1) * k].iter_mut().zip(row) {
            *o = (v / s).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
    }
    (q, scales)
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
            let (q, scales) = quantize_rows(&w.to_f32_vec(), rows, k);
            let name = g.node(ops[1]).name.clone();
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
            let op = Op::QLinear {
                act,
                residual,
                abits: self.abits,
            };
            g.rewrite(n, op, &operands).map_err(ir)?;
            count += 1;
        }
        Ok(format!(
            "{count} linears on int8 weights (per channel), activations {} bits per row",
            self.abits
        ))
    }
}

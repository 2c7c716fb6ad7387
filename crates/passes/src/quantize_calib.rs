//! Accuracy control for int8 quantization, on calibration text: the inputs of every linear
//! the `quantize-int8` pass would quantize (a held-out sample of rows, and the Hessian
//! `H = 2/N Σ x xᵀ` over the other real tokens), GPTQ/OBQ rounding of the weights with that
//! Hessian, and each linear's error: the relative RMS difference of its quantized output
//! (weights and run-time activation quantization, as the kernels compute it) from the fp32
//! output on the held-out rows. The driver keeps the linears whose error is over a budget in fp32 and hands the
//! rest, with their weights, to `QuantizeInt8::choices`.

use bertc_interp::{const_values, eval_nodes_with, quantize_row};
use bertc_ir::{DType, Graph, NodeId, Op};
use rayon::prelude::*;

use crate::obs::{spd_inverse, Hessian, Mat};
use crate::prune::calibrate::{make_batches, rows_of};
use crate::prune::PruneError;
use crate::quantize::quantize_rows;

/// Rows of each linear's input kept to measure its error.
const SAMPLE_ROWS: usize = 256;

/// What calibration saw of one linear.
pub struct LinearStats {
    /// The linear (`linear` or `fused_linear`) and the name of its weight constant.
    pub node: NodeId,
    pub weight: String,
    pub n: usize,
    pub k: usize,
    /// `2/N Σ x xᵀ` of its input rows (damped), the held-out sample left out.
    pub hessian: Mat,
    /// The first `SAMPLE_ROWS` input rows (`rows x k`), held out to measure the error.
    pub sample: Vec<f32>,
}

/// The linears on constant f32 weights, in order.
fn linears(g: &Graph) -> Vec<NodeId> {
    g.canonical_order()
        .into_iter()
        .filter(|&n| matches!(g.op(n), Op::Linear | Op::FusedLinear { .. }))
        .filter(|&n| {
            g.operand(n, 1)
                .and_then(|w| g.const_value(w))
                .is_some_and(|t| t.dtype == DType::F32 && t.shape.len() == 2)
        })
        .collect()
}

/// Runs `g` (fused, fp32) on `seqs` in the interpreter and gathers each linear's statistics.
pub fn calibrate(
    g: &Graph,
    seqs: &[Vec<i64>],
    damp: f64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<LinearStats>, PruneError> {
    let lin = linears(g);
    let inputs: Vec<NodeId> = lin
        .iter()
        .map(|&n| g.operand(n, 0).expect("a linear has an input"))
        .collect();
    let mut hess: Vec<Hessian> = lin
        .iter()
        .map(|&n| Hessian::new(weight_of(g, n).1))
        .collect();
    let mut samples: Vec<Vec<f32>> = vec![Vec::new(); lin.len()];
    let batches = make_batches(g, seqs)?;
    let consts = const_values(g);
    let mut done = 0;
    for batch in &batches {
        let vals = eval_nodes_with(g, &inputs, batch.feeds.clone(), &batch.bind, &consts)
            .map_err(|e| PruneError::Calibration(e.to_string()))?;
        let real = batch.real();
        for (i, v) in vals.iter().enumerate() {
            // the first rows are held out for the error, the rest make the Hessian
            let x = rows_of(v, &real)?;
            let k = hess[i].dim.max(1);
            let room = (SAMPLE_ROWS.saturating_sub(samples[i].len() / k) * k).min(x.len());
            samples[i].extend_from_slice(&x[..room]);
            hess[i].add(&x[room..]);
        }
        done += batch.bind.batch;
        progress(done, seqs.len());
    }
    Ok(lin
        .iter()
        .zip(hess.iter_mut())
        .zip(samples)
        .map(|((&n, h), sample)| {
            let (nn, k) = weight_of(g, n);
            LinearStats {
                node: n,
                weight: g.node(g.operand(n, 1).expect("weights")).name.clone(),
                n: nn,
                k,
                hessian: h.finish(damp),
                sample,
            }
        })
        .collect())
}

/// `(n, k)` of a linear's weights.
fn weight_of(g: &Graph, n: NodeId) -> (usize, usize) {
    let t = g
        .operand(n, 1)
        .and_then(|w| g.const_value(w))
        .expect("a linear on constant weights");
    (t.shape[0], t.shape[1])
}

/// The f32 weights `[n, k]` of a calibrated linear.
pub fn weights(g: &Graph, s: &LinearStats) -> Vec<f32> {
    g.operand(s.node, 1)
        .and_then(|w| g.const_value(w))
        .expect("a linear on constant weights")
        .to_f32_vec()
}

/// GPTQ (OBQ's column order, one pass): each row's scale as round to nearest sets it
/// (`max|w| / 127`), then columns quantized left to right, the rounding error of column `i`
/// spread over the columns after it through the upper Cholesky factor `U` of `H⁻¹`
/// (`w[j] -= (w[i] - q[i]) / U[i][i] · U[i][j]`), rows in parallel. `None` if `H` is not
/// positive definite.
pub fn gptq(w: &[f32], n: usize, k: usize, h: &Mat) -> Option<(Vec<i8>, Vec<f32>)> {
    let (_, scales) = quantize_rows(w, n, k);
    let hinv = spd_inverse(h)?;
    let u = upper_cholesky(&hinv)?;
    let mut q = vec![0i8; n * k];
    q.par_chunks_mut(k).enumerate().for_each(|(r, qr)| {
        let s = scales[r] as f64;
        let mut row: Vec<f64> = w[r * k..(r + 1) * k].iter().map(|&v| v as f64).collect();
        for i in 0..k {
            let qi = (row[i] / s).round_ties_even().clamp(-127.0, 127.0);
            qr[i] = qi as i8;
            let e = (row[i] - qi * s) / u.at(i, i);
            let ui = &u.data[i * k..(i + 1) * k];
            for j in i + 1..k {
                row[j] -= e * ui[j];
            }
        }
    });
    Some((q, scales))
}

/// `U` upper triangular with `Uᵀ U = a` (`a` symmetric positive definite), or `None`.
fn upper_cholesky(a: &Mat) -> Option<Mat> {
    let n = a.rows;
    let mut u = Mat::zeros(n, n);
    for i in 0..n {
        for j in i..n {
            let s = a.at(i, j) - (0..i).map(|p| u.at(p, i) * u.at(p, j)).sum::<f64>();
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                u.set(i, i, s.sqrt());
            } else {
                u.set(i, j, s / u.at(i, i));
            }
        }
    }
    Some(u)
}

/// The relative RMS error of the int8 linear (`wq`, `scales`; activations quantized per row
/// to `abits` bits) against the fp32 one (`w`) on `sample`, biases left out:
/// `‖y_q - y‖ / ‖y‖`.
pub fn layer_error(
    w: &[f32],
    wq: &[i8],
    scales: &[f32],
    n: usize,
    k: usize,
    sample: &[f32],
    abits: u8,
) -> f64 {
    let (num, den) = sample
        .par_chunks(k.max(1))
        .map(|x| {
            let mut xq = vec![0i32; k];
            let s = quantize_row(x, abits, &mut xq) as f64;
            let (mut num, mut den) = (0f64, 0f64);
            for j in 0..n {
                let wr = &w[j * k..(j + 1) * k];
                let qr = &wq[j * k..(j + 1) * k];
                let y: f64 = x.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum();
                let acc: i64 = xq.iter().zip(qr).map(|(&a, &b)| a as i64 * b as i64).sum();
                let yq = acc as f64 * s * scales[j] as f64;
                num += (yq - y).powi(2);
                den += y * y;
            }
            (num, den)
        })
        .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    if den > 0.0 {
        (num / den).sqrt()
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPTQ never does worse than round to nearest on the error it minimises,
    /// `tr(ΔW H ΔWᵀ)`, here with correlated inputs where it does much better.
    #[test]
    fn gptq_beats_round_to_nearest_on_correlated_inputs() {
        let (n, k) = (8, 24);
        let mut s = 99u64;
        let mut rnd = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((s >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        let w: Vec<f32> = (0..n * k).map(|_| rnd() as f32).collect();
        let mut h = Hessian::new(k);
        for _ in 0..400 {
            let base = rnd();
            let x: Vec<f32> = (0..k).map(|_| (base + 0.1 * rnd()) as f32).collect();
            h.add(&x);
        }
        let h = h.finish(0.01);
        let cost = |q: &[i8], sc: &[f32]| -> f64 {
            (0..n)
                .map(|r| {
                    let d: Vec<f64> = (0..k)
                        .map(|i| q[r * k + i] as f64 * sc[r] as f64 - w[r * k + i] as f64)
                        .collect();
                    (0..k)
                        .map(|i| (0..k).map(|j| d[i] * h.at(i, j) * d[j]).sum::<f64>())
                        .sum::<f64>()
                })
                .sum()
        };
        let (rq, rs) = quantize_rows(&w, n, k);
        let (gq, gs) = gptq(&w, n, k, &h).unwrap();
        assert_eq!(rs, gs);
        let (rtn, opt) = (cost(&rq, &rs), cost(&gq, &gs));
        assert!(opt < 0.7 * rtn, "gptq {opt} vs rtn {rtn}");
    }

    #[test]
    fn upper_cholesky_factors() {
        let a = Mat {
            rows: 3,
            cols: 3,
            data: vec![4.0, 2.0, 0.4, 2.0, 5.0, 1.0, 0.4, 1.0, 3.0],
        };
        let u = upper_cholesky(&a).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|p| u.at(p, i) * u.at(p, j)).sum();
                assert!((v - a.at(i, j)).abs() < 1e-12);
            }
        }
    }
}

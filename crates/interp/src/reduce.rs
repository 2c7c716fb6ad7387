//! Reductions and normalisations: cumulative sums, softmax, reduce mean/sum/max, LayerNorm (ONNX and encoder forms), the poolings, L2 normalisation. The ONNX-level ops sum in f64; the encoder's (LayerNorm, poolings, `l2_normalize`) in the kernels' order (`bertc_numerics`).

use bertc_ir::{Op, PoolMode, QuantPart, ReduceKind};

use crate::shape::transpose;
use crate::value::*;

/// Executes one of this family's ops.
pub(crate) fn eval(op: &Op, v: &[&Value]) -> R<Value> {
    let x0 = || first(v);
    Ok(match op {
        Op::CumSum {
            axis,
            exclusive,
            reverse,
        } => {
            let x = v[0];
            let ax = norm_axis(*axis, x.shape.len())?;
            let d = x.shape[ax];
            let inner: usize = x.shape[ax + 1..].iter().product();
            let outer: usize = x.shape[..ax].iter().product();
            let mut out = x.clone();
            macro_rules! scan {
                ($src:expr, $dst:expr, $zero:expr) => {
                    for o in 0..outer {
                        for i in 0..inner {
                            let mut acc = $zero;
                            for t in 0..d {
                                let tt = if *reverse { d - 1 - t } else { t };
                                let at = (o * d + tt) * inner + i;
                                let val = $src[at];
                                if *exclusive {
                                    $dst[at] = acc;
                                    acc += val;
                                } else {
                                    acc += val;
                                    $dst[at] = acc;
                                }
                            }
                        }
                    }
                };
            }
            match (&x.data, &mut out.data) {
                (Data::F(s), Data::F(dst)) => scan!(s, dst, 0f32),
                (Data::I(s), Data::I(dst)) => scan!(s, dst, 0i64),
                _ => return Err("cumsum of bools".into()),
            }
            out
        }
        Op::Softmax { axis } => {
            let x = x0()?;
            let ax = norm_axis(*axis, x.shape.len())?;
            let last = x.shape.len() - 1;
            let mut perm: Vec<usize> = (0..x.shape.len()).collect();
            perm.swap(ax, last);
            let t = transpose(x, &perm)?;
            let mut data = t.as_f32()?.to_vec();
            softmax_rows(&mut data, t.shape[last].max(1));
            transpose(&Value::f32(t.shape.clone(), data), &perm)?
        }
        Op::Reduce {
            kind,
            axes,
            keepdims,
        } => {
            let x = x0()?;
            let r = x.shape.len();
            let ax: Vec<usize> = if axes.is_empty() {
                (0..r).collect()
            } else {
                axes.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?
            };
            let kept: Vec<usize> = (0..r).filter(|i| !ax.contains(i)).collect();
            let mut perm = kept.clone();
            perm.extend(ax.iter().copied());
            let t = transpose(x, &perm)?;
            let inner: usize = ax.iter().map(|&i| x.shape[i]).product();
            let shape: Vec<usize> = (0..r)
                .filter_map(|i| {
                    if ax.contains(&i) {
                        keepdims.then_some(1)
                    } else {
                        Some(x.shape[i])
                    }
                })
                .collect();
            if let Data::I(xv) = &t.data {
                // integer sums and maxima in i64 (the dtype's width applies when stored)
                let res: Vec<i64> = xv
                    .chunks(inner.max(1))
                    .map(|c| match kind {
                        ReduceKind::Sum => Ok(c.iter().fold(0i64, |a, &v| a.wrapping_add(v))),
                        ReduceKind::Max => Ok(c.iter().copied().max().unwrap_or(i64::MIN)),
                        ReduceKind::Mean => Err("the mean of an integer tensor".to_string()),
                    })
                    .collect::<R<_>>()?;
                return Ok(Value::of(x.dtype, shape, Data::I(res)));
            }
            let xv = t.as_f32()?;
            let res: Vec<f32> = xv
                .chunks(inner.max(1))
                .map(|c| match kind {
                    ReduceKind::Sum => c.iter().map(|&v| v as f64).sum::<f64>() as f32,
                    ReduceKind::Mean => {
                        (c.iter().map(|&v| v as f64).sum::<f64>() / inner as f64) as f32
                    }
                    ReduceKind::Max => c.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                })
                .collect();
            Value::f32(shape, res)
        }
        Op::LayerNormalization { axis, epsilon } => {
            let x = v[0];
            let ax = norm_axis(*axis, x.shape.len())?;
            let h: usize = x.shape[ax..].iter().product();
            let gamma = expand(v[1], &x.shape[ax..])?;
            let beta = match v.get(2) {
                Some(b) => Some(expand(b, &x.shape[ax..])?),
                None => None,
            };
            let beta_v = match &beta {
                Some(b) => Some(b.as_f32()?),
                None => None,
            };
            Value::f32(
                x.shape.clone(),
                layer_norm_rows(x.as_f32()?, h.max(1), gamma.as_f32()?, beta_v, *epsilon),
            )
        }
        Op::LayerNorm { eps } => {
            // the encoder's LayerNorm, as the kernels compute it
            let (x, gamma, beta) = (v[0], v[1].as_f32()?, v[2].as_f32()?);
            let h = *x.shape.last().unwrap_or(&1);
            let mut out = vec![0f32; x.numel()];
            for (row, o) in x.as_f32()?.chunks(h.max(1)).zip(out.chunks_mut(h.max(1))) {
                bertc_numerics::layer_norm_row(row, gamma, beta, *eps, o);
            }
            Value::f32(x.shape.clone(), out)
        }
        Op::MeanPool => {
            // the real rows summed in order, times 1 / their count (as the kernel)
            let (x, m) = (v[0], v[1].as_i64()?);
            let (b, s, h) = (x.shape[0], x.shape[1], x.shape[2]);
            let xv = x.as_f32()?;
            let mut out = vec![0f32; b * h];
            for bi in 0..b {
                let real: Vec<usize> = (0..s).filter(|&t| m[bi * s + t] != 0).collect();
                let o = &mut out[bi * h..(bi + 1) * h];
                sum_rows(o, real.iter().map(|&t| &xv[(bi * s + t) * h..][..h]));
                scale(o, 1.0 / (real.len() as f32).max(1.0));
            }
            Value::f32(vec![b, h], out)
        }
        Op::MaxPool => {
            let (x, m) = (v[0], v[1].as_i64()?);
            let (b, s, h) = (x.shape[0], x.shape[1], x.shape[2]);
            let xv = x.as_f32()?;
            // as sentence-transformers: masked rows count as -1e9
            let mut out = vec![f32::NEG_INFINITY; b * h];
            for bi in 0..b {
                for t in 0..s {
                    let row = &xv[(bi * s + t) * h..(bi * s + t + 1) * h];
                    for (o, &y) in out[bi * h..(bi + 1) * h].iter_mut().zip(row) {
                        *o = o.max(if m[bi * s + t] != 0 { y } else { -1e9 });
                    }
                }
            }
            Value::f32(vec![b, h], out)
        }
        Op::Pool { mode } => {
            let (x, m) = (v[0], v[1].as_i64()?);
            let (b, s, h) = (x.shape[0], x.shape[1], x.shape[2]);
            let xv = x.as_f32()?;
            let row = |bi: usize, t: usize| &xv[(bi * s + t) * h..(bi * s + t + 1) * h];
            let mut out = vec![0f32; b * h];
            for bi in 0..b {
                let real: Vec<usize> = (0..s).filter(|&t| m[bi * s + t] != 0).collect();
                let o = &mut out[bi * h..(bi + 1) * h];
                match mode {
                    PoolMode::LastToken => {
                        if let Some(&t) = real.last() {
                            o.copy_from_slice(row(bi, t));
                        }
                    }
                    PoolMode::MeanSqrtLen => {
                        // as sentence-transformers, in the kernel's order
                        sum_rows(o, real.iter().map(|&t| row(bi, t)));
                        scale(o, 1.0 / (real.len() as f32).max(1.0).sqrt());
                    }
                    PoolMode::WeightedMean => {
                        // weights: the position plus one
                        let mut total = 0f32;
                        for &t in &real {
                            let w = (t + 1) as f32;
                            total += w;
                            for (a, &y) in o.iter_mut().zip(row(bi, t)) {
                                *a = y.mul_add(w, *a);
                            }
                        }
                        scale(o, 1.0 / total.max(1e-9));
                    }
                }
            }
            Value::f32(vec![b, h], out)
        }
        Op::DynamicQuantize { part } => {
            let x = v[0];
            let xv = x.as_f32()?;
            let k = *x.shape.last().unwrap_or(&1);
            let rows = xv.len() / k.max(1);
            let real: Vec<bool> = match v.get(1) {
                Some(m) => m.as_i64()?.iter().map(|&t| t != 0).collect(),
                None => vec![true; rows],
            };
            // one sequence: all its rows (`[batch, seq, k]`) or its one row (`[batch, k]`)
            let per_seq = if x.shape.len() == 3 { x.shape[1] } else { 1 };
            let mut out = Vec::with_capacity(xv.len());
            for (s, r) in xv
                .chunks((per_seq * k).max(1))
                .zip(real.chunks(per_seq.max(1)))
            {
                let (scale, centered) = dynamic_quantize(s, k, r);
                match part {
                    QuantPart::Centered => out.extend(centered),
                    QuantPart::Scale => out.push(scale),
                }
            }
            let shape = match part {
                QuantPart::Centered => x.shape.clone(),
                QuantPart::Scale => {
                    let mut s = vec![1; x.shape.len()];
                    s[0] = x.shape[0];
                    s
                }
            };
            Value::f32(shape, out)
        }
        Op::L2Normalize => {
            let x = v[0];
            let h = *x.shape.last().unwrap_or(&1);
            let mut out = x.as_f32()?.to_vec();
            for row in out.chunks_mut(h.max(1)) {
                let norm = bertc_numerics::sum(row.iter().map(|&y| y * y)).sqrt();
                scale(row, 1.0 / norm.max(1e-12));
            }
            Value::f32(x.shape.clone(), out)
        }
        _ => return Err(format!("{} is not a reduce op", op.mnemonic())),
    })
}

/// `o = Σ rows`, in order, from zeros.
fn sum_rows<'a>(o: &mut [f32], rows: impl Iterator<Item = &'a [f32]>) {
    o.iter_mut().for_each(|a| *a = 0.0);
    for r in rows {
        for (a, &y) in o.iter_mut().zip(r) {
            *a += y;
        }
    }
}

fn scale(o: &mut [f32], f: f32) {
    o.iter_mut().for_each(|a| *a *= f);
}

pub(crate) fn softmax_rows(v: &mut [f32], len: usize) {
    for row in v.chunks_mut(len) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f64;
        for x in row.iter_mut() {
            *x = (*x - max).exp();
            sum += *x as f64;
        }
        for x in row.iter_mut() {
            *x = (*x as f64 / sum) as f32;
        }
    }
}

pub(crate) fn layer_norm_rows(
    x: &[f32],
    h: usize,
    gamma: &[f32],
    beta: Option<&[f32]>,
    eps: f32,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(h) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / h as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (i, &v) in row.iter().enumerate() {
            let y = ((v as f64 - mean) * inv) as f32 * gamma[i % gamma.len()]
                + beta.map_or(0.0, |b| b[i % b.len()]);
            out.push(y);
        }
    }
    out
}

/// `dynamic_quantize` (see `Op::DynamicQuantize`) of one sequence's rows of `k` floats, the
/// maxima over the rows marked `real`: the f32 operations of ONNX's `DynamicQuantizeLinear` as
/// the importer composes it (`max` then `min`, not `clamp`: a NaN becomes 0 there, as here).
/// `(scale, centered)`.
#[allow(clippy::manual_clamp)]
fn dynamic_quantize(x: &[f32], k: usize, real: &[bool]) -> (f32, Vec<f32>) {
    let (mut hi, mut neg) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for (row, _) in x.chunks(k.max(1)).zip(real).filter(|(_, &r)| r) {
        for &y in row {
            hi = hi.max(y);
            neg = neg.max(-y);
        }
    }
    let hi = hi.max(0.0);
    let lo = (-neg).min(0.0);
    let s = if hi == lo { 1.0 } else { (hi - lo) / 255.0 };
    let zp = (-(lo / s)).max(0.0).min(255.0).round_ties_even();
    let centered = x
        .iter()
        .map(|&y| bertc_numerics::centered(y, s, zp, 0.0, 255.0))
        .collect();
    (s, centered)
}

//! Matrix products: `matmul`, `gemm`, and the encoder's `linear`, `fused_linear` and `qlinear` (as the GEMM tiles compute them, AVX2-dispatched).

use bertc_ir::Op;

use crate::encoder::gelu;
use crate::shape::transpose;
use crate::value::*;

/// Executes one of this family's ops.
pub(crate) fn eval(op: &Op, v: &[&Value]) -> R<Value> {
    Ok(match op {
        Op::MatMul => matmul(v[0], v[1])?,
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let a = if *trans_a {
                transpose(v[0], &[1, 0])?
            } else {
                v[0].clone()
            };
            let b = if *trans_b {
                transpose(v[1], &[1, 0])?
            } else {
                v[1].clone()
            };
            let mut y = matmul(&a, &b)?;
            let shape = y.shape.clone();
            if let Data::F(yv) = &mut y.data {
                for e in yv.iter_mut() {
                    *e *= alpha;
                }
                if let Some(c) = v.get(2) {
                    let c = expand(c, &shape)?;
                    for (e, cv) in yv.iter_mut().zip(c.as_f32()?) {
                        *e += beta * cv;
                    }
                }
            }
            y
        }
        Op::Linear => {
            let (x, w) = (v[0], v[1]);
            let (n, k) = (w.shape[0], w.shape[1]);
            let rows = x.numel() / k.max(1);
            let bias = match v.get(2) {
                Some(b) => Some(b.as_f32()?),
                None => None,
            };
            let mut shape = x.shape.clone();
            if let Some(l) = shape.last_mut() {
                *l = n;
            }
            Value::f32(
                shape,
                linear_rows(x.as_f32()?, w.as_f32()?, bias, rows, k, n),
            )
        }
        Op::FusedLinear { act, .. } => {
            let mut y = eval(&Op::Linear, &v[..3])?;
            epilogue(&mut y, *act, v.get(3).copied())?;
            y
        }
        Op::DequantizeRows => {
            let (q, s) = (v[0].as_i64()?, v[1].as_f32()?);
            let cols = v[0].shape.get(1).copied().unwrap_or(0);
            let out = q
                .iter()
                .enumerate()
                .map(|(i, &x)| x as f32 * s[i / cols.max(1)])
                .collect();
            Value::f32(v[0].shape.clone(), out)
        }
        Op::QLinear {
            act,
            abits,
            residual,
            smooth,
        } => {
            let (x, w) = (v[0], v[1]);
            let (n, k) = (w.shape[0], w.shape[1]);
            let rows = x.numel() / k.max(1);
            let wq: Vec<i32> = w.as_i64()?.iter().map(|&q| q as i32).collect();
            let mut shape = x.shape.clone();
            if let Some(l) = shape.last_mut() {
                *l = n;
            }
            // smoothing: each row times the channel multipliers, in f32, before quantization
            let smoothed: Option<Vec<f32>> = match smooth {
                true => {
                    let m = v[4 + *residual as usize].as_f32()?;
                    let xs = x.as_f32()?;
                    Some((0..xs.len()).map(|i| xs[i] * m[i % k.max(1)]).collect())
                }
                false => None,
            };
            let out = qlinear_rows(
                smoothed.as_deref().map_or_else(|| x.as_f32(), Ok)?,
                &wq,
                v[2].as_f32()?,
                v[3].as_f32()?,
                rows,
                k,
                *abits,
            );
            let mut y = Value::f32(shape, out);
            epilogue(&mut y, *act, residual.then(|| v[4]))?;
            y
        }
        _ => return Err(format!("{} is not a linalg op", op.mnemonic())),
    })
}

/// `a[.., m, k] @ b[.., k, n]` with broadcasting over the leading dimensions.
pub(crate) fn matmul(a: &Value, b: &Value) -> R<Value> {
    let (ra, rb) = (a.shape.len(), b.shape.len());
    if ra < 2 || rb < 2 {
        return Err("matmul needs operands of rank >= 2".into());
    }
    let (m, k) = (a.shape[ra - 2], a.shape[ra - 1]);
    let (k2, n) = (b.shape[rb - 2], b.shape[rb - 1]);
    if k != k2 {
        return Err(format!(
            "matmul inner dimensions differ: {:?} and {:?}",
            a.shape, b.shape
        ));
    }
    let lead = bcast_shape(&a.shape[..ra - 2], &b.shape[..rb - 2])?;
    let ia = bcast_indices(&lead, &a.shape[..ra - 2]);
    let ib = bcast_indices(&lead, &b.shape[..rb - 2]);
    let mut shape = lead.clone();
    shape.push(m);
    shape.push(n);
    if let (Data::I(av), Data::I(bv)) = (&a.data, &b.data) {
        // integer products summed exactly (MatMulInteger), wrapping like the dtype's adds
        let mut out = vec![0i64; ia.len() * m * n];
        for (bi, (&pa, &pb)) in ia.iter().zip(ib.iter()).enumerate() {
            for i in 0..m {
                for p in 0..k {
                    let x = av[pa * m * k + i * k + p];
                    let brow = &bv[pb * k * n + p * n..pb * k * n + (p + 1) * n];
                    let orow = &mut out[(bi * m + i) * n..(bi * m + i + 1) * n];
                    for (o, &y) in orow.iter_mut().zip(brow) {
                        *o = o.wrapping_add(x.wrapping_mul(y));
                    }
                }
            }
        }
        return Ok(Value::of(a.dtype, shape, Data::I(out)));
    }
    let (av, bv) = (a.as_f32()?, b.as_f32()?);
    let mut out = vec![0f32; ia.len() * m * n];
    for (bi, (&pa, &pb)) in ia.iter().zip(ib.iter()).enumerate() {
        let am = &av[pa * m * k..(pa + 1) * m * k];
        let bm = &bv[pb * k * n..(pb + 1) * k * n];
        let om = &mut out[bi * m * n..(bi + 1) * m * n];
        gemm_acc(am, bm, om, m, k, n);
    }
    Ok(Value::f32(shape, out))
}

/// `c[m,n] += a[m,k] @ b[k,n]`, row-major, f32 accumulation.
pub(crate) fn gemm_acc(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    for i in 0..m {
        let crow = &mut c[i * n..(i + 1) * n];
        for p in 0..k {
            let av = a[i * k + p];
            let brow = &b[p * n..(p + 1) * n];
            for (cv, bv) in crow.iter_mut().zip(brow) {
                *cv += av * bv;
            }
        }
    }
}

/// `x[rows, k] @ w[n, k]ᵀ + bias` as the GEMM tiles compute it (`bertc_numerics::dot`): each
/// output one fused multiply-add chain over k, from its bias. The weights are transposed once
/// (columns padded to 16) so that a tile of 4 rows by 16 columns vectorises across the
/// columns; row blocks on all cores.
pub(crate) fn linear_rows(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = vec![0f32; rows * n];
    if n == 0 || rows == 0 {
        return out;
    }
    let n16 = n.div_ceil(LIN_C) * LIN_C;
    let mut wt = vec![0f32; k * n16];
    for (j, wr) in w.chunks(k.max(1)).enumerate().take(n) {
        for (p, &v) in wr.iter().enumerate() {
            wt[p * n16 + j] = v;
        }
    }
    let mut b16 = vec![0f32; n16];
    if let Some(b) = bias {
        b16[..n].copy_from_slice(&b[..n]);
    }
    out.par_chunks_mut(LIN_R * n)
        .enumerate()
        .for_each(|(blk, ob)| linear_block(x, &wt, &b16, k, n, blk * LIN_R, ob));
    out
}

pub(crate) const LIN_R: usize = 4;
const LIN_C: usize = 16;

crate::avx2_dispatch!(fn linear_block(
    x: &[f32],
    wt: &[f32],
    bias: &[f32],
    k: usize,
    n: usize,
    r0: usize,
    ob: &mut [f32],
) = linear_block_impl);

/// Rows `r0..` of the linear into `ob` (at most `LIN_R` rows), from the transposed weights
/// `wt[k, n16]` and the padded biases.
#[inline(always)]
pub(crate) fn linear_block_impl(
    x: &[f32],
    wt: &[f32],
    bias: &[f32],
    k: usize,
    n: usize,
    r0: usize,
    ob: &mut [f32],
) {
    const R: usize = LIN_R;
    const C: usize = LIN_C;
    let n16 = bias.len();
    let nr = ob.len() / n;
    let xs: [&[f32]; R] = std::array::from_fn(|a| {
        let r = r0 + a.min(nr - 1);
        &x[r * k..(r + 1) * k]
    });
    for j0 in (0..n).step_by(C) {
        let nc = (n - j0).min(C);
        let b: &[f32; C] = bias[j0..j0 + C].try_into().expect("16 biases");
        let mut acc = [*b; R];
        for p in 0..k {
            let wr: &[f32; C] = wt[p * n16 + j0..p * n16 + j0 + C]
                .try_into()
                .expect("16 weights");
            for a in 0..R {
                let xv = xs[a][p];
                for c in 0..C {
                    acc[a][c] = xv.mul_add(wr[c], acc[a][c]);
                }
            }
        }
        for a in 0..nr {
            ob[a * n + j0..a * n + j0 + nc].copy_from_slice(&acc[a][..nc]);
        }
    }
}

/// A fused linear's epilogue on its result: the activation, then the residual added.
fn epilogue(y: &mut Value, act: Option<bertc_ir::FusedAct>, residual: Option<&Value>) -> R<()> {
    if let Data::F(yv) = &mut y.data {
        for e in yv.iter_mut() {
            *e = match act {
                None => *e,
                Some(bertc_ir::FusedAct::Gelu(a)) => gelu(*e, a),
                Some(bertc_ir::FusedAct::Tanh) => bertc_numerics::tanh(*e),
                Some(bertc_ir::FusedAct::Relu) => e.max(0.0),
            };
        }
        if let Some(r) = residual {
            for (e, rv) in yv.iter_mut().zip(r.as_f32()?) {
                *e += rv;
            }
        }
    }
    Ok(())
}

/// Quantizes one row to `abits`-bit integers as `Op::QLinear` defines it: the integers and
/// the row's scale (`max|x| / q`; 0 for a row of zeros, whose integers are all 0).
pub fn quantize_row(x: &[f32], abits: u8, out: &mut [i32]) -> f32 {
    let q = ((1i32 << (abits - 1)) - 1) as f32;
    // a NaN anywhere makes the maximum NaN (as the kernels' vector maximum does)
    let amax = x.iter().fold(0f32, |m, &v| {
        if m.is_nan() || v.is_nan() {
            f32::NAN
        } else {
            m.max(v.abs())
        }
    });
    if amax.is_nan() || amax == 0.0 || !amax.is_finite() {
        out.iter_mut().for_each(|o| *o = 0);
        return 0.0;
    }
    let inv = q / amax;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v * inv).round_ties_even().clamp(-q, q) as i32;
    }
    amax / q
}

/// `rows` rows of `x[rows, k]` through int8 weights `wq[n, k]` with per-channel `scales` and
/// `bias`: each row quantized (`quantize_row`), products summed exactly in i32, then
/// `acc · (s · scale) + bias` in f32, with one rounding for the multiply-add (a fused
/// multiply-add, as every kernel does it).
pub(crate) fn qlinear_rows(
    x: &[f32],
    wq: &[i32],
    scales: &[f32],
    bias: &[f32],
    rows: usize,
    k: usize,
    abits: u8,
) -> Vec<f32> {
    let n = scales.len();
    let mut out = vec![0f32; rows * n];
    let mut xq = vec![0i32; k];
    for r in 0..rows {
        let s = quantize_row(&x[r * k..(r + 1) * k], abits, &mut xq);
        for j in 0..n {
            let acc: i32 = xq
                .iter()
                .zip(&wq[j * k..(j + 1) * k])
                .map(|(a, b)| a * b)
                .sum();
            out[r * n + j] = (acc as f32).mul_add(s * scales[j], bias[j]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row's integers: ±max maps to ±q, halves round to even, nothing leaves [-q, q], and a
    /// row of zeros is all zeros with scale 0.
    #[test]
    fn rows_quantize_to_the_definition() {
        let mut q = [0i32; 5];
        let s = quantize_row(&[1.0, -2.0, 0.5, 2.0, 1.0 / 63.0], 7, &mut q);
        assert_eq!(q, [32, -63, 16, 63, 0]); // 31.5 -> 32, 15.75 -> 16, 0.5 -> 0 (ties to even)
        assert_eq!(s, 2.0 / 63.0);
        let s = quantize_row(&[-3.0, 3.0, 1.5], 8, &mut q[..3]);
        assert_eq!(&q[..3], &[-127, 127, 64]); // 63.5 -> 64
        assert_eq!(s, 3.0 / 127.0);
        assert_eq!(quantize_row(&[0.0; 4], 7, &mut q[..4]), 0.0);
        assert_eq!(&q[..4], &[0, 0, 0, 0]);
    }

    /// The int8 linear against the same definition computed independently (i64 sums, f64
    /// rescaling), at the extremes: weights of ±127, rows whose integers are ±q, long k.
    #[test]
    fn qlinear_matches_an_independent_reference() {
        let (rows, k, n) = (3, 1536, 5);
        let mut s = 12345u32;
        let mut rnd = || {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let mut x: Vec<f32> = (0..rows * k).map(|_| rnd() * 4.0).collect();
        x[..k]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = if i % 2 == 0 { 2.5 } else { -2.5 });
        let mut w: Vec<i32> = (0..n * k).map(|_| (rnd() * 254.0) as i32).collect();
        w[..k].iter_mut().for_each(|v| *v = 127);
        w[k..2 * k].iter_mut().for_each(|v| *v = -127);
        let scales: Vec<f32> = (0..n).map(|j| 0.01 * (j + 1) as f32).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 - 2.0).collect();
        for abits in [7u8, 8] {
            let got = qlinear_rows(&x, &w, &scales, &bias, rows, k, abits);
            let q = ((1i64 << (abits - 1)) - 1) as f64;
            for r in 0..rows {
                let row = &x[r * k..(r + 1) * k];
                let amax = row.iter().fold(0f32, |m, &v| m.max(v.abs()));
                let inv = q as f32 / amax;
                let xq: Vec<i64> = row
                    .iter()
                    .map(|&v| ((v * inv).round_ties_even() as f64).clamp(-q, q) as i64)
                    .collect();
                assert!(xq.iter().all(|&v| v.abs() <= q as i64));
                let sx = (amax / q as f32) as f64;
                for j in 0..n {
                    let acc: i64 = xq
                        .iter()
                        .zip(&w[j * k..(j + 1) * k])
                        .map(|(a, &b)| a * b as i64)
                        .sum();
                    let want = acc as f64 * sx * scales[j] as f64 + bias[j] as f64;
                    let e = (got[r * n + j] as f64 - want).abs();
                    assert!(
                        e <= 1e-5 * want.abs().max(1.0),
                        "abits {abits} row {r} col {j}: {} vs {want}",
                        got[r * n + j]
                    );
                }
            }
        }
    }
}

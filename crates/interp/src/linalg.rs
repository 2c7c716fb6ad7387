//! Matrix products: `matmul`, `gemm`, and the encoder's `linear` and `fused_linear` (blocked, AVX2-dispatched reference numerics).

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
            if let Data::F(yv) = &mut y.data {
                for e in yv.iter_mut() {
                    *e = match act {
                        None => *e,
                        Some(bertc_ir::FusedAct::Gelu(a)) => gelu(*e, *a),
                        Some(bertc_ir::FusedAct::Tanh) => e.tanh(),
                        Some(bertc_ir::FusedAct::Relu) => e.max(0.0),
                    };
                }
                if let Some(r) = v.get(3) {
                    for (e, rv) in yv.iter_mut().zip(r.as_f32()?) {
                        *e += rv;
                    }
                }
            }
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
    let (av, bv) = (a.as_f32()?, b.as_f32()?);
    let mut out = vec![0f32; ia.len() * m * n];
    for (bi, (&pa, &pb)) in ia.iter().zip(ib.iter()).enumerate() {
        let am = &av[pa * m * k..(pa + 1) * m * k];
        let bm = &bv[pb * k * n..(pb + 1) * k * n];
        let om = &mut out[bi * m * n..(bi + 1) * m * n];
        gemm_acc(am, bm, om, m, k, n);
    }
    let mut shape = lead;
    shape.push(m);
    shape.push(n);
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

/// `x[rows, k] @ w[n, k]ᵀ + bias`: tiles of 4 rows by 4 weight rows with 8 lanes of partial
/// sums each (so that the compiler vectorises the dot products), row blocks on all cores.
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
    if k == 0 {
        for row in out.chunks_mut(n.max(1)) {
            for (j, o) in row.iter_mut().enumerate() {
                *o = bias.map_or(0.0, |b| b[j]);
            }
        }
        return out;
    }
    out.par_chunks_mut(LIN_R * n.max(1))
        .enumerate()
        .for_each(|(blk, ob)| linear_block(x, w, bias, rows, k, n, blk * LIN_R, ob));
    out
}

pub(crate) const LIN_R: usize = 4;

crate::avx2_dispatch!(fn linear_block(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    k: usize,
    n: usize,
    r0: usize,
    ob: &mut [f32],
) = linear_block_impl);

/// Rows `r0..r0+4` of the linear into `ob`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_block_impl(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    k: usize,
    n: usize,
    r0: usize,
    ob: &mut [f32],
) {
    const R: usize = LIN_R;
    const C: usize = 4;
    const L: usize = 8;
    let kl = k / L * L;
    let nr = (rows - r0).min(R);
    let xs: [&[f32]; R] = std::array::from_fn(|a| {
        let r = r0 + a.min(nr - 1);
        &x[r * k..(r + 1) * k]
    });
    for j0 in (0..n).step_by(C) {
        let nc = (n - j0).min(C);
        let ws: [&[f32]; C] = std::array::from_fn(|b| {
            let j = j0 + b.min(nc - 1);
            &w[j * k..(j + 1) * k]
        });
        let mut acc = [[[0f32; L]; C]; R];
        for p in (0..kl).step_by(L) {
            for a in 0..R {
                let xa = &xs[a][p..p + L];
                for b in 0..C {
                    let wb = &ws[b][p..p + L];
                    for l in 0..L {
                        acc[a][b][l] += xa[l] * wb[l];
                    }
                }
            }
        }
        for a in 0..nr {
            for b in 0..nc {
                let mut s: f32 = acc[a][b].iter().sum();
                for p in kl..k {
                    s += xs[a][p] * ws[b][p];
                }
                ob[a * n + j0 + b] = s + bias.map_or(0.0, |bv| bv[j0 + b]);
            }
        }
    }
}

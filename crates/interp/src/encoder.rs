//! Encoder-level ops: the embedding (word, token type and position rows), GELU, attention over the mask (and its fused q/k/v form).

use bertc_ir::{AttnQuant, GeluApprox, Op, Positions, Qdq, TokenTypes};

use crate::value::*;

/// Executes one of this family's ops.
pub(crate) fn eval(op: &Op, v: &[&Value]) -> R<Value> {
    let x0 = || first(v);
    Ok(match op {
        Op::Embedding {
            positions,
            types,
            sum_qdq,
        } => embedding(*positions, *types, *sum_qdq, v)?,
        Op::Gelu { approx } => {
            let x = x0()?;
            Value::f32(
                x.shape.clone(),
                x.as_f32()?.iter().map(|&a| gelu(a, *approx)).collect(),
            )
        }
        Op::Attention {
            heads,
            scale,
            quant,
        } => attention(*heads, *scale, quant, v)?,
        Op::QkvAttention { heads, scale, qk } => {
            let x = v[0];
            let (b, s, w) = (x.shape[0], x.shape[1], x.shape[2]);
            let xv = x.as_f32()?;
            let cols = |lo: usize, hi: usize| {
                let data: Vec<f32> = xv.chunks(w).flat_map(|r| r[lo..hi].to_vec()).collect();
                Value::f32(vec![b, s, hi - lo], data)
            };
            let (q, k, vv) = (cols(0, *qk), cols(*qk, 2 * qk), cols(2 * qk, w));
            let mut ops = vec![&q, &k, &vv];
            ops.extend(v.get(1).copied());
            attention(*heads, *scale, &AttnQuant::default(), &ops)?
        }
        _ => return Err(format!("{} is not a encoder op", op.mnemonic())),
    })
}

/// GELU as the kernels compute it (`bertc_numerics`).
pub(crate) fn gelu(x: f32, approx: GeluApprox) -> f32 {
    match approx {
        GeluApprox::Erf => bertc_numerics::gelu_erf(x),
        GeluApprox::Tanh => bertc_numerics::gelu_tanh(x),
    }
}

/// A static quantization point as a function (`bertc_numerics::qdq`).
pub(crate) fn qdq(q: Qdq) -> impl Fn(f32) -> f32 {
    let (lo, hi) = q.range().unwrap_or((f32::MIN, f32::MAX));
    let zero = q.zero as f32;
    move |x| bertc_numerics::qdq(x, q.scale, zero, lo, hi)
}

pub(crate) fn embedding(
    op_pos: Positions,
    types: TokenTypes,
    sum_qdq: Option<Qdq>,
    v: &[&Value],
) -> R<Value> {
    let ids = v[0];
    let (b, s) = (ids.shape[0], ids.shape[1]);
    let idv = ids.as_i64()?;
    let ti = (types == TokenTypes::Input) as usize;
    let word = v[1 + ti];
    let pos = v[2 + ti];
    let typ = v.get(3 + ti);
    let h = word.shape[1];
    let row = |t: &Value, i: i64, what: &str| -> R<usize> {
        let rows = t.shape[0];
        if i < 0 || i as usize >= rows {
            return Err(format!(
                "{what} {i} out of range (the table has {rows} rows)"
            ));
        }
        Ok(i as usize)
    };
    let (wv, pv) = (word.as_f32()?, pos.as_f32()?);
    let mut out = vec![0f32; b * s * h];
    for bi in 0..b {
        let mut count = 0i64;
        for t in 0..s {
            let id = idv[bi * s + t];
            let w = row(word, id, "token id")?;
            let p = match op_pos {
                Positions::Arange { offset } => offset + t as i64,
                Positions::PaddingAware { pad } => {
                    if id != pad {
                        count += 1;
                        pad + count
                    } else {
                        pad
                    }
                }
            };
            let p = row(pos, p, "position")?;
            let o = &mut out[(bi * s + t) * h..(bi * s + t + 1) * h];
            o.copy_from_slice(&wv[w * h..(w + 1) * h]);
            if let Some(tt) = typ {
                let tid = if ti == 1 {
                    v[1].as_i64()?[bi * s + t]
                } else {
                    0
                };
                let r = row(tt, tid, "token type id")?;
                let tv = tt.as_f32()?;
                for (x, y) in o.iter_mut().zip(&tv[r * h..(r + 1) * h]) {
                    *x += y;
                }
                if let Some(q) = sum_qdq {
                    o.iter_mut().for_each(|x| *x = qdq(q)(*x));
                }
            }
            for (x, y) in o.iter_mut().zip(&pv[p * h..(p + 1) * h]) {
                *x += y;
            }
        }
    }
    Ok(Value::f32(vec![b, s, h], out))
}

/// Multi-head attention as the kernels compute it, over each sequence's real tokens only (the
/// keys with mask 1, in order; padding-free execution never sees the others): per query and
/// head, the scores `x_j = dot(q, k_j) · scale` (`bertc_numerics::dot` from `+0.0`), their
/// maximum `m`, `p_j = exp(x_j - m)`, `l = Σ p_j` (`bertc_numerics::sum`), the output
/// `dot` of the `p_j` with the value rows, times `1 / l`. (A sequence longer than the GEMM
/// attention's key block runs its online softmax in blocks, whose rescaling rounds otherwise.)
/// With quantization points (`AttnQuant`): `x_j = qdq_masked(qdq_scaled(qdq_scores(dot) ·
/// scale))`, and `p_j = qdq_probs(exp(x_j - m) / l)` before the `dot`s, without `1 / l` after.
pub(crate) fn attention(heads: usize, scale: f32, quant: &AttnQuant, v: &[&Value]) -> R<Value> {
    crate::avx2_dispatch!(fn run(a: &AttnIn, out: &mut [f32]) = attention_impl);
    let (q, k, vv) = (v[0], v[1], v[2]);
    let (b, s, w) = (q.shape[0], q.shape[1], q.shape[2]);
    let wv = vv.shape[2];
    let a = AttnIn {
        shape: (b, s, w, wv, heads),
        scale,
        quant: *quant,
        q: q.as_f32()?,
        k: k.as_f32()?,
        v: vv.as_f32()?,
        mask: match v.get(3) {
            Some(m) => Some(m.as_i64()?),
            None => None,
        },
    };
    let mut out = vec![0f32; b * s * wv];
    run(&a, &mut out);
    Ok(Value::f32(vec![b, s, wv], out))
}

/// Attention's operands: `(batch, seq, q/k width, v width, heads)`, the scale, q, k, v and
/// the mask.
struct AttnIn<'a> {
    shape: (usize, usize, usize, usize, usize),
    scale: f32,
    quant: AttnQuant,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    mask: Option<&'a [i64]>,
}

#[inline(always)]
fn attention_impl(a: &AttnIn, out: &mut [f32]) {
    use bertc_numerics::{dot, exp, sum};
    let ((b, s, w, wv, heads), scale, mask) = (a.shape, a.scale, a.mask);
    let point = |p: Option<Qdq>| move |x: f32| p.map_or(x, |q| qdq(q)(x));
    let (scores, scaled, masked) = (
        point(a.quant.scores),
        point(a.quant.scaled),
        point(a.quant.masked),
    );
    let (qv, kv, vd) = (a.q, a.k, a.v);
    let (d, dv) = (w / heads, wv / heads);
    let mut x = vec![0f32; s];
    for bi in 0..b {
        let real: Vec<usize> = (0..s)
            .filter(|&j| mask.is_none_or(|m| m[bi * s + j] != 0))
            .collect();
        if real.is_empty() {
            continue;
        }
        for hh in 0..heads {
            for i in 0..s {
                let qi = &qv[(bi * s + i) * w + hh * d..][..d];
                for (xj, &j) in x.iter_mut().zip(&real) {
                    let kj = &kv[(bi * s + j) * w + hh * d..][..d];
                    *xj = masked(scaled(scores(dot(0.0, qi, kj)) * scale));
                }
                let x = &mut x[..real.len()];
                let m = x.iter().fold(f32::MIN, |m, &y| m.max(y));
                x.iter_mut().for_each(|y| *y = exp(*y - m));
                let total = sum(x.iter().copied());
                let inv = match a.quant.probs {
                    Some(q) => {
                        x.iter_mut().for_each(|y| *y = qdq(q)(*y / total));
                        1.0
                    }
                    None => 1.0 / total,
                };
                // each output column one chain over the keys in order, a value row at a time
                let o = &mut out[(bi * s + i) * wv + hh * dv..][..dv];
                for (&p, &j) in x.iter().zip(&real) {
                    let vj = &vd[(bi * s + j) * wv + hh * dv..][..dv];
                    o.iter_mut()
                        .zip(vj)
                        .for_each(|(oc, &y)| *oc = p.mul_add(y, *oc));
                }
                if a.quant.probs.is_none() {
                    o.iter_mut().for_each(|oc| *oc *= inv);
                }
            }
        }
    }
}

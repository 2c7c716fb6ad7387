//! The body of each kernel in Cranelift IR. Every kernel is a function of pointers and row
//! counts; widths, epsilons, scales and weight layouts are constants baked into its code.
//! Inputs are validated before the generated code runs (ids in range, lengths within the
//! position table), so kernels index without checks.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};

use super::emit::{Emit, Shape};
use super::lower::{Act, PANEL};
use crate::ir::{GeluApprox, Positions, TokenTypes};

/// `out[tok] = word[id] (+ type[tid]) + pos[p]` for every token.
#[allow(clippy::too_many_arguments)]
pub fn embedding(
    e: &mut Emit,
    [ids, types_p, out, batch, seq, word, pos, typ]: [Value; 8],
    positions: Positions,
    tt: TokenTypes,
    width: usize,
) {
    let rowb = width as i64 * 4;
    let zero = e.i(0);
    e.for_range(zero, batch, 1, |e, bi| {
        let z = e.i(0);
        let count = e.var(types::I64, z);
        let z = e.i(0);
        e.for_range(z, seq, 1, |e, t| {
            let bs = e.b.ins().imul(bi, seq);
            let tok = e.b.ins().iadd(bs, t);
            let ia = e.addr(ids, tok, 4);
            let id = e.load_i32(ia, 0);
            let p = match positions {
                Positions::Arange { offset } => e.b.ins().iadd_imm_s(t, offset),
                Positions::PaddingAware { pad } => {
                    let is_tok = e.b.ins().icmp_imm_s(IntCC::NotEqual, id, pad);
                    let inc = e.b.ins().uextend(types::I64, is_tok);
                    let c = e.b.use_var(count);
                    let c = e.b.ins().iadd(c, inc);
                    e.b.def_var(count, c);
                    let padv = e.i(pad);
                    let with = e.b.ins().iadd_imm_s(c, pad);
                    e.b.ins().select(is_tok, with, padv)
                }
            };
            let orow = e.addr(out, tok, rowb);
            let wrow = e.addr(word, id, rowb);
            let prow = e.addr(pos, p, rowb);
            let trow = match tt {
                TokenTypes::Input => {
                    let ta = e.addr(types_p, tok, 4);
                    let tid = e.load_i32(ta, 0);
                    Some(e.addr(typ, tid, rowb))
                }
                TokenTypes::Zero => Some(typ),
                TokenTypes::Absent => None,
            };
            e.row(width, |e, off, s| {
                let wa = e.b.ins().iadd(wrow, off);
                let mut v = e.load(s, wa, 0);
                if let Some(tr) = trow {
                    let ta = e.b.ins().iadd(tr, off);
                    let tv = e.load(s, ta, 0);
                    v = e.b.ins().fadd(v, tv);
                }
                let pa = e.b.ins().iadd(prow, off);
                let pv = e.load(s, pa, 0);
                v = e.b.ins().fadd(v, pv);
                let oa = e.b.ins().iadd(orow, off);
                e.store(v, oa, 0);
            });
        });
    });
}

/// Layer normalisation of `rows` rows of `width`.
pub fn layer_norm(e: &mut Emit, [x, out, rows, gamma, beta]: [Value; 5], width: usize, eps: f32) {
    let rowb = width as i64 * 4;
    let zero = e.i(0);
    e.for_range(zero, rows, 1, |e, r| {
        let xr = e.addr(x, r, rowb);
        let or = e.addr(out, r, rowb);
        let sum = e.row_sum(width, |e, off, s| {
            let a = e.b.ins().iadd(xr, off);
            e.load(s, a, 0)
        });
        let inv_n = e.f(1.0 / width as f32);
        let mean = e.b.ins().fmul(sum, inv_n);
        let var = e.row_sum(width, |e, off, s| {
            let a = e.b.ins().iadd(xr, off);
            let v = e.load(s, a, 0);
            let m = e.splat(s, mean);
            let d = e.b.ins().fsub(v, m);
            e.b.ins().fmul(d, d)
        });
        let var = e.b.ins().fmul(var, inv_n);
        let epsv = e.f(eps);
        let ve = e.b.ins().fadd(var, epsv);
        let sd = e.b.ins().sqrt(ve);
        let one = e.f(1.0);
        let inv = e.b.ins().fdiv(one, sd);
        e.row(width, |e, off, s| {
            let a = e.b.ins().iadd(xr, off);
            let v = e.load(s, a, 0);
            let m = e.splat(s, mean);
            let iv = e.splat(s, inv);
            let d = e.b.ins().fsub(v, m);
            let n = e.b.ins().fmul(d, iv);
            let ga = e.b.ins().iadd(gamma, off);
            let g = e.load(s, ga, 0);
            let ba = e.b.ins().iadd(beta, off);
            let bb = e.load(s, ba, 0);
            let y = e.mul_add(n, g, bb);
            let oa = e.b.ins().iadd(or, off);
            e.store(y, oa, 0);
        });
    });
}

/// One tile of the portable GEMM: `mr` rows by `cols` columns (a multiple of the lane count
/// no larger than `PANEL`) of one panel starting at column `col0` of the panel; stores the
/// first `store` columns.
#[allow(clippy::too_many_arguments)]
fn gemm_tile(
    e: &mut Emit,
    a: Value,
    lda: i64,
    bp: Value,
    c: Value,
    ldc: i64,
    k: usize,
    mr: usize,
    col0: usize,
    cols: usize,
    store: usize,
) {
    let l = e.lanes;
    let nv = cols / l;
    let vt = e.vty();
    // accumulators start from the bias row of the panel
    let mut acc = Vec::with_capacity(mr * nv);
    for _ in 0..mr {
        for j in 0..nv {
            let bias = e.load(Shape::Vector, bp, ((col0 + j * l) * 4) as i32);
            acc.push(e.var(vt, bias));
        }
    }
    let z = e.i(0);
    let kend = e.i(k as i64);
    e.for_range(z, kend, 1, |e, kk| {
        let brow = e.b.ins().imul_imm_s(kk, (PANEL * 4) as i64);
        let brow = e.b.ins().iadd(bp, brow);
        let bv: Vec<Value> = (0..nv)
            .map(|j| e.load(Shape::Vector, brow, ((PANEL + col0 + j * l) * 4) as i32))
            .collect();
        let ka = e.b.ins().imul_imm_s(kk, 4);
        let arow = e.b.ins().iadd(a, ka);
        for i in 0..mr {
            let av = e.b.ins().load(
                types::F32,
                super::emit::mem(),
                arow,
                (i as i64 * lda) as i32,
            );
            let av = e.splat(Shape::Vector, av);
            for j in 0..nv {
                let cur = e.b.use_var(acc[i * nv + j]);
                let y = e.mul_add(av, bv[j], cur);
                e.b.def_var(acc[i * nv + j], y);
            }
        }
    });
    for i in 0..mr {
        for j in 0..nv {
            let v = e.b.use_var(acc[i * nv + j]);
            let first = j * l;
            let off = (i as i64 * ldc + ((col0 + first) * 4) as i64) as i32;
            if first + l <= store {
                e.b.ins().store(super::emit::mem(), v, c, off);
            } else {
                for lane in 0..store.saturating_sub(first) {
                    let x = if l == 1 {
                        v
                    } else {
                        e.b.ins().extractlane(v, lane as u8)
                    };
                    e.b.ins()
                        .store(super::emit::mem(), x, c, off + lane as i32 * 4);
                }
            }
        }
    }
}

/// Rows per tile of the portable GEMM.
pub fn portable_mr(lanes: usize, regs: usize) -> usize {
    // accumulators (mr * 16/lanes) + B vectors + one broadcast must fit the registers
    let nv = 8 / lanes.max(1);
    ((regs.saturating_sub(nv + 1)) / nv).clamp(1, 4)
}

/// `out[rows, n] = x[rows, k] @ W + b` with W packed in panels (portable Cranelift code).
pub fn linear_portable(
    e: &mut Emit,
    [x, out, rows, packed]: [Value; 4],
    k: usize,
    n: usize,
    regs: usize,
) {
    let panels = n.div_ceil(PANEL);
    // tiles of 8 columns keep the accumulators in registers on 16-register targets
    let half = 8usize.max(e.lanes);
    let mr = portable_mr(e.lanes, regs);
    let lda = k as i64 * 4;
    let ldc = n as i64 * 4;
    for p in 0..panels {
        let bp =
            e.b.ins()
                .iadd_imm_s(packed, (p * PANEL * (k + 1) * 4) as i64);
        let ncols = (n - p * PANEL).min(PANEL);
        for col0 in (0..ncols).step_by(half) {
            let store = (ncols - col0).min(half);
            let cols = store.div_ceil(e.lanes) * e.lanes;
            let cbase = e.b.ins().iadd_imm_s(out, ((p * PANEL) * 4) as i64);
            // full tiles of mr rows, then single rows
            let full = e.b.ins().udiv_imm_u(rows, mr as i64);
            let full = e.b.ins().imul_imm_s(full, mr as i64);
            let z = e.i(0);
            e.for_range(z, full, mr as i64, |e, r| {
                let a = e.addr(x, r, lda);
                let c = e.addr(cbase, r, ldc);
                gemm_tile(e, a, lda, bp, c, ldc, k, mr, col0, cols, store);
            });
            e.for_range(full, rows, 1, |e, r| {
                let a = e.addr(x, r, lda);
                let c = e.addr(cbase, r, ldc);
                gemm_tile(e, a, lda, bp, c, ldc, k, 1, col0, cols, store);
            });
        }
    }
}

fn act_value(e: &mut Emit, s: Shape, v: Value, act: Act) -> Value {
    match act {
        Act::Relu => {
            let z = e.fs(s, 0.0);
            e.b.ins().fmax(v, z)
        }
        Act::Tanh => e.tanh(s, v),
        Act::Gelu(GeluApprox::Erf) => {
            let k = e.fs(s, std::f32::consts::FRAC_1_SQRT_2);
            let z = e.b.ins().fmul(v, k);
            let er = e.erf(s, z);
            let one = e.fs(s, 1.0);
            let t = e.b.ins().fadd(er, one);
            let half = e.fs(s, 0.5);
            let hx = e.b.ins().fmul(v, half);
            e.b.ins().fmul(hx, t)
        }
        Act::Gelu(GeluApprox::Tanh) => {
            let c3 = e.fs(s, 0.044715);
            let x2 = e.b.ins().fmul(v, v);
            let x3 = e.b.ins().fmul(x2, v);
            let inner = e.mul_add(c3, x3, v);
            let k = e.fs(s, (2.0 / std::f64::consts::PI).sqrt() as f32);
            let z = e.b.ins().fmul(inner, k);
            let th = e.tanh(s, z);
            let one = e.fs(s, 1.0);
            let t = e.b.ins().fadd(th, one);
            let half = e.fs(s, 0.5);
            let hx = e.b.ins().fmul(v, half);
            e.b.ins().fmul(hx, t)
        }
    }
}

/// An elementwise activation over `rows * width` floats.
pub fn activation(e: &mut Emit, [x, out, rows]: [Value; 3], width: usize, act: Act) {
    let n = e.b.ins().imul_imm_s(rows, width as i64);
    e.span(n, |e, off, s| {
        let a = e.b.ins().iadd(x, off);
        let v = e.load(s, a, 0);
        let y = act_value(e, s, v, act);
        let o = e.b.ins().iadd(out, off);
        e.store(y, o, 0);
    });
}

/// `out = a + b` over `rows * width` floats.
pub fn add(e: &mut Emit, [a, b, out, rows]: [Value; 4], width: usize) {
    let n = e.b.ins().imul_imm_s(rows, width as i64);
    e.span(n, |e, off, s| {
        let pa = e.b.ins().iadd(a, off);
        let pb = e.b.ins().iadd(b, off);
        let va = e.load(s, pa, 0);
        let vb = e.load(s, pb, 0);
        let y = e.b.ins().fadd(va, vb);
        let o = e.b.ins().iadd(out, off);
        e.store(y, o, 0);
    });
}

/// Attention geometry, all constants.
pub struct AttnShape {
    pub heads: usize,
    /// Width of q and k rows, and of one head's q/k slice.
    pub wq: usize,
    pub dq: usize,
    /// Width of v rows, and of one head's v slice.
    pub wv: usize,
    pub dv: usize,
    pub scale: f32,
    pub masked: bool,
}

/// Multi-head attention for every (sequence, head, query): scores against every key of the
/// sequence (keys with mask 0 get `f32::MIN`), softmax, weighted sum of values.
pub fn attention(
    e: &mut Emit,
    [q, k, v, out, mask, scratch, batch, seq]: [Value; 8],
    a: &AttnShape,
) {
    let zero = e.i(0);
    e.for_range(zero, batch, 1, |e, bi| {
        let base_tok = e.b.ins().imul(bi, seq);
        let z = e.i(0);
        let heads = e.i(a.heads as i64);
        e.for_range(z, heads, 1, |e, h| {
            let z = e.i(0);
            e.for_range(z, seq, 1, |e, i| {
                let tok = e.b.ins().iadd(base_tok, i);
                let qrow = e.addr(q, tok, a.wq as i64 * 4);
                let qrow = e.addr(qrow, h, a.dq as i64 * 4);
                let minv = e.f(f32::MIN);
                let maxv = e.var(types::F32, minv);
                let z = e.i(0);
                e.for_range(z, seq, 1, |e, j| {
                    let ktok = e.b.ins().iadd(base_tok, j);
                    let krow = e.addr(k, ktok, a.wq as i64 * 4);
                    let krow = e.addr(krow, h, a.dq as i64 * 4);
                    let dot = e.row_sum(a.dq, |e, off, s| {
                        let pa = e.b.ins().iadd(qrow, off);
                        let pb = e.b.ins().iadd(krow, off);
                        let x = e.load(s, pa, 0);
                        let y = e.load(s, pb, 0);
                        e.b.ins().fmul(x, y)
                    });
                    let sc = e.f(a.scale);
                    let mut sv = e.b.ins().fmul(dot, sc);
                    if a.masked {
                        let ma = e.addr(mask, ktok, 4);
                        let m = e.load_i32(ma, 0);
                        let keep = e.b.ins().icmp_imm_s(IntCC::NotEqual, m, 0);
                        let minv = e.f(f32::MIN);
                        sv = e.b.ins().select(keep, sv, minv);
                    }
                    let sa = e.addr(scratch, j, 4);
                    e.b.ins().store(super::emit::mem(), sv, sa, 0);
                    let cur = e.b.use_var(maxv);
                    let nm = e.b.ins().fmax(cur, sv);
                    e.b.def_var(maxv, nm);
                });
                let mx = e.b.use_var(maxv);
                let zf = e.f(0.0);
                let sum = e.var(types::F32, zf);
                let z = e.i(0);
                e.for_range(z, seq, 1, |e, j| {
                    let sa = e.addr(scratch, j, 4);
                    let sv = e.b.ins().load(types::F32, super::emit::mem(), sa, 0);
                    let d = e.b.ins().fsub(sv, mx);
                    let p = e.exp(Shape::Scalar, d);
                    e.b.ins().store(super::emit::mem(), p, sa, 0);
                    let cur = e.b.use_var(sum);
                    let ns = e.b.ins().fadd(cur, p);
                    e.b.def_var(sum, ns);
                });
                let one = e.f(1.0);
                let total = e.b.use_var(sum);
                let inv = e.b.ins().fdiv(one, total);
                let orow = e.addr(out, tok, a.wv as i64 * 4);
                let orow = e.addr(orow, h, a.dv as i64 * 4);
                e.row(a.dv, |e, off, s| {
                    let z = e.fs(s, 0.0);
                    let oa = e.b.ins().iadd(orow, off);
                    e.store(z, oa, 0);
                });
                let z = e.i(0);
                e.for_range(z, seq, 1, |e, j| {
                    let sa = e.addr(scratch, j, 4);
                    let p = e.b.ins().load(types::F32, super::emit::mem(), sa, 0);
                    let p = e.b.ins().fmul(p, inv);
                    let vtok = e.b.ins().iadd(base_tok, j);
                    let vrow = e.addr(v, vtok, a.wv as i64 * 4);
                    let vrow = e.addr(vrow, h, a.dv as i64 * 4);
                    e.row(a.dv, |e, off, s| {
                        let pv = e.splat(s, p);
                        let va = e.b.ins().iadd(vrow, off);
                        let x = e.load(s, va, 0);
                        let oa = e.b.ins().iadd(orow, off);
                        let o = e.load(s, oa, 0);
                        let y = e.mul_add(pv, x, o);
                        e.store(y, oa, 0);
                    });
                });
            });
        });
    });
}

/// The first row of each sequence.
pub fn cls(e: &mut Emit, [x, out, batch, seq]: [Value; 4], width: usize) {
    let rowb = width as i64 * 4;
    let zero = e.i(0);
    e.for_range(zero, batch, 1, |e, bi| {
        let tok = e.b.ins().imul(bi, seq);
        let src = e.addr(x, tok, rowb);
        let dst = e.addr(out, bi, rowb);
        e.row(width, |e, off, s| {
            let a = e.b.ins().iadd(src, off);
            let v = e.load(s, a, 0);
            let o = e.b.ins().iadd(dst, off);
            e.store(v, o, 0);
        });
    });
}

/// The mean of the rows of each sequence whose mask is non-zero.
pub fn mean_pool(e: &mut Emit, [x, out, mask, batch, seq]: [Value; 5], width: usize) {
    let rowb = width as i64 * 4;
    let zero = e.i(0);
    e.for_range(zero, batch, 1, |e, bi| {
        let dst = e.addr(out, bi, rowb);
        e.row(width, |e, off, s| {
            let z = e.fs(s, 0.0);
            let o = e.b.ins().iadd(dst, off);
            e.store(z, o, 0);
        });
        let zf = e.f(0.0);
        let count = e.var(types::F32, zf);
        let z = e.i(0);
        e.for_range(z, seq, 1, |e, t| {
            let base = e.b.ins().imul(bi, seq);
            let tok = e.b.ins().iadd(base, t);
            let ma = e.addr(mask, tok, 4);
            let m = e.load_i32(ma, 0);
            let keep = e.b.ins().icmp_imm_s(IntCC::NotEqual, m, 0);
            e.if_nonzero(keep, |e| {
                let c = e.b.use_var(count);
                let one = e.f(1.0);
                let c = e.b.ins().fadd(c, one);
                e.b.def_var(count, c);
                let src = e.addr(x, tok, rowb);
                e.row(width, |e, off, s| {
                    let a = e.b.ins().iadd(src, off);
                    let v = e.load(s, a, 0);
                    let o = e.b.ins().iadd(dst, off);
                    let acc = e.load(s, o, 0);
                    let y = e.b.ins().fadd(acc, v);
                    e.store(y, o, 0);
                });
            });
        });
        let c = e.b.use_var(count);
        let one = e.f(1.0);
        let c = e.b.ins().fmax(c, one);
        let inv = e.b.ins().fdiv(one, c);
        e.row(width, |e, off, s| {
            let iv = e.splat(s, inv);
            let o = e.b.ins().iadd(dst, off);
            let acc = e.load(s, o, 0);
            let y = e.b.ins().fmul(acc, iv);
            e.store(y, o, 0);
        });
    });
}

//! The body of each kernel in Cranelift IR. Every kernel is a task function
//! `kernel(args, begin, end)`: `args` points to its i64 arguments (pointers and counts), and it
//! runs tasks `begin..end` of its step (row blocks, sequences, heads or GEMM tiles), so that
//! the thread pool can split a step between threads. Widths, epsilons, scales and weight
//! layouts are constants baked into the code. Token rows are packed: only tokens with mask 1,
//! sequence by sequence (`seq_start[b]..seq_start[b+1]`). Inputs are validated before the
//! generated code runs (ids in range, lengths within the position table), so kernels index
//! without checks.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};

use super::emit::{Emit, Shape};
use super::lower::Act;
use crate::program::MapOp;
use bertc_ir::{AttnQuant, BinaryOp, PoolMode, Positions, Qdq, TokenTypes, UnaryOp};

/// Rows per task of the row-wise kernels.
pub const ROW_BLOCK: i64 = 8;

/// The rows `begin*ROW_BLOCK .. min(end*ROW_BLOCK, rows)` of row-block tasks.
pub fn row_range(e: &mut Emit, begin: Value, end: Value, rows: Value) -> (Value, Value) {
    let r0 = e.b.ins().imul_imm_s(begin, ROW_BLOCK);
    let r1 = e.b.ins().imul_imm_s(end, ROW_BLOCK);
    let r1 = e.b.ins().smin(r1, rows);
    (r0, r1)
}

/// `packed[i] = word[id] (+ type[tid]) + pos[p]` for the tokens with mask 1 of sequences
/// `begin..end`, written at `seq_start[b]..`. Positions count from the sequence start (RoBERTa:
/// the padding-aware count over all ids of the sequence). With `word_scale`, the word table
/// is int8 rows and `word[id] = q[id] as f32 · word_scale[id]`.
pub fn embedding(
    e: &mut Emit,
    [ids, types_p, mask, seq_start, out, seq, word, pos, typ]: [Value; 9],
    [begin, end]: [Value; 2],
    (positions, tt, sum_qdq): (Positions, TokenTypes, Option<Qdq>),
    width: usize,
    word_scale: Option<Value>,
) {
    let rowb = width as i64 * 4;
    e.for_range(begin, end, 1, |e, bi| {
        let z = e.i(0);
        let count = e.var(types::I64, z);
        let sa = e.addr(seq_start, bi, 4);
        let first = e.load_i32(sa, 0);
        let slot = e.var(types::I64, first);
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
            let ma = e.addr(mask, tok, 4);
            let m = e.load_i32(ma, 0);
            e.if_nonzero(m, |e| {
                let dst = e.b.use_var(slot);
                let next = e.b.ins().iadd_imm_s(dst, 1);
                e.b.def_var(slot, next);
                let orow = e.addr(out, dst, rowb);
                let wrow = match word_scale {
                    Some(_) => e.addr(word, id, width as i64),
                    None => e.addr(word, id, rowb),
                };
                let ws = word_scale.map(|s| {
                    let sa = e.addr(s, id, 4);
                    e.b.ins().load(types::F32, super::emit::mem(), sa, 0)
                });
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
                    let mut v = match ws {
                        Some(scale) => {
                            let o = e.b.ins().ushr_imm_u(off, 2);
                            let wa = e.b.ins().iadd(wrow, o);
                            let q = e.load_i8_as_f32(s, wa);
                            let sv = e.splat(s, scale);
                            e.b.ins().fmul(q, sv)
                        }
                        None => {
                            let wa = e.b.ins().iadd(wrow, off);
                            e.load(s, wa, 0)
                        }
                    };
                    if let Some(tr) = trow {
                        let ta = e.b.ins().iadd(tr, off);
                        let tv = e.load(s, ta, 0);
                        v = e.b.ins().fadd(v, tv);
                    }
                    if let Some(q) = sum_qdq {
                        v = e.qdq(s, v, q);
                    }
                    let pa = e.b.ins().iadd(prow, off);
                    let pv = e.load(s, pa, 0);
                    v = e.b.ins().fadd(v, pv);
                    let oa = e.b.ins().iadd(orow, off);
                    e.store(v, oa, 0);
                });
            });
        });
    });
}

/// Layer normalisation of the rows of row-block tasks `begin..end`, in two passes over each
/// row: the sums of `x - x0` and of its squares (shifted by the row's first element `x0`, so
/// that a large mean does not cancel the variance away), then the normalised row. With the
/// ISA's hand-written kernel `asm` (`layer_norm(x, out, rows, gamma, beta, width)`), one call
/// over the task's rows.
pub fn layer_norm(
    e: &mut Emit,
    [x, out, rows, gamma, beta]: [Value; 5],
    [begin, end]: [Value; 2],
    (width, eps): (usize, f32),
    asm: Option<cranelift_codegen::ir::FuncRef>,
) {
    let rowb = width as i64 * 4;
    let (r0, r1) = row_range(e, begin, end, rows);
    if let Some(f) = asm {
        let xr = e.addr(x, r0, rowb);
        let or = e.addr(out, r0, rowb);
        let n = e.b.ins().isub(r1, r0);
        let w = e.i(width as i64);
        e.b.ins().call(f, &[xr, or, n, gamma, beta, w]);
        return;
    }
    e.for_range(r0, r1, 1, |e, r| {
        let xr = e.addr(x, r, rowb);
        let or = e.addr(out, r, rowb);
        let x0 = e.b.ins().load(types::F32, super::emit::mem(), xr, 0);
        let sums = e.row_sums(width, 2, |e, off, s| {
            let a = e.b.ins().iadd(xr, off);
            let v = e.load(s, a, 0);
            let shift = e.splat(s, x0);
            let d = e.b.ins().fsub(v, shift);
            let d2 = e.b.ins().fmul(d, d);
            vec![d, d2]
        });
        let (sum, sq) = (sums[0], sums[1]);
        let inv_n = e.f(1.0 / width as f32);
        let md = e.b.ins().fmul(sum, inv_n);
        let mean = e.b.ins().fadd(x0, md);
        let msq = e.b.ins().fmul(sq, inv_n);
        let md2 = e.b.ins().fmul(md, md);
        let var = e.b.ins().fsub(msq, md2);
        let zero = e.f(0.0);
        let var = e.b.ins().fmax(var, zero);
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

/// An elementwise activation over the rows of row-block tasks `begin..end`.
pub fn activation(
    e: &mut Emit,
    [x, out, rows]: [Value; 3],
    [begin, end]: [Value; 2],
    width: usize,
    act: Act,
) {
    let (r0, r1) = row_range(e, begin, end, rows);
    let base = e.b.ins().imul_imm_s(r0, width as i64 * 4);
    let x = e.b.ins().iadd(x, base);
    let out = e.b.ins().iadd(out, base);
    let nr = e.b.ins().isub(r1, r0);
    let n = e.b.ins().imul_imm_s(nr, width as i64);
    e.span(n, |e, off, s| {
        let a = e.b.ins().iadd(x, off);
        let v = e.load(s, a, 0);
        let y = e.act(s, v, act);
        let o = e.b.ins().iadd(out, off);
        e.store(y, o, 0);
    });
}

/// `Step::Map` over the rows of row-block tasks `begin..end`: `args` are the step's input
/// buffers, the output, the row count, the constant rows, the per-sequence inputs, `tok_src`
/// and the padded length (a packed token's sequence is its padded index over the length;
/// `per_token` false: the rows are the sequences); each element is `expr` evaluated on a
/// stack, one f32 operation an op (vectors of the target's width, then scalars).
pub fn map(
    e: &mut Emit,
    args: &[Value],
    [begin, end]: [Value; 2],
    width: usize,
    (expr, [inputs, nrows, nseq], per_token): (&[MapOp], [usize; 3], bool),
) {
    let (out, rows) = (args[inputs], args[inputs + 1]);
    let consts = &args[inputs + 2..inputs + 2 + nrows];
    let seq_in = &args[inputs + 2 + nrows..inputs + 2 + nrows + nseq];
    let (tok_src, seq) = (
        args[inputs + 2 + nrows + nseq],
        args[inputs + 3 + nrows + nseq],
    );
    let (r0, r1) = row_range(e, begin, end, rows);
    let base = e.b.ins().imul_imm_s(r0, width as i64 * 4);
    let ins: Vec<Value> = args[..inputs]
        .iter()
        .map(|&b| e.b.ins().iadd(b, base))
        .collect();
    let out = e.b.ins().iadd(out, base);
    let rowb = width as i64 * 4;
    e.for_range(r0, r1, 1, |e, r| {
        let at = e.b.ins().isub(r, r0);
        let at = e.b.ins().imul_imm_s(at, rowb);
        // the row's values of the per-sequence inputs
        let sq = if nseq > 0 && per_token {
            let ta = e.addr(tok_src, r, 4);
            let t = e.load_i32(ta, 0);
            e.b.ins().udiv(t, seq)
        } else {
            r
        };
        let per_seq: Vec<Value> = seq_in
            .iter()
            .map(|&b| {
                let a = e.addr(b, sq, 4);
                e.b.ins().load(types::F32, super::emit::mem(), a, 0)
            })
            .collect();
        e.row(width, |e, off, s| {
            let mut st: Vec<Value> = Vec::new();
            for op in expr {
                let y = match *op {
                    MapOp::Input(i) => {
                        let a = e.b.ins().iadd(ins[i], at);
                        let a = e.b.ins().iadd(a, off);
                        e.load(s, a, 0)
                    }
                    MapOp::Row(i) => {
                        let a = e.b.ins().iadd(consts[i], off);
                        e.load(s, a, 0)
                    }
                    MapOp::Const(c) => e.fs(s, c),
                    MapOp::SeqInput(i) => e.splat(s, per_seq[i]),
                    MapOp::Unary(u) => {
                        let x = st.pop().expect("a map operand");
                        match u {
                            UnaryOp::Neg => e.b.ins().fneg(x),
                            UnaryOp::Abs => e.b.ins().fabs(x),
                            UnaryOp::Sqrt => e.b.ins().sqrt(x),
                            UnaryOp::Erf => e.erf(s, x),
                            UnaryOp::Tanh => e.tanh(s, x),
                            _ => unreachable!("{u:?} is not among MapOp::UNARY"),
                        }
                    }
                    MapOp::Binary(b) => {
                        let y = st.pop().expect("a map operand");
                        let x = st.pop().expect("a map operand");
                        match b {
                            BinaryOp::Add => e.b.ins().fadd(x, y),
                            BinaryOp::Sub => e.b.ins().fsub(x, y),
                            BinaryOp::Mul => e.b.ins().fmul(x, y),
                            BinaryOp::Div => e.b.ins().fdiv(x, y),
                            _ => unreachable!("{b:?} is not among MapOp::BINARY"),
                        }
                    }
                    MapOp::Qdq(q) => {
                        let x = st.pop().expect("a map operand");
                        e.qdq(s, x, q)
                    }
                    MapOp::Centered(si, zi) => {
                        let x = st.pop().expect("a map operand");
                        let scale = e.splat(s, per_seq[si]);
                        let zero = e.splat(s, per_seq[zi]);
                        e.centered(s, x, (scale, zero), (0.0, 255.0))
                    }
                    MapOp::Powi(n) => {
                        let x = st.pop().expect("a map operand");
                        let mut y = e.b.ins().fmul(x, x);
                        for _ in 2..n {
                            y = e.b.ins().fmul(y, x);
                        }
                        y
                    }
                };
                st.push(y);
            }
            let y = st.pop().expect("a map's result");
            let o = e.b.ins().iadd(out, at);
            let o = e.b.ins().iadd(o, off);
            e.store(y, o, 0);
        });
    });
}

/// Attention geometry, all constants.
pub struct AttnShape {
    pub heads: usize,
    /// Row strides (floats) of q, k, v and the output.
    pub ldq: usize,
    pub ldk: usize,
    pub ldv: usize,
    pub ldo: usize,
    /// Widths of one head's q/k and v slices.
    pub dq: usize,
    pub dv: usize,
    pub scale: f32,
    /// The static quantization points (the portable kernel's only).
    pub quant: AttnQuant,
}

/// Multi-head attention for tasks `begin..end`, task `t` being head `t % heads` of sequence
/// `t / heads`, in `bertc_numerics`' order (what the GEMM attention computes): the head's keys
/// transposed into the thread's scratch (`tid` selects it, `stride` bytes each: a score row
/// and `dq` key rows of `L` floats, `L` the padded length rounded up to 16), then for each of
/// the sequence's (packed) queries the scores `dot(q, k_j) · scale`, a fused multiply-add
/// chain over the head's width for 4 keys a vector (8 in the main loop, two chains), their
/// maximum `m`, `p_j = exp(x_j - m)` stored and summed (the canonical sum), `Σ p_j v_j` from
/// zeros, and the row times `1 / Σ p_j`.
pub fn attention(
    e: &mut Emit,
    [q, k, v, out, seq_start, scratch, seq, stride]: [Value; 8],
    [begin, end]: [Value; 2],
    tid: Value,
    a: &AttnShape,
) {
    let base = e.b.ins().imul(tid, stride);
    let srow = e.b.ins().iadd(scratch, base);
    let lp = e.b.ins().iadd_imm_s(seq, 15);
    let lp = e.b.ins().band_imm_s(lp, -16);
    let ldkt = e.b.ins().imul_imm_s(lp, 4);
    let kt = e.b.ins().iadd(srow, ldkt);
    e.for_range(begin, end, 1, |e, task| {
        let (h, s0, s1) = attention_task(e, task, seq_start, a.heads);
        let len = e.b.ins().isub(s1, s0);
        // Kᵀ: kt[c][j] = k[s0 + j][h dq + c]
        let z = e.i(0);
        e.for_range(z, len, 1, |e, j| {
            let src = e.b.ins().iadd(s0, j);
            let krow = e.addr(k, src, a.ldk as i64 * 4);
            let krow = e.addr(krow, h, a.dq as i64 * 4);
            let dst = e.addr(kt, j, 4);
            let dst = e.var(types::I64, dst);
            for c in 0..a.dq {
                let x =
                    e.b.ins()
                        .load(types::F32, super::emit::mem(), krow, (c * 4) as i32);
                let at = e.b.use_var(dst);
                e.b.ins().store(super::emit::mem(), x, at, 0);
                let next = e.b.ins().iadd(at, ldkt);
                e.b.def_var(dst, next);
            }
        });
        e.for_range(s0, s1, 1, |e, i| {
            let qrow = e.addr(q, i, a.ldq as i64 * 4);
            let qrow = e.addr(qrow, h, a.dq as i64 * 4);
            // the scores of `chains` vectors (or scalars) of keys from byte offset `off`
            let scores = |e: &mut Emit, off: Value, s: Shape, chains: usize| {
                let step = match s {
                    Shape::Vector => e.lanes as i64 * 4,
                    Shape::Scalar => 4,
                };
                let mut acc: Vec<Value> = (0..chains).map(|_| e.fs(s, 0.0)).collect();
                let p = e.b.ins().iadd(kt, off);
                let p = e.var(types::I64, p);
                for c in 0..a.dq {
                    let qc =
                        e.b.ins()
                            .load(types::F32, super::emit::mem(), qrow, (c * 4) as i32);
                    let qv = e.splat(s, qc);
                    let at = e.b.use_var(p);
                    for (n, ac) in acc.iter_mut().enumerate() {
                        let kv = e.load(s, at, (n as i64 * step) as i32);
                        *ac = e.mul_add(qv, kv, *ac);
                    }
                    let next = e.b.ins().iadd(at, ldkt);
                    e.b.def_var(p, next);
                }
                for (n, ac) in acc.into_iter().enumerate() {
                    let mut x = ac;
                    if let Some(q) = a.quant.scores {
                        x = e.qdq(s, x, q);
                    }
                    let sc = e.fs(s, a.scale);
                    x = e.b.ins().fmul(x, sc);
                    for q in [a.quant.scaled, a.quant.masked].into_iter().flatten() {
                        x = e.qdq(s, x, q);
                    }
                    let at = e.b.ins().iadd(srow, off);
                    e.store(x, at, (n as i64 * step) as i32);
                }
            };
            let bytes = e.b.ins().imul_imm_s(len, 4);
            let two = if e.lanes > 1 {
                2 * e.lanes as i64 * 4
            } else {
                8
            };
            let main = e.b.ins().band_imm_s(bytes, -two);
            let z = e.i(0);
            let pair = if e.lanes > 1 {
                Shape::Vector
            } else {
                Shape::Scalar
            };
            e.for_range(z, main, two, |e, off| scores(e, off, pair, 2));
            let rest = e.b.ins().isub(bytes, main);
            let rest = e.b.ins().ushr_imm_u(rest, 2);
            e.span(rest, |e, off, s| {
                let o = e.b.ins().iadd(off, main);
                scores(e, o, s, 1)
            });
            // the maximum
            let lowest = e.fs(Shape::Vector, f32::MIN);
            let vmax = e.var(e.vty(), lowest);
            let lowest = e.f(f32::MIN);
            let smax = e.var(types::F32, lowest);
            e.span(len, |e, off, s| {
                let at = e.b.ins().iadd(srow, off);
                let x = e.load(s, at, 0);
                let acc = match s {
                    Shape::Vector if e.lanes > 1 => vmax,
                    _ => smax,
                };
                let cur = e.b.use_var(acc);
                let m = e.b.ins().fmax(cur, x);
                e.b.def_var(acc, m);
            });
            let mx = e.max_of(vmax, smax);
            // exponentials, stored and summed
            let total = e.span_sum(len, |e, off, s| {
                let pa = e.b.ins().iadd(srow, off);
                let sv = e.load(s, pa, 0);
                let m = e.splat(s, mx);
                let d = e.b.ins().fsub(sv, m);
                let p = e.exp(s, d);
                e.store(p, pa, 0);
                p
            });
            let one = e.f(1.0);
            let inv = e.b.ins().fdiv(one, total);
            // quantized probabilities are exp / sum themselves, and the output is not rescaled
            if let Some(q) = a.quant.probs {
                e.span(len, |e, off, s| {
                    let pa = e.b.ins().iadd(srow, off);
                    let p = e.load(s, pa, 0);
                    let t = e.splat(s, total);
                    let p = e.b.ins().fdiv(p, t);
                    let p = e.qdq(s, p, q);
                    e.store(p, pa, 0);
                });
            }
            let orow = e.addr(out, i, a.ldo as i64 * 4);
            let orow = e.addr(orow, h, a.dv as i64 * 4);
            zero_row(e, orow, a.dv);
            e.for_range(s0, s1, 1, |e, j| {
                let jj = e.b.ins().isub(j, s0);
                let sa = e.addr(srow, jj, 4);
                let p = e.b.ins().load(types::F32, super::emit::mem(), sa, 0);
                let vrow = e.addr(v, j, a.ldv as i64 * 4);
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
            if a.quant.probs.is_none() {
                scale_row(e, orow, orow, a.dv, inv);
            }
        });
    });
}

/// The first (packed) row of each sequence of tasks `begin..end`.
pub fn cls(e: &mut Emit, [x, out, seq_start]: [Value; 3], [begin, end]: [Value; 2], width: usize) {
    let rowb = width as i64 * 4;
    e.for_range(begin, end, 1, |e, bi| {
        let sa = e.addr(seq_start, bi, 4);
        let first = e.load_i32(sa, 0);
        let src = e.addr(x, first, rowb);
        let dst = e.addr(out, bi, rowb);
        e.copy_row(src, dst, width);
    });
}

/// The packed row range `s0..s1` of sequence `bi`.
pub(crate) fn seq_rows(e: &mut Emit, seq_start: Value, bi: Value) -> (Value, Value) {
    let sa = e.addr(seq_start, bi, 4);
    (e.load_i32(sa, 0), e.load_i32(sa, 4))
}

/// `dst = f(dst, row)` for the rows `r0..r1` of `x` (rows of `width` floats, `rowb` bytes).
fn accumulate_rows(
    e: &mut Emit,
    (x, rowb, width): (Value, i64, usize),
    (r0, r1): (Value, Value),
    dst: Value,
    f: impl Fn(&mut Emit, Value, Value) -> Value + Copy,
) {
    e.for_range(r0, r1, 1, |e, r| {
        let src = e.addr(x, r, rowb);
        e.row(width, |e, off, s| {
            let a = e.b.ins().iadd(src, off);
            let v = e.load(s, a, 0);
            let o = e.b.ins().iadd(dst, off);
            let acc = e.load(s, o, 0);
            let y = f(e, acc, v);
            e.store(y, o, 0);
        });
    });
}

/// The mean of the (packed) rows of each sequence of tasks `begin..end`.
pub fn mean_pool(
    e: &mut Emit,
    [x, out, seq_start]: [Value; 3],
    [begin, end]: [Value; 2],
    width: usize,
) {
    let rowb = width as i64 * 4;
    e.for_range(begin, end, 1, |e, bi| {
        let dst = e.addr(out, bi, rowb);
        let (s0, s1) = seq_rows(e, seq_start, bi);
        sum_rows_over_count(e, (x, rowb, width), (s0, s1), dst, false);
    });
}

/// Zeroes a row of `width` floats.
fn zero_row(e: &mut Emit, dst: Value, width: usize) {
    e.row(width, |e, off, s| {
        let z = e.fs(s, 0.0);
        let o = e.b.ins().iadd(dst, off);
        e.store(z, o, 0);
    });
}

/// `dst` = the sum of rows `s0..s1` of `x` over their count (at least 1), or over its square
/// root when `root`.
fn sum_rows_over_count(
    e: &mut Emit,
    xs: (Value, i64, usize),
    (s0, s1): (Value, Value),
    dst: Value,
    root: bool,
) {
    zero_row(e, dst, xs.2);
    accumulate_rows(e, xs, (s0, s1), dst, |e, acc, v| e.b.ins().fadd(acc, v));
    let n = e.b.ins().isub(s1, s0);
    let nf = e.b.ins().fcvt_from_sint(types::F32, n);
    let one = e.f(1.0);
    let c = e.b.ins().fmax(nf, one);
    let c = if root { e.b.ins().sqrt(c) } else { c };
    let inv = e.b.ins().fdiv(one, c);
    scale_row(e, dst, dst, xs.2, inv);
}

/// sentence-transformers' other poolings (`PoolMode`) of the packed rows of each sequence of
/// tasks `begin..end`: `tok_src` is each packed row's place in the padded batch (a weighted
/// mean's weight is the position there plus one), `seq` the padded length.
pub fn pool(
    e: &mut Emit,
    [x, out, seq_start, tok_src, seq]: [Value; 5],
    [begin, end]: [Value; 2],
    width: usize,
    mode: PoolMode,
) {
    let rowb = width as i64 * 4;
    e.for_range(begin, end, 1, |e, bi| {
        let dst = e.addr(out, bi, rowb);
        let (s0, s1) = seq_rows(e, seq_start, bi);
        match mode {
            PoolMode::LastToken => {
                zero_row(e, dst, width);
                let any = e.b.ins().icmp(IntCC::SignedGreaterThan, s1, s0);
                e.if_nonzero(any, |e| {
                    let last = e.b.ins().iadd_imm_s(s1, -1);
                    let src = e.addr(x, last, rowb);
                    e.copy_row(src, dst, width);
                });
            }
            PoolMode::MeanSqrtLen => {
                sum_rows_over_count(e, (x, rowb, width), (s0, s1), dst, true);
            }
            PoolMode::WeightedMean => {
                zero_row(e, dst, width);
                let zero = e.f(0.0);
                let total = e.var(types::F32, zero);
                let base = e.b.ins().imul(bi, seq);
                e.for_range(s0, s1, 1, |e, r| {
                    let ta = e.addr(tok_src, r, 4);
                    let at = e.load_i32(ta, 0);
                    let pos = e.b.ins().isub(at, base);
                    let pos = e.b.ins().iadd_imm_s(pos, 1);
                    let w = e.b.ins().fcvt_from_sint(types::F32, pos);
                    let t = e.b.use_var(total);
                    let t = e.b.ins().fadd(t, w);
                    e.b.def_var(total, t);
                    let src = e.addr(x, r, rowb);
                    e.row(width, |e, off, s| {
                        let a = e.b.ins().iadd(src, off);
                        let v = e.load(s, a, 0);
                        let o = e.b.ins().iadd(dst, off);
                        let acc = e.load(s, o, 0);
                        let ws = e.splat(s, w);
                        let y = e.mul_add(v, ws, acc);
                        e.store(y, o, 0);
                    });
                });
                let t = e.b.use_var(total);
                let tiny = e.f(1e-9);
                let t = e.b.ins().fmax(t, tiny);
                let one = e.f(1.0);
                let inv = e.b.ins().fdiv(one, t);
                scale_row(e, dst, dst, width, inv);
            }
        }
    });
}

/// `dst = src * factor` over a row of `width` floats.
fn scale_row(e: &mut Emit, src: Value, dst: Value, width: usize, factor: Value) {
    e.row(width, |e, off, s| {
        let f = e.splat(s, factor);
        let a = e.b.ins().iadd(src, off);
        let v = e.load(s, a, 0);
        let y = e.b.ins().fmul(v, f);
        let o = e.b.ins().iadd(dst, off);
        e.store(y, o, 0);
    });
}

/// The elementwise maximum of the (packed) rows of each sequence of tasks `begin..end`.
pub fn max_pool(
    e: &mut Emit,
    [x, out, seq_start]: [Value; 3],
    [begin, end]: [Value; 2],
    width: usize,
) {
    let rowb = width as i64 * 4;
    e.for_range(begin, end, 1, |e, bi| {
        let dst = e.addr(out, bi, rowb);
        let (s0, s1) = seq_rows(e, seq_start, bi);
        let first = e.addr(x, s0, rowb);
        e.copy_row(first, dst, width);
        let s0 = e.b.ins().iadd_imm_s(s0, 1);
        accumulate_rows(e, (x, rowb, width), (s0, s1), dst, |e, acc, v| {
            e.b.ins().fmax(acc, v)
        });
    });
}

/// Each row of tasks `begin..end` divided by its L2 norm (at least 1e-12, as PyTorch's
/// `F.normalize`).
pub fn l2_normalize(e: &mut Emit, [x, out]: [Value; 2], [begin, end]: [Value; 2], width: usize) {
    let rowb = width as i64 * 4;
    e.for_range(begin, end, 1, |e, bi| {
        let src = e.addr(x, bi, rowb);
        let dst = e.addr(out, bi, rowb);
        let sum = e.row_sum(width, |e, off, s| {
            let a = e.b.ins().iadd(src, off);
            let v = e.load(s, a, 0);
            e.b.ins().fmul(v, v)
        });
        let norm = e.b.ins().sqrt(sum);
        let eps = e.f(1e-12);
        let norm = e.b.ins().fmax(norm, eps);
        let one = e.f(1.0);
        let inv = e.b.ins().fdiv(one, norm);
        scale_row(e, src, dst, width, inv);
    });
}

/// Each sequence's row of `a` (`wa` floats) then its row of `b` (`wb`) into `out`.
pub fn concat(
    e: &mut Emit,
    [a, b, out]: [Value; 3],
    [begin, end]: [Value; 2],
    (wa, wb): (usize, usize),
) {
    e.for_range(begin, end, 1, |e, bi| {
        let dst = e.addr(out, bi, (wa + wb) as i64 * 4);
        let src = e.addr(a, bi, wa as i64 * 4);
        e.copy_row(src, dst, wa);
        let src = e.addr(b, bi, wb as i64 * 4);
        let dst = e.b.ins().iadd_imm_s(dst, wa as i64 * 4);
        e.copy_row(src, dst, wb);
    });
}

/// Writes packed rows back to their places in the padded `[batch, seq]` output (the rows of
/// masked tokens are left as the caller set them).
pub fn scatter(
    e: &mut Emit,
    [x, out, tok_src, rows]: [Value; 4],
    [begin, end]: [Value; 2],
    width: usize,
) {
    let rowb = width as i64 * 4;
    let (r0, r1) = row_range(e, begin, end, rows);
    e.for_range(r0, r1, 1, |e, r| {
        let ta = e.addr(tok_src, r, 4);
        let dst = e.load_i32(ta, 0);
        let src = e.addr(x, r, rowb);
        let dst = e.addr(out, dst, rowb);
        e.copy_row(src, dst, width);
    });
}

/// The head and the packed token range `s0..s1` of attention task `task` (one per sequence and
/// head: `task = sequence * heads + head`).
pub(crate) fn attention_task(
    e: &mut Emit,
    task: Value,
    seq_start: Value,
    heads: usize,
) -> (Value, Value, Value) {
    let bi = e.b.ins().udiv_imm_u(task, heads as i64);
    let bh = e.b.ins().imul_imm_s(bi, heads as i64);
    let h = e.b.ins().isub(task, bh);
    let sa = e.addr(seq_start, bi, 4);
    let s0 = e.load_i32(sa, 0);
    let s1 = e.load_i32(sa, 4);
    (h, s0, s1)
}

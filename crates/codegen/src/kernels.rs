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
use super::lower::{Act, PANEL};
use bertc_ir::{GeluApprox, Positions, TokenTypes};

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
    (positions, tt): (Positions, TokenTypes),
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
                            let q = crate::qkernels::load_i8_as_f32(e, s, wa);
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
/// that a large mean does not cancel the variance away), then the normalised row.
pub fn layer_norm(
    e: &mut Emit,
    [x, out, rows, gamma, beta]: [Value; 5],
    [begin, end]: [Value; 2],
    width: usize,
    eps: f32,
) {
    let rowb = width as i64 * 4;
    let (r0, r1) = row_range(e, begin, end, rows);
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
    // accumulators (mr * 8/lanes) + B vectors + one broadcast must fit the registers
    let nv = 8 / lanes.max(1);
    ((regs.saturating_sub(nv + 1)) / nv).clamp(1, 4)
}

/// `rows` rows in `ceil(rows / mr)` blocks of as even sizes as can be (they differ by at most
/// one row): a block of one or two rows runs the microkernel far below its rate (too few
/// independent accumulators to cover the FMA latency), so 128 rows run as 18 x 6 + 4 x 5, not
/// 21 x 6 + 2.
pub struct RowBlocks {
    pub count: Value,
    size: Value,
    rem: Value,
}

impl RowBlocks {
    pub fn new(e: &mut Emit, rows: Value, mr: usize) -> RowBlocks {
        let count = e.b.ins().iadd_imm_s(rows, mr as i64 - 1);
        let count = e.b.ins().udiv_imm_u(count, mr as i64);
        let one = e.i(1);
        let div = e.b.ins().smax(count, one);
        let size = e.b.ins().udiv(rows, div);
        let used = e.b.ins().imul(size, div);
        let rem = e.b.ins().isub(rows, used);
        RowBlocks { count, size, rem }
    }

    /// The first row and the row count of block `rb`: the first `rem` blocks have a row more.
    pub fn block(&self, e: &mut Emit, rb: Value) -> (Value, Value) {
        let base = e.b.ins().imul(rb, self.size);
        let extra = e.b.ins().smin(rb, self.rem);
        let first = e.b.ins().iadd(base, extra);
        let longer = e.b.ins().icmp(IntCC::SignedLessThan, rb, self.rem);
        let longer = e.b.ins().uextend(types::I64, longer);
        let m = e.b.ins().iadd(self.size, longer);
        (first, m)
    }
}

/// Panels (of `PANEL` columns) per GEMM task.
pub const PANELS_PER_TASK: usize = 4;

/// One GEMM tile for `tile` functions: rows `a..` (`m` of them, stride `lda` bytes) times the
/// packed panel `bp`, into `c` (the panel's first column, stride `ldc`), `ncols` columns kept.
pub struct Tile {
    pub a: Value,
    pub c: Value,
    pub bp: Value,
    pub m: usize,
    pub ncols: usize,
    /// The residual tile (same stride as `c`) when the linear has a residual epilogue.
    pub res: Option<Value>,
    /// How the tile prefetches the next panel, if it does.
    pub prefetch: Option<Prefetch>,
}

/// A tile's share of the next panel to prefetch while it computes: from `addr`, advancing
/// `step` bytes at each step of k, when the i8 condition `when` holds (always without one).
#[derive(Clone, Copy)]
pub struct Prefetch {
    pub when: Option<Value>,
    pub addr: Value,
    pub step: Value,
}

/// Up to this many rows, a linear's task is one panel with all its row blocks (each weight is
/// read from memory once and used by every row while in cache); above, a task is one row block
/// of `PANELS_PER_TASK` panels.
pub const SMALL_ROWS: i64 = 64;

/// Whether a linear over `rows` rows uses the few-rows task order (an i8 condition).
fn few_rows(e: &mut Emit, rows: Value) -> Value {
    e.b.ins()
        .icmp_imm_s(IntCC::SignedLessThanOrEqual, rows, SMALL_ROWS)
}

/// The number of tasks of a linear step over `rows` rows (a runtime value).
pub fn linear_task_count(e: &mut Emit, rows: Value, n: usize, mr: usize) -> Value {
    let panels = n.div_ceil(PANEL) as i64;
    let chunks = n.div_ceil(PANEL).div_ceil(PANELS_PER_TASK) as i64;
    let rb = RowBlocks::new(e, rows, mr).count;
    let big = e.b.ins().imul_imm_s(rb, chunks);
    let small = e.i(panels);
    let few = few_rows(e, rows);
    e.b.ins().select(few, small, big)
}

/// How a linear's operands lie in memory for the task driver: bytes of an input row and of a
/// weight panel, and the panel bytes the kernels' k loop reads in one of its `steps` (what a
/// tile prefetches of the next panel a step).
#[derive(Clone, Copy)]
pub struct GemmGeom {
    pub lda: i64,
    pub panel_bytes: i64,
    pub step_bytes: i64,
    pub steps: i64,
}

impl GemmGeom {
    /// An f32 linear of depth `k` (`pack_linear`'s panels: a bias row, then `k` rows).
    pub fn f32(k: usize) -> GemmGeom {
        GemmGeom {
            lda: k as i64 * 4,
            panel_bytes: (PANEL * (k + 1) * 4) as i64,
            step_bytes: (PANEL * 4) as i64,
            steps: k as i64,
        }
    }

    /// An int8 linear of depth `k` over quantized rows (`pack_qlinear`'s panels, k in pairs).
    pub fn int8(k: usize) -> GemmGeom {
        GemmGeom {
            lda: crate::lower::quant_row_floats(k) as i64 * 4,
            panel_bytes: crate::lower::qpanel_bytes(k) as i64,
            step_bytes: (PANEL * 2) as i64,
            steps: k.div_ceil(2) as i64,
        }
    }
}

/// What a linear does to each output tile after the GEMM: an activation, then a residual add
/// (`residual` points to a tensor of the output's shape).
pub struct Epilogue {
    pub act: Option<Act>,
    pub residual: Option<Value>,
}

impl Epilogue {
    pub const NONE: Epilogue = Epilogue {
        act: None,
        residual: None,
    };
}

/// Applies the epilogue to `m` rows (a value) of `ncols` columns at `c` (row stride `ldc`).
fn epilogue(
    e: &mut Emit,
    epi: &Epilogue,
    c: Value,
    res: Option<Value>,
    m: Value,
    ncols: usize,
    ldc: i64,
) {
    if epi.act.is_none() && res.is_none() {
        return;
    }
    let z = e.i(0);
    e.for_range(z, m, 1, |e, i| {
        let crow = e.addr(c, i, ldc);
        let rrow = res.map(|r| e.addr(r, i, ldc));
        e.row(ncols, |e, off, s| {
            let ca = e.b.ins().iadd(crow, off);
            let mut v = e.load(s, ca, 0);
            if let Some(act) = epi.act {
                v = act_value(e, s, v, act);
            }
            if let Some(rr) = rrow {
                let ra = e.b.ins().iadd(rr, off);
                let r = e.load(s, ra, 0);
                v = e.b.ins().fadd(v, r);
            }
            e.store(v, ca, 0);
        });
    });
}

/// The GEMM task driver: task `t` is row block `t % nrb` (of `mr` rows) of panel chunk
/// `t / nrb`, or with at most `SMALL_ROWS` rows panel `t` with all its row blocks; `tile`
/// emits the code of one tile with a constant row count, and the epilogue runs on the tile
/// right after, unless `tile_epilogue` says that the tile applies it itself to full panels.
#[allow(clippy::too_many_arguments)]
pub fn linear_tasks(
    e: &mut Emit,
    [x, out, rows, packed]: [Value; 4],
    [begin, end]: [Value; 2],
    geom: &GemmGeom,
    n: usize,
    mr: usize,
    tile: &dyn Fn(&mut Emit, &Tile),
    epi: &Epilogue,
    tile_epilogue: bool,
) {
    let panels = n.div_ceil(PANEL);
    let last_cols = n - (panels - 1) * PANEL;
    let GemmGeom {
        lda,
        panel_bytes,
        step_bytes,
        steps,
    } = *geom;
    let ldc = n as i64 * 4;
    let blocks = RowBlocks::new(e, rows, mr);
    let nrb = blocks.count;
    // one tile: row block `rb` of panel `p`, then the epilogue unless the tile applied it.
    // With `spread` (the bytes a row block prefetches per step of k), the panel's row blocks
    // run one after another and each prefetches its share of the next panel (a `1 / nrb`
    // slice: the weights stream from memory during all of them); otherwise the first row
    // block prefetches the whole next panel.
    let tile_at = |e: &mut Emit, rb: Value, p: Value, spread: Option<Value>| {
        let (r, m) = blocks.block(e, rb);
        let a = e.addr(x, r, lda);
        let crow = e.addr(out, r, ldc);
        let bp = e.addr(packed, p, panel_bytes);
        let c = e.addr(crow, p, (PANEL * 4) as i64);
        let rc = epi.residual.map(|res| {
            let rr = e.addr(res, r, ldc);
            e.addr(rr, p, (PANEL * 4) as i64)
        });
        let next = e.b.ins().iadd_imm_s(bp, panel_bytes);
        let prefetch = if let Some(step) = spread {
            // from this block's slice
            let share = e.b.ins().imul_imm_s(step, steps);
            let addr = e.b.ins().imul(rb, share);
            let addr = e.b.ins().iadd(next, addr);
            Prefetch {
                when: None,
                addr,
                step,
            }
        } else {
            Prefetch {
                when: Some(e.b.ins().icmp_imm_s(IntCC::Equal, rb, 0)),
                addr: next,
                step: e.i(step_bytes),
            }
        };
        let rows_dispatch = |e: &mut Emit, ncols: usize| {
            for mm in (1..=mr).rev() {
                let is = e.b.ins().icmp_imm_s(IntCC::Equal, m, mm as i64);
                let t = Tile {
                    a,
                    c,
                    bp,
                    m: mm,
                    ncols,
                    res: rc,
                    prefetch: Some(prefetch),
                };
                e.if_nonzero(is, |e| tile(e, &t));
            }
            if !(tile_epilogue && ncols == PANEL) {
                epilogue(e, epi, c, rc, m, ncols, ldc);
            }
        };
        if last_cols == PANEL {
            rows_dispatch(e, PANEL);
        } else {
            let is_last = e.b.ins().icmp_imm_s(IntCC::Equal, p, panels as i64 - 1);
            e.if_else(
                is_last,
                |e| rows_dispatch(e, last_cols),
                |e| rows_dispatch(e, PANEL),
            );
        }
    };
    let few = few_rows(e, rows);
    e.if_else(
        few,
        |e| {
            // few rows: task t is panel t, all its row blocks in turn (the panel is read from
            // memory once, while the row blocks prefetch the next panel)
            // ceil(step_bytes / nrb) bytes a step (nrb >= 1: a task exists only with rows)
            let step = e.b.ins().iadd_imm_s(nrb, step_bytes - 1);
            let one = e.i(1);
            let div = e.b.ins().smax(nrb, one);
            let step = e.b.ins().udiv(step, div);
            e.for_range(begin, end, 1, |e, p| {
                let z = e.i(0);
                e.for_range(z, nrb, 1, |e, rb| tile_at(e, rb, p, Some(step)));
            });
        },
        |e| {
            // task t is row block t % nrb of panel chunk t / nrb: consecutive tasks share a
            // chunk, which stays in L2
            e.for_range(begin, end, 1, |e, t| {
                let chunk = e.b.ins().udiv(t, nrb);
                let cn = e.b.ins().imul(chunk, nrb);
                let rb = e.b.ins().isub(t, cn);
                let p0 = e.b.ins().imul_imm_s(chunk, PANELS_PER_TASK as i64);
                let p1 = e.b.ins().iadd_imm_s(p0, PANELS_PER_TASK as i64);
                let pn = e.i(panels as i64);
                let p1 = e.b.ins().smin(p1, pn);
                e.for_range(p0, p1, 1, |e, p| tile_at(e, rb, p, None));
            });
        },
    );
}

/// The portable (Cranelift vector) tile: 8-column halves of the panel.
pub fn portable_tile(e: &mut Emit, t: &Tile, k: usize, n: usize) {
    let half = 8usize.max(e.lanes);
    for col0 in (0..t.ncols).step_by(half) {
        let store = (t.ncols - col0).min(half);
        let cols = store.div_ceil(e.lanes) * e.lanes;
        gemm_tile(
            e,
            t.a,
            k as i64 * 4,
            t.bp,
            t.c,
            n as i64 * 4,
            k,
            t.m,
            col0,
            cols,
            store,
        );
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
            // 0.5 x (1 + erf(x/√2)) = 0.5 (x + |x| erf(|x|/√2)): no sign handling needed
            let ax = e.b.ins().fabs(v);
            let k = e.fs(s, std::f32::consts::FRAC_1_SQRT_2);
            let z = e.b.ins().fmul(ax, k);
            let er = e.erf_nonneg(s, z);
            let t = e.mul_add(ax, er, v);
            let half = e.fs(s, 0.5);
            e.b.ins().fmul(t, half)
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
        let y = act_value(e, s, v, act);
        let o = e.b.ins().iadd(out, off);
        e.store(y, o, 0);
    });
}

/// `out = a + b` over the rows of row-block tasks `begin..end`.
pub fn add(e: &mut Emit, [a, b, out, rows]: [Value; 4], [begin, end]: [Value; 2], width: usize) {
    let (r0, r1) = row_range(e, begin, end, rows);
    let base = e.b.ins().imul_imm_s(r0, width as i64 * 4);
    let a = e.b.ins().iadd(a, base);
    let b = e.b.ins().iadd(b, base);
    let out = e.b.ins().iadd(out, base);
    let nr = e.b.ins().isub(r1, r0);
    let n = e.b.ins().imul_imm_s(nr, width as i64);
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
    /// Row strides (floats) of q, k, v and the output.
    pub ldq: usize,
    pub ldk: usize,
    pub ldv: usize,
    pub ldo: usize,
    /// Widths of one head's q/k and v slices.
    pub dq: usize,
    pub dv: usize,
    pub scale: f32,
}

/// Multi-head attention for tasks `begin..end`, task `t` being head `t % heads` of sequence
/// `t / heads`: for each of the sequence's (packed) tokens, scores against every token of the
/// sequence, softmax, weighted sum of values. Each task has a scratch row of `seq` floats.
pub fn attention(
    e: &mut Emit,
    [q, k, v, out, seq_start, scratch, seq, _stride]: [Value; 8],
    [begin, end]: [Value; 2],
    a: &AttnShape,
) {
    e.for_range(begin, end, 1, |e, task| {
        let (h, s0, s1) = attention_task(e, task, seq_start, a.heads);
        let srow = e.b.ins().imul(task, seq);
        let srow = e.addr(scratch, srow, 4);
        // scratch[j - s0] for key j
        let sbase = e.b.ins().imul_imm_s(s0, 4);
        let sbase = e.b.ins().isub(srow, sbase);
        e.for_range(s0, s1, 1, |e, i| {
            let qrow = e.addr(q, i, a.ldq as i64 * 4);
            let qrow = e.addr(qrow, h, a.dq as i64 * 4);
            let minv = e.f(f32::MIN);
            let maxv = e.var(types::F32, minv);
            e.for_range(s0, s1, 1, |e, j| {
                let krow = e.addr(k, j, a.ldk as i64 * 4);
                let krow = e.addr(krow, h, a.dq as i64 * 4);
                let dot = e.row_sum(a.dq, |e, off, s| {
                    let pa = e.b.ins().iadd(qrow, off);
                    let pb = e.b.ins().iadd(krow, off);
                    let x = e.load(s, pa, 0);
                    let y = e.load(s, pb, 0);
                    e.b.ins().fmul(x, y)
                });
                let sc = e.f(a.scale);
                let sv = e.b.ins().fmul(dot, sc);
                let sa = e.addr(sbase, j, 4);
                e.b.ins().store(super::emit::mem(), sv, sa, 0);
                let cur = e.b.use_var(maxv);
                let nm = e.b.ins().fmax(cur, sv);
                e.b.def_var(maxv, nm);
            });
            let mx = e.b.use_var(maxv);
            // exponentials over the score row, vectorised
            let len = e.b.ins().isub(s1, s0);
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
            let orow = e.addr(out, i, a.ldo as i64 * 4);
            let orow = e.addr(orow, h, a.dv as i64 * 4);
            e.row(a.dv, |e, off, s| {
                let z = e.fs(s, 0.0);
                let oa = e.b.ins().iadd(orow, off);
                e.store(z, oa, 0);
            });
            e.for_range(s0, s1, 1, |e, j| {
                let sa = e.addr(sbase, j, 4);
                let p = e.b.ins().load(types::F32, super::emit::mem(), sa, 0);
                let p = e.b.ins().fmul(p, inv);
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
        e.row(width, |e, off, s| {
            let z = e.fs(s, 0.0);
            let o = e.b.ins().iadd(dst, off);
            e.store(z, o, 0);
        });
        let sa = e.addr(seq_start, bi, 4);
        let s0 = e.load_i32(sa, 0);
        let s1 = e.load_i32(sa, 4);
        e.for_range(s0, s1, 1, |e, r| {
            let src = e.addr(x, r, rowb);
            e.row(width, |e, off, s| {
                let a = e.b.ins().iadd(src, off);
                let v = e.load(s, a, 0);
                let o = e.b.ins().iadd(dst, off);
                let acc = e.load(s, o, 0);
                let y = e.b.ins().fadd(acc, v);
                e.store(y, o, 0);
            });
        });
        let n = e.b.ins().isub(s1, s0);
        let nf = e.b.ins().fcvt_from_sint(types::F32, n);
        let one = e.f(1.0);
        let c = e.b.ins().fmax(nf, one);
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

//! The linear step's task driver and its portable tile: tasks over row blocks and panels (two
//! orders, by the row count), the prefetch shares of the next panel, the even row blocks, the
//! epilogue after a tile, and the portable Cranelift GEMM tile the ISAs without microkernels
//! run. `GemmGeom` says where the operands lie, so one driver serves f32 and int8 panels.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};

use crate::emit::{Emit, Shape};
use crate::lower::{Act, PANEL};

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
                v = e.act(s, v, act);
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

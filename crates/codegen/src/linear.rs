//! The linear step's task driver and its portable tile: tasks over row blocks and panels (two
//! orders, by the row count), the prefetch shares of the next panel, the even row blocks, the
//! epilogue after a tile, and the portable Cranelift GEMM tile the ISAs without microkernels
//! run. `GemmGeom` says where the operands lie, so one driver serves f32 and int8 panels.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};

use crate::emit::{Emit, Shape};
use crate::lower::{Act, LinearWeights, PANEL};
use bertc_targets::Caches;

/// One tile of the portable GEMM: `mr` rows by `cols` columns (a multiple of the lane count
/// no larger than `PANEL`) of one panel starting at column `col0` of the panel, over `k`
/// steps; stores the first `store` columns. The accumulators start from the panel's bias row
/// or, with `accumulate`, from `c` (`bp` then points at the first step's row).
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
    [col0, cols, store]: [usize; 3],
    accumulate: bool,
) {
    let l = e.lanes;
    let nv = cols / l;
    let vt = e.vty();
    let kbase = if accumulate { 0 } else { PANEL };
    let mut acc = Vec::with_capacity(mr * nv);
    for i in 0..mr {
        for j in 0..nv {
            let first = j * l;
            let init = if !accumulate {
                e.load(Shape::Vector, bp, ((col0 + first) * 4) as i32)
            } else {
                let off = (i as i64 * ldc + ((col0 + first) * 4) as i64) as i32;
                if first + l <= store {
                    e.load(Shape::Vector, c, off)
                } else {
                    // the kept lanes only: the others lie past the row
                    let z = e.b.ins().f32const(0.0);
                    let mut v = e.splat(Shape::Vector, z);
                    for lane in 0..store.saturating_sub(first) {
                        let x = e.b.ins().load(
                            types::F32,
                            super::emit::mem(),
                            c,
                            off + lane as i32 * 4,
                        );
                        v = if l == 1 {
                            x
                        } else {
                            e.b.ins().insertlane(v, x, lane as u8)
                        };
                    }
                    v
                }
            };
            acc.push(e.var(vt, init));
        }
    }
    let z = e.i(0);
    let kend = e.i(k as i64);
    e.for_range(z, kend, 1, |e, kk| {
        let brow = e.b.ins().imul_imm_s(kk, (PANEL * 4) as i64);
        let brow = e.b.ins().iadd(bp, brow);
        let bv: Vec<Value> = (0..nv)
            .map(|j| e.load(Shape::Vector, brow, ((kbase + col0 + j * l) * 4) as i32))
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

/// One GEMM tile for `tile` functions: rows `a..` (`m` of them, stride `lda` bytes) times the
/// packed panel `bp`, into `c` (the panel's first column, stride `ldc`), `ncols` columns kept.
/// With k split in blocks (`Blocking::kblocks > 1`), a tile is one k block: `a` and `bp`
/// point at the block's first step.
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
    /// The k block the tile runs.
    pub block: KBlock,
}

/// One k block of a linear's tiles.
#[derive(Clone, Copy)]
pub struct KBlock {
    /// Its steps of k.
    pub steps: usize,
    /// Whether the accumulators start from the output (a later k block: the panel pointer is
    /// at the block's first step) rather than from the panel's biases (the pointer at the
    /// panel).
    pub accumulate: bool,
    /// Whether this is the last k block, the one that applies the epilogue.
    pub last: bool,
}

impl KBlock {
    /// All `steps` of k in one block.
    pub fn whole(steps: usize) -> KBlock {
        KBlock {
            steps,
            accumulate: false,
            last: true,
        }
    }
}

/// A tile's share of the next panel to prefetch while it computes: from `addr`, advancing
/// `step` bytes at each step of k, when the i8 condition `when` holds (always without one).
#[derive(Clone, Copy)]
pub struct Prefetch {
    pub when: Option<Value>,
    pub addr: Value,
    pub step: Value,
}

/// Panels of a task above `SMALL_ROWS` rows (a chunk).
pub const PANELS_PER_TASK: usize = 4;

/// How a linear's tasks block the GEMM for the target's caches. Above `SMALL_ROWS` rows a
/// task is one row block by a chunk of panels: the row block's rows (`mr` of them, one k
/// block) stay in L1 while the chunk's panels stream past from L2. The row blocks are taken
/// in groups whose rows stay in L2 while each chunk of panels passes over them, so that the
/// weights are read from the shared L3 (or memory) once per group, and the tasks are
/// numbered group-major, chunk-major, so that the threads work on the same group and share
/// its chunk in L3. k is split in blocks when a row block's rows exceed twice L1: the later
/// blocks' tiles start from the output's partial sums, the last applies the epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// Row blocks (of up to `mr` rows) in a group.
    pub group: usize,
    /// Steps of k in a k block (the last may be shorter): all of them when k is not split.
    pub kc: usize,
    /// The k blocks (`ceil(steps / kc)`).
    pub kblocks: usize,
}

impl Blocking {
    /// The blocking of a linear of `geom` with tiles of `mr` rows for `caches`. A row block's
    /// rows (one k block of them) stay in L1 while the task's panels stream past from L2; k
    /// is split when they exceed twice L1, if `split_k` (the kernels can start from a partial
    /// sum in the output). Measured here (L1d 32 KiB): splitting MiniLM's FFN down (k = 1536,
    /// a 36 KiB row block) in three cost 10% at 128 rows and gained nothing beyond noise at
    /// 4096, so k that deep stays whole; BERT-large's (k = 4096) is split. A group's rows
    /// stay in half of L2 while every chunk of panels passes over them.
    pub fn new(caches: &Caches, geom: &GemmGeom, mr: usize, split_k: bool) -> Blocking {
        let steps = (geom.steps as usize).max(1);
        let block = mr * steps * geom.a_step as usize;
        let kblocks = if split_k {
            block.div_ceil(caches.l1d * 2).max(1)
        } else {
            1
        };
        let kc = steps.div_ceil(kblocks);
        let kblocks = steps.div_ceil(kc);
        let group = (caches.l2 / 2 / (geom.lda as usize * mr).max(1)).max(1);
        Blocking { group, kc, kblocks }
    }
}

impl Blocking {
    /// The blocking of a linear of depth `k` on `weights` with tiles of `mr` rows whose
    /// kernels start from a partial sum if `accumulates` (k is never split for int8).
    pub fn for_linear(
        caches: &Caches,
        weights: LinearWeights,
        k: usize,
        mr: usize,
        accumulates: bool,
    ) -> Blocking {
        let split = accumulates && weights == LinearWeights::F32;
        Blocking::new(caches, &GemmGeom::of(weights, k), mr, split)
    }
}

/// The number of tasks of a linear step over `rows` rows (a runtime value).
pub fn linear_task_count(e: &mut Emit, rows: Value, n: usize, mr: usize) -> Value {
    let panels = n.div_ceil(PANEL) as i64;
    let chunks = n.div_ceil(PANEL).div_ceil(PANELS_PER_TASK) as i64;
    let nrb = RowBlocks::new(e, rows, mr).count;
    let big = e.b.ins().imul_imm_s(nrb, chunks);
    let small = e.i(panels);
    let few = few_rows(e, rows);
    e.b.ins().select(few, small, big)
}

/// Up to this many rows, a linear's task is one panel with all its row blocks (each weight is
/// read from memory once and used by every row while in cache).
pub const SMALL_ROWS: i64 = 64;

/// Whether a linear over `rows` rows uses the few-rows task order (an i8 condition).
fn few_rows(e: &mut Emit, rows: Value) -> Value {
    e.b.ins()
        .icmp_imm_s(IntCC::SignedLessThanOrEqual, rows, SMALL_ROWS)
}

/// How a linear's operands lie in memory for the task driver: bytes of an input row and of a
/// weight panel, and the panel bytes the kernels' k loop reads in one of its `steps` (what a
/// tile prefetches of the next panel a step); the bytes of a row a step reads, and of the
/// panel's header before its first step.
#[derive(Clone, Copy)]
pub struct GemmGeom {
    pub lda: i64,
    pub panel_bytes: i64,
    pub step_bytes: i64,
    pub steps: i64,
    pub a_step: i64,
    pub header: i64,
}

impl GemmGeom {
    /// A linear of depth `k` on `weights`.
    pub fn of(weights: LinearWeights, k: usize) -> GemmGeom {
        match weights {
            LinearWeights::F32 => GemmGeom::f32(k),
            LinearWeights::Int8(format) => GemmGeom::int8(k, format),
        }
    }

    /// An f32 linear of depth `k` (`pack_linear`'s panels: a bias row, then `k` rows).
    pub fn f32(k: usize) -> GemmGeom {
        GemmGeom {
            lda: k as i64 * 4,
            panel_bytes: (PANEL * (k + 1) * 4) as i64,
            step_bytes: (PANEL * 4) as i64,
            steps: k as i64,
            a_step: 4,
            header: (PANEL * 4) as i64,
        }
    }

    /// An int8 linear of depth `k` over quantized rows (`pack_qlinear`'s panels, a step a
    /// group of k in `format`).
    pub fn int8(k: usize, format: crate::lower::QFormat) -> GemmGeom {
        let group = format.group();
        GemmGeom {
            lda: crate::lower::quant_row_floats(k, format) as i64 * 4,
            panel_bytes: crate::lower::qpanel_bytes(k, format) as i64,
            step_bytes: (PANEL * group) as i64,
            steps: k.div_ceil(group) as i64,
            a_step: 4,
            header: crate::lower::QPANEL_HEADER as i64,
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

/// Which tiles a linear's `tile` function runs, besides one panel's.
#[derive(Clone, Copy)]
pub struct TileKinds {
    /// The tiles of full panels apply the epilogue themselves (in the last k block).
    pub fused: bool,
    /// It also runs tiles of two adjacent full panels (`Tile::ncols` = `2 PANEL`).
    pub pairs: bool,
}

impl TileKinds {
    /// The portable tiles: one panel, the epilogue after them.
    pub const PORTABLE: TileKinds = TileKinds {
        fused: false,
        pairs: false,
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

/// The GEMM task driver (see `Blocking`). With at most `SMALL_ROWS` rows, task `t` is panel
/// `t` with all its row blocks, which each prefetch a share of the panel's next k block (or
/// the next panel); with more, row block `rb` of panel chunk `c` of row group `g` (numbered
/// group-major, then chunk-major), whose first row block prefetches the next panel; the
/// chunk's full panels in pairs if `how.pairs` (two-panel tiles). For each k block, the
/// task's tiles; `tile` emits the code of one tile with a constant row count, and the
/// epilogue runs on the tile of the last k block, unless `how.fused` says that the tile
/// applies it itself to full panels.
#[allow(clippy::too_many_arguments)]
pub fn linear_tasks(
    e: &mut Emit,
    [x, out, rows, packed]: [Value; 4],
    [begin, end]: [Value; 2],
    geom: &GemmGeom,
    n: usize,
    mr: usize,
    bl: &Blocking,
    tile: &dyn Fn(&mut Emit, &Tile),
    epi: &Epilogue,
    how: TileKinds,
) {
    let panels = n.div_ceil(PANEL);
    let last_cols = n - (panels - 1) * PANEL;
    let chunks = panels.div_ceil(PANELS_PER_TASK) as i64;
    let GemmGeom {
        lda,
        panel_bytes,
        step_bytes,
        steps,
        a_step,
        header,
    } = *geom;
    let ldc = n as i64 * 4;
    let blocks = RowBlocks::new(e, rows, mr);
    let nrb = blocks.count;
    // where k block `kb` of panel `p` starts (the panel itself for the first)
    let slice = |e: &mut Emit, p: Value, kb: Value| {
        let bp = e.addr(packed, p, panel_bytes);
        let off = e.b.ins().imul_imm_s(kb, bl.kc as i64 * step_bytes);
        let off = e.b.ins().iadd_imm_s(off, header);
        let first = e.b.ins().icmp_imm_s(IntCC::Equal, kb, 0);
        let z = e.i(0);
        let off = e.b.ins().select(first, z, off);
        e.b.ins().iadd(bp, off)
    };
    // the k block to stream after block `kb` of panel `p` in a task of panels p0..p1: the
    // next panel's, after the last panel the first one's next block, after the last block
    // the next task's first panel
    let next_slice = |e: &mut Emit, p: Value, kb: Value, [p0, p1]: [Value; 2]| {
        let pn = e.b.ins().iadd_imm_s(p, 1);
        let kb1 = e.b.ins().iadd_imm_s(kb, 1);
        let in_chunk = e.b.ins().icmp(IntCC::SignedLessThan, pn, p1);
        let more_k =
            e.b.ins()
                .icmp_imm_s(IntCC::SignedLessThan, kb1, bl.kblocks as i64);
        let wrap_p = e.b.ins().select(more_k, p0, p1);
        let z = e.i(0);
        let wrap_k = e.b.ins().select(more_k, kb1, z);
        let np = e.b.ins().select(in_chunk, pn, wrap_p);
        let nk = e.b.ins().select(in_chunk, kb, wrap_k);
        slice(e, np, nk)
    };
    // one tile: row block `rb` of panel `p` (and `p + 1` if `two`), k block `kb` (`block`),
    // prefetching with `pf` (its address the start of the block's share), then the epilogue
    // unless the tile applied it
    let tile_at =
        |e: &mut Emit, [rb, p, kb]: [Value; 3], pf: Prefetch, block: KBlock, two: bool| {
            let (r, m) = blocks.block(e, rb);
            let a = e.addr(x, r, lda);
            let ka = e.b.ins().imul_imm_s(kb, bl.kc as i64 * a_step);
            let a = e.b.ins().iadd(a, ka);
            let crow = e.addr(out, r, ldc);
            let bp = slice(e, p, kb);
            let c = e.addr(crow, p, (PANEL * 4) as i64);
            let rc = epi.residual.map(|res| {
                let rr = e.addr(res, r, ldc);
                e.addr(rr, p, (PANEL * 4) as i64)
            });
            let rows_dispatch = |e: &mut Emit, ncols: usize| {
                e.dispatch_rows(m, mr, |e, mm| {
                    let t = Tile {
                        a,
                        c,
                        bp,
                        m: mm,
                        ncols,
                        res: rc,
                        prefetch: Some(pf),
                        block,
                    };
                    tile(e, &t);
                });
                if block.last && !(how.fused && ncols % PANEL == 0) {
                    epilogue(e, epi, c, rc, m, ncols, ldc);
                }
            };
            if two {
                rows_dispatch(e, 2 * PANEL);
            } else if last_cols == PANEL {
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
    // the tiles of the k blocks: the first starts from the biases, the later ones from the
    // output; the last applies the epilogue
    let kind = |steps: usize, accumulate: bool, last: bool| KBlock {
        steps,
        accumulate,
        last,
    };
    let total = steps as usize;
    let last_steps = total - (bl.kblocks - 1) * bl.kc;
    let k_blocks = |e: &mut Emit, body: &dyn Fn(&mut Emit, Value, KBlock)| {
        let z = e.i(0);
        if bl.kblocks == 1 {
            body(e, z, KBlock::whole(total));
        } else {
            body(e, z, kind(bl.kc, false, false));
            if bl.kblocks > 2 {
                let one = e.i(1);
                let mid = e.i(bl.kblocks as i64 - 1);
                e.for_range(one, mid, 1, |e, kb| body(e, kb, kind(bl.kc, true, false)));
            }
            let lastkb = e.i(bl.kblocks as i64 - 1);
            body(e, lastkb, kind(last_steps, true, true));
        }
    };
    let few = few_rows(e, rows);
    e.if_else(
        few,
        |e| {
            // few rows: task t is panel t, all its row blocks in turn (the panel is read from
            // memory once, while the row blocks prefetch the next k block in shares of
            // ceil(step_bytes / nrb) bytes a step; nrb >= 1: a task exists only with rows)
            let step = e.b.ins().iadd_imm_s(nrb, step_bytes - 1);
            let one = e.i(1);
            let div = e.b.ins().smax(nrb, one);
            let step = e.b.ins().udiv(step, div);
            e.for_range(begin, end, 1, |e, p| {
                let p1 = e.b.ins().iadd_imm_s(p, 1);
                k_blocks(e, &|e, kb, block| {
                    let next = next_slice(e, p, kb, [p, p1]);
                    let share = e.b.ins().imul_imm_s(step, block.steps as i64);
                    let z = e.i(0);
                    e.for_range(z, nrb, 1, |e, rb| {
                        let off = e.b.ins().imul(rb, share);
                        let pf = Prefetch {
                            when: None,
                            addr: e.b.ins().iadd(next, off),
                            step,
                        };
                        tile_at(e, [rb, p, kb], pf, block, false);
                    });
                });
            });
        },
        |e| {
            // task t: row block rb of chunk c of group g; the group's tasks start at
            // chunks * (its first row block)
            let gsize = e.i(bl.group as i64);
            e.for_range(begin, end, 1, |e, t| {
                let g = e.b.ins().udiv_imm_u(t, chunks * bl.group as i64);
                let rbg = e.b.ins().imul_imm_s(g, bl.group as i64);
                let local = e.b.ins().imul_imm_s(rbg, chunks);
                let local = e.b.ins().isub(t, local);
                let left = e.b.ins().isub(nrb, rbg);
                let nb = e.b.ins().smin(left, gsize);
                let c = e.b.ins().udiv(local, nb);
                let cn = e.b.ins().imul(c, nb);
                let rb = e.b.ins().isub(local, cn);
                let first = e.b.ins().icmp_imm_s(IntCC::Equal, rb, 0);
                let rb = e.b.ins().iadd(rbg, rb);
                let p0 = e.b.ins().imul_imm_s(c, PANELS_PER_TASK as i64);
                let p1 = e.b.ins().iadd_imm_s(p0, PANELS_PER_TASK as i64);
                let pn = e.i(panels as i64);
                let p1 = e.b.ins().smin(p1, pn);
                // the group's first row block prefetches the next panel (or pair, after `p`)
                let one = |e: &mut Emit, p: Value, after: Value, kb: Value, block, two| {
                    let pf = Prefetch {
                        when: Some(first),
                        addr: next_slice(e, after, kb, [p0, p1]),
                        step: e.i(step_bytes),
                    };
                    tile_at(e, [rb, p, kb], pf, block, two);
                };
                k_blocks(e, &|e, kb, block| {
                    if !how.pairs {
                        e.for_range(p0, p1, 1, |e, p| one(e, p, p, kb, block, false));
                        return;
                    }
                    // pairs of full panels; a last odd or partial panel alone
                    let full = if last_cols == PANEL {
                        panels
                    } else {
                        panels - 1
                    };
                    let full = e.i(full as i64);
                    let full = e.b.ins().smin(p1, full);
                    e.for_range(p0, p1, 2, |e, p| {
                        let q = e.b.ins().iadd_imm_s(p, 1);
                        let pair = e.b.ins().icmp(IntCC::SignedLessThan, q, full);
                        e.if_else(
                            pair,
                            |e| one(e, p, q, kb, block, true),
                            |e| {
                                one(e, p, p, kb, block, false);
                                let more = e.b.ins().icmp(IntCC::SignedLessThan, q, p1);
                                e.if_nonzero(more, |e| one(e, q, q, kb, block, false));
                            },
                        );
                    });
                });
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
            t.block.steps,
            t.m,
            [col0, cols, store],
            t.block.accumulate,
        );
    }
}

//! The GEMM driver's tiles: a linear step's tasks through the ISA's registered microkernels
//! where it has them (straight into the output for full panels, with the epilogue in
//! registers; through a stack tile for a partial last panel), the portable Cranelift tiles
//! elsewhere.

use cranelift_codegen::ir::{types, InstBuilder, StackSlot, StackSlotData, StackSlotKind, Value};

use crate::emit::{self, Emit};
use crate::isa::{self, Isa};
use crate::linear;
use crate::lower::{LinearWeights, QFormat, PANEL};
use crate::micro::{AsmRefs, TileSet};
use crate::qkernels;

/// A linear step's tasks on `weights`: the ISA's microkernel tiles where it registers them
/// for the weights' dtype and layout, portable Cranelift tiles elsewhere, then the epilogue.
#[allow(clippy::too_many_arguments)]
pub(crate) fn emit_linear(
    e: &mut Emit,
    args: [Value; 4],
    range: [Value; 2],
    k: usize,
    n: usize,
    weights: LinearWeights,
    isa: &Isa,
    micro: &AsmRefs,
    epi: &linear::Epilogue,
) {
    let geom = linear::GemmGeom::of(weights, k);
    let mr = isa.mr(weights.dtype(), weights.layout());
    let bl = isa.linear_blocking(weights, k);
    if isa.gemm(weights.dtype(), weights.layout()).is_some() {
        // full panels run the epilogue in the microkernel's registers
        let fused = !micro.start.fused.is_empty();
        let st = stack_tile(e);
        let tile = |e: &mut Emit, t: &linear::Tile| micro_tile(e, t, &geom, n, micro, fused, st);
        let pairs = !micro.wide_start.plain.is_empty();
        let how = linear::TileKinds { fused, pairs };
        linear::linear_tasks(e, args, range, &geom, n, mr, &bl, &tile, epi, how);
    } else if let LinearWeights::Int8(format) = weights {
        // an ISA chooses fours only with its kernels for them (`Isa::int8_format`)
        assert_eq!(format, QFormat::Pairs, "no portable tile reads k in fours");
        let (pairs, lda, ldc) = (k.div_ceil(2), geom.lda, n as i64 * 4);
        let tile = |e: &mut Emit, t: &linear::Tile| qkernels::portable_qtile(e, t, pairs, lda, ldc);
        let how = linear::TileKinds::PORTABLE;
        linear::linear_tasks(e, args, range, &geom, n, mr, &bl, &tile, epi, how);
    } else {
        let tile = |e: &mut Emit, t: &linear::Tile| linear::portable_tile(e, t, k, n);
        let how = linear::TileKinds::PORTABLE;
        linear::linear_tasks(e, args, range, &geom, n, mr, &bl, &tile, epi, how);
    }
}

/// The number of tasks of a linear step on `weights` over `rows` rows (a runtime value), as
/// `emit_linear` runs them.
pub(crate) fn linear_task_count(
    e: &mut Emit,
    rows: Value,
    n: usize,
    weights: LinearWeights,
    isa: &Isa,
) -> Value {
    let mr = isa.mr(weights.dtype(), weights.layout());
    linear::linear_task_count(e, rows, n, mr)
}

/// One tile through the microkernels: straight into the output for a full panel or two (with
/// the epilogue in registers when `fused` and the tile is the last k block), through a stack
/// tile for a partial last panel; a later k block's tile starts from the output.
pub(crate) fn micro_tile(
    e: &mut Emit,
    t: &linear::Tile,
    geom: &linear::GemmGeom,
    n: usize,
    micro: &AsmRefs,
    fused: bool,
    stack: StackSlot,
) {
    let lda = e.i(geom.lda);
    let ldc = e.i(n as i64 * 4);
    let kk = e.i(t.block.steps as i64);
    let wide = t.ncols == 2 * PANEL;
    let set = match (t.block.accumulate, wide) {
        (false, false) => &micro.start,
        (true, false) => &micro.acc,
        (false, true) => &micro.wide_start,
        (true, true) => &micro.wide_acc,
    };
    let fused = fused && t.block.last;
    // a two-panel tile's last argument: where the second panel is
    let second = wide.then(|| e.i(geom.panel_bytes));
    if t.ncols == PANEL || wide {
        // tiles that prefetch (a share of) the next panel run the prefetching variant
        let (with, without) = if fused {
            (&set.fused_pf, &set.fused)
        } else {
            (&set.plain_pf, &set.plain)
        };
        let mut args = vec![t.a, lda, t.bp, t.c, ldc, kk];
        if fused {
            args.extend(t.res);
        }
        let mut pf_args = args.clone();
        args.extend(second);
        let plain = |e: &mut Emit| {
            e.b.ins().call(without[t.m - 1], &args);
        };
        match t.prefetch {
            Some(pf) if !with.is_empty() => {
                pf_args.extend([pf.addr, pf.step]);
                pf_args.extend(second);
                let prefetching = |e: &mut Emit| {
                    e.b.ins().call(with[t.m - 1], &pf_args);
                };
                match pf.when {
                    Some(cond) => e.if_else(cond, prefetching, plain),
                    None => prefetching(e),
                }
            }
            _ => plain(e),
        }
        return;
    }
    micro_tile_ld(e, t, lda, kk, ldc, set, stack);
}

/// The stack tile a partial panel's microkernel writes (see `micro_tile_ld`): one a function,
/// shared by all its tiles.
pub(crate) fn stack_tile(e: &mut Emit) -> StackSlot {
    e.b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        (isa::MAX_GEMM_MR * PANEL * 4) as u32,
        6,
    ))
}

/// One tile through the plain microkernels of `set` with runtime strides and depth (`lda`,
/// `k` and `ldc` are values): a partial panel through the stack tile `tile`
/// (`stack_tile`), which a later k block's tile first fills with the output's columns (zeros
/// past them).
pub(crate) fn micro_tile_ld(
    e: &mut Emit,
    t: &linear::Tile,
    lda: Value,
    k: Value,
    ldc: Value,
    set: &TileSet,
    tile: StackSlot,
) {
    if t.ncols == PANEL {
        e.b.ins()
            .call(set.plain[t.m - 1], &[t.a, lda, t.bp, t.c, ldc, k]);
        return;
    }
    let tp = e.b.ins().stack_addr(types::I64, tile, 0);
    let tld = e.i((PANEL * 4) as i64);
    if t.block.accumulate {
        let zero = e.b.ins().f32const(0.0);
        for i in 0..t.m {
            let row = e.b.ins().imul_imm_s(ldc, i as i64);
            let row = e.b.ins().iadd(t.c, row);
            for j in 0..PANEL {
                let v = if j < t.ncols {
                    e.b.ins().load(types::F32, emit::mem(), row, (j * 4) as i32)
                } else {
                    zero
                };
                e.b.ins()
                    .store(emit::mem(), v, tp, ((i * PANEL + j) * 4) as i32);
            }
        }
    }
    e.b.ins()
        .call(set.plain[t.m - 1], &[t.a, lda, t.bp, tp, tld, k]);
    for i in 0..t.m {
        let row = e.b.ins().imul_imm_s(ldc, i as i64);
        let row = e.b.ins().iadd(t.c, row);
        for j in 0..t.ncols {
            let v =
                e.b.ins()
                    .stack_load(types::I64, types::F32, tile, ((i * PANEL + j) * 4) as i32);
            e.b.ins().store(emit::mem(), v, row, (j * 4) as i32);
        }
    }
}

//! The GEMM driver's tiles: a linear step's tasks through the ISA's registered microkernels
//! where it has them (straight into the output for full panels, with the epilogue in
//! registers; through a stack tile for a partial last panel), the portable Cranelift tiles
//! elsewhere.

use cranelift_codegen::ir::{types, InstBuilder, StackSlotData, StackSlotKind, Value};

use crate::emit::{self, Emit};
use crate::isa::{self, Isa};
use crate::linear;
use crate::lower::{LayoutKind, PANEL};
use crate::micro::AsmRefs;
use crate::qkernels;
use bertc_ir::DType;

/// A linear step's tasks (f32, or int8 over quantized rows when `int8`): the ISA's
/// microkernel tiles where it registers them for the weights' dtype and layout, portable
/// Cranelift tiles elsewhere, then the epilogue.
#[allow(clippy::too_many_arguments)]
pub(crate) fn emit_linear(
    e: &mut Emit,
    args: [Value; 4],
    range: [Value; 2],
    k: usize,
    n: usize,
    int8: bool,
    isa: &Isa,
    micro: &AsmRefs,
    epi: &linear::Epilogue,
) {
    let (dtype, layout, geom) = if int8 {
        (DType::I8, LayoutKind::QPanels, linear::GemmGeom::int8(k))
    } else {
        (DType::F32, LayoutKind::Panels, linear::GemmGeom::f32(k))
    };
    let mr = isa.mr(dtype, layout);
    if isa.gemm(dtype, layout).is_some() {
        // full panels run the epilogue in the microkernel's registers
        let fused = !micro.fused.is_empty();
        let tile = |e: &mut Emit, t: &linear::Tile| micro_tile(e, t, &geom, n, micro, fused);
        linear::linear_tasks(e, args, range, &geom, n, mr, &tile, epi, fused);
    } else if int8 {
        let (pairs, lda, ldc) = (k.div_ceil(2), geom.lda, n as i64 * 4);
        let tile = |e: &mut Emit, t: &linear::Tile| qkernels::portable_qtile(e, t, pairs, lda, ldc);
        linear::linear_tasks(e, args, range, &geom, n, mr, &tile, epi, false);
    } else {
        let tile = |e: &mut Emit, t: &linear::Tile| linear::portable_tile(e, t, k, n);
        linear::linear_tasks(e, args, range, &geom, n, mr, &tile, epi, false);
    }
}

/// One tile through the AVX2 microkernels: straight into the output for a full panel (with
/// the epilogue in registers when `fused`), through a stack tile for a partial last panel.
pub(crate) fn micro_tile(
    e: &mut Emit,
    t: &linear::Tile,
    geom: &linear::GemmGeom,
    n: usize,
    micro: &AsmRefs,
    fused: bool,
) {
    let lda = e.i(geom.lda);
    let ldc = e.i(n as i64 * 4);
    let kk = e.i(geom.steps);
    if t.ncols == PANEL {
        // tiles that prefetch (a share of) the next panel run the prefetching variant
        let (with, without) = if fused {
            (&micro.fused_pf, &micro.fused)
        } else {
            (&micro.plain_pf, &micro.plain)
        };
        let mut args = vec![t.a, lda, t.bp, t.c, ldc, kk];
        if fused {
            args.extend(t.res);
        }
        let plain = |e: &mut Emit| {
            e.b.ins().call(without[t.m - 1], &args);
        };
        match t.prefetch {
            Some(pf) if !with.is_empty() => {
                let mut pf_args = args.clone();
                pf_args.extend([pf.addr, pf.step]);
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
    micro_tile_ld(e, t, lda, kk, ldc, micro);
}

/// Like `avx2_tile` with runtime strides and depth: `lda`, `k` and `ldc` are values.
pub(crate) fn micro_tile_ld(
    e: &mut Emit,
    t: &linear::Tile,
    lda: Value,
    k: Value,
    ldc: Value,
    micro: &AsmRefs,
) {
    if t.ncols == PANEL {
        e.b.ins()
            .call(micro.plain[t.m - 1], &[t.a, lda, t.bp, t.c, ldc, k]);
        return;
    }
    let tile = e.b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        (isa::MAX_GEMM_MR * PANEL * 4) as u32,
        6,
    ));
    let tp = e.b.ins().stack_addr(types::I64, tile, 0);
    let tld = e.i((PANEL * 4) as i64);
    e.b.ins()
        .call(micro.plain[t.m - 1], &[t.a, lda, t.bp, tp, tld, k]);
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

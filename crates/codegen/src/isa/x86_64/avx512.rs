//! The AVX-512 GEMM microkernels (12 x 16 tiles), for targets with avx512f: f32 with FMA, and
//! int8 with AVX512-VNNI's `vpdpbusd`; their epilogue runs the AVX2 activation's operations
//! on whole zmm accumulators (`act16`).

use iced_x86::code_asm::*;

use super::{act16, function, k_loop, prefetch_args, Consts, MicroEpi};
use crate::lower::{CodegenError, QFormat, QPANEL_HEADER};

/// Rows of the AVX-512 GEMM microkernels' tiles.
pub const AVX512_MR: usize = 12;

/// The accumulators, one a row (EVEX-only registers, so that the epilogue's VEX code has
/// ymm0..ymm15 to itself).
const ACC: [AsmRegisterZmm; AVX512_MR] = [
    zmm16, zmm17, zmm18, zmm19, zmm20, zmm21, zmm22, zmm23, zmm24, zmm25, zmm26, zmm27,
];

/// The accumulators of a two-panel tile's second panel: the four EVEX-only registers left,
/// then zmm4..zmm11, which the epilogue does not touch (it uses ymm0, ymm1 and ymm12..ymm15).
const ACC2: [AsmRegisterZmm; AVX512_MR] = [
    zmm28, zmm29, zmm30, zmm31, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11,
];

/// The accumulator sets of a tile: one panel's, or two (`MicroEpi::wide`).
fn tile_accs(epi: MicroEpi) -> &'static [&'static [AsmRegisterZmm; AVX512_MR]] {
    if epi.wide {
        &[&ACC, &ACC2]
    } else {
        &[&ACC]
    }
}

/// The panel rows a step of k loads into (two sets, alternating between steps: a panel's in
/// the first of a set, the second panel's in the other), and the registers a two-panel tile
/// broadcasts each row's value into (alternating between rows).
const BREGS: [[AsmRegisterZmm; 2]; 2] = [[zmm0, zmm1], [zmm2, zmm3]];
const BCAST: [AsmRegisterZmm; 2] = [zmm12, zmm13];

/// Panel `j`'s bytes at `off` from the current step: the second panel of a two-panel tile is
/// `r8` bytes after the first (see `second_panel`).
fn panel(j: usize, off: i32) -> AsmMemoryOperand {
    match j {
        0 => rdx + off,
        _ => rdx + r8 + off,
    }
}

/// For a two-panel tile: `ldc` (r8) into the red zone and the second panel's offset (the last
/// argument) into r8 for the k loop; with `done`, `ldc` back. Nothing for one panel.
fn second_panel(a: &mut CodeAssembler, epi: MicroEpi, done: bool) -> Result<(), IcedError> {
    if !epi.wide {
        return Ok(());
    }
    if done {
        return a.mov(r8, qword_ptr(rsp - 16));
    }
    let offset_arg = 8 + 8 * i32::from(epi.residual) + 16 * i32::from(epi.prefetch);
    a.mov(qword_ptr(rsp - 16), r8)?;
    a.mov(r8, qword_ptr(rsp + offset_arg))
}

/// Row `r` of a tile at byte `off`: row `r` is at base `r / 3` plus `r % 3` strides.
fn row(bases: &[AsmRegister64; 4], stride: AsmRegister64, r: usize, off: i32) -> AsmMemoryOperand {
    let b = bases[r / 3];
    match r % 3 {
        0 => b + off,
        1 => b + stride + off,
        _ => b + stride * 2 + off,
    }
}

/// The A bases rdi, r10, r11, rcx (three rows each, stride rsi): sets them up from rdi,
/// saving rcx (the output) in the red zone when a fourth base needs it.
fn a_bases(a: &mut CodeAssembler, mr: usize) -> Result<[AsmRegister64; 4], IcedError> {
    let abase = [rdi, r10, r11, rcx];
    let nbases = mr.div_ceil(3);
    if nbases == 4 {
        a.mov(qword_ptr(rsp - 8), rcx)?;
    }
    for j in 1..nbases {
        a.lea(abase[j], ptr(abase[j - 1] + rsi * 2))?;
        a.add(abase[j], rsi)?;
    }
    Ok(abase)
}

/// Restores rcx (the output) after `a_bases` when it was the fourth base.
fn restore_c(a: &mut CodeAssembler, mr: usize) -> Result<(), IcedError> {
    if mr.div_ceil(3) == 4 {
        a.mov(rcx, qword_ptr(rsp - 8))?;
    }
    Ok(())
}

/// The end of the kernels: the activation and the residual add on the f32 tile in the
/// accumulators (`accs`: a set a panel, 16 columns each), then the store to `c` (`rcx`,
/// stride `r8`; the residual tile at the 7th argument, same stride).
fn store_tile(
    a: &mut CodeAssembler,
    consts: &mut Consts,
    epi: MicroEpi,
    mr: usize,
    accs: &[&[AsmRegisterZmm; AVX512_MR]],
) -> Result<(), IcedError> {
    let nbases = mr.div_ceil(3);
    // C bases rcx, rsi, rdi, r9 (stride r8); residual bases rax, r10, r11, rdx
    let cbase = [rcx, rsi, rdi, r9];
    for j in 1..nbases {
        a.lea(cbase[j], ptr(cbase[j - 1] + r8 * 2))?;
        a.add(cbase[j], r8)?;
    }
    if epi.act.is_none() && !epi.residual {
        for (j, acc) in accs.iter().enumerate() {
            for (r, acc_r) in acc.iter().enumerate().take(mr) {
                a.vmovups(zmmword_ptr(row(&cbase, r8, r, 64 * j as i32)), *acc_r)?;
            }
        }
        return Ok(());
    }
    let rbase = [rax, r10, r11, rdx];
    if epi.residual {
        a.mov(rax, qword_ptr(rsp + 8))?;
        for j in 1..nbases {
            a.lea(rbase[j], ptr(rbase[j - 1] + r8 * 2))?;
            a.add(rbase[j], r8)?;
        }
    }
    for (r, j) in (0..mr).flat_map(|r| (0..accs.len()).map(move |j| (r, j))) {
        let acc_r = accs[j][r];
        let off = 64 * j as i32;
        if let Some(act) = epi.act {
            act16(a, consts, act, acc_r, [zmm12, zmm13, zmm14, zmm15])?;
        }
        if epi.residual {
            a.vaddps(acc_r, acc_r, zmmword_ptr(row(&rbase, r8, r, off)))?;
        }
        a.vmovups(zmmword_ptr(row(&cbase, r8, r, off)), acc_r)?;
    }
    Ok(())
}

/// The int8 GEMM microkernel for AVX512-VNNI on k in fours: `kernel(a, lda, bp, c, ldc,
/// quads[, res][, pf, pf_step])` over rows quantized in fours (`QFormat::Quads`: `4 quads`
/// signed bytes, then `-128 Σ xq` as i32, then the f32 scale) and one panel in fours
/// (`pack_qlinear`: 16 biases, 16 scales, then for each four of k the 16 columns' `w + 128`
/// as unsigned bytes). An `mr x 16` tile (`mr <= AVX512_MR`), one zmm accumulator a row: each
/// four of k is one load of the panel's 64 bytes and, for each row, one `vpdpbusd` of them
/// with the row's four bytes broadcast from memory (`{1to16}`), which adds the four products
/// `(w + 128) xq` to each column's i32 without saturating (at most 255 · 127 a product:
/// lowering keeps fours to depths up to `QUADS_MAX_K`, 66311, where the sums fit). Adding the row's `-128 Σ xq` leaves `Σ w xq`, the sum
/// the pair kernels compute; then `fma(f32(acc), s_row · s_col, bias)`, the epilogue and the
/// store as in the f32 kernel. With `MicroEpi::wide`, an `mr x 32` tile over two panels as
/// the f32 kernel's: each row's four bytes broadcast once into a register for both panels'
/// `vpdpbusd`.
pub fn avx512vnni_qkernel(mr: usize, epi: MicroEpi) -> Result<Vec<u8>, CodegenError> {
    qkernel(mr, epi, QFormat::Quads)
}

/// The int8 GEMM microkernel for AVX512-VNNI on k in pairs (rows of up to 16-bit integers,
/// `QFormat::Pairs`): as `avx512vnni_qkernel`, each pair of k one `vpmovsxbw` of the panel's
/// 32 bytes to 16-bit words and, for each row, one `vpdpwssd` with the row's pair broadcast
/// (exact i32 sums, as `avx2_qkernel`'s `vpmaddwd`), no sum term.
pub fn avx512vnni_pairs_qkernel(mr: usize, epi: MicroEpi) -> Result<Vec<u8>, CodegenError> {
    qkernel(mr, epi, QFormat::Pairs)
}

/// `acc += b · x` on k in `format`'s groups: `vpdpbusd` (fours) or `vpdpwssd` (pairs), with
/// `x` a register or a broadcast memory operand.
fn dot<X>(
    a: &mut CodeAssembler,
    format: QFormat,
    [acc, b]: [AsmRegisterZmm; 2],
    x: X,
) -> Result<(), IcedError>
where
    CodeAssembler: asm_traits::CodeAsmVpdpbusd<AsmRegisterZmm, AsmRegisterZmm, X>
        + asm_traits::CodeAsmVpdpwssd<AsmRegisterZmm, AsmRegisterZmm, X>,
{
    match format {
        QFormat::Quads => a.vpdpbusd(acc, b, x),
        QFormat::Pairs => a.vpdpwssd(acc, b, x),
        QFormat::Octs => unreachable!("no x86 tile reads k in eights"),
    }
}

fn qkernel(mr: usize, epi: MicroEpi, format: QFormat) -> Result<Vec<u8>, CodegenError> {
    assert!((1..=AVX512_MR).contains(&mr), "mr out of range");
    assert!(
        !epi.accumulate,
        "the int8 tiles start from the biases (k is never split)"
    );
    // one panel, or two (`MicroEpi::wide`), each row's bytes then broadcast once into a
    // register for both
    let accs = tile_accs(epi);
    let step = (16 * format.group()) as i32;
    function(|a, consts| {
        let pf_step = prefetch_args(a, epi)?;
        second_panel(a, epi, false)?;
        // the panels' headers (biases, scales), read after the k loop
        a.mov(qword_ptr(rsp - 24), rdx)?;
        a.add(rdx, QPANEL_HEADER as i32)?;
        for acc in accs.iter().flat_map(|s| s.iter().take(mr)) {
            a.vpxord(*acc, *acc, *acc)?;
        }
        let abase = a_bases(a, mr)?;
        let nbases = mr.div_ceil(3);
        k_loop(
            a,
            epi.prefetch.then_some(pf_step),
            &abase[..nbases],
            [step, 4],
            |a, u| {
                let b = BREGS[u as usize % 2];
                for (j, &bj) in b.iter().enumerate().take(accs.len()) {
                    match format {
                        QFormat::Quads => a.vmovdqu32(bj, zmmword_ptr(panel(j, step * u)))?,
                        QFormat::Pairs => a.vpmovsxbw(bj, ymmword_ptr(panel(j, step * u)))?,
                        QFormat::Octs => unreachable!("no x86 tile reads k in eights"),
                    }
                }
                if epi.wide && epi.prefetch {
                    a.prefetcht0(byte_ptr(rax + r8))?;
                }
                for r in 0..mr {
                    let at = row(&abase, rsi, r, 4 * u);
                    if epi.wide {
                        let x = BCAST[r % 2];
                        a.vpbroadcastd(x, dword_ptr(at))?;
                        dot(a, format, [ACC[r], b[0]], x)?;
                        dot(a, format, [ACC2[r], b[1]], x)?;
                    } else {
                        dot(a, format, [ACC[r], b[0]], dword_bcst(at))?;
                    }
                }
                Ok(())
            },
        )?;
        // each panel's biases and scales
        let (bias, scales, t) = ([zmm0, zmm2], [zmm1, zmm3], zmm12);
        a.mov(r9, qword_ptr(rsp - 24))?;
        for j in 0..accs.len() {
            let at = |off: i32| match j {
                0 => r9 + off,
                _ => r9 + r8 + off,
            };
            a.vmovups(bias[j], zmmword_ptr(at(0)))?;
            a.vmovups(scales[j], zmmword_ptr(at(64)))?;
        }
        // the A bases now point at each row's sum term (fours), then its scale
        let scale_at = 4 * i32::from(format.has_sum_term());
        for r in 0..mr {
            for (j, acc) in accs.iter().enumerate() {
                if format == QFormat::Quads {
                    a.vpaddd(acc[r], acc[r], dword_bcst(row(&abase, rsi, r, 0)))?;
                }
                a.vcvtdq2ps(acc[r], acc[r])?;
                a.vmulps(t, scales[j], dword_bcst(row(&abase, rsi, r, scale_at)))?;
                a.vfmadd213ps(acc[r], t, bias[j])?;
            }
        }
        restore_c(a, mr)?;
        second_panel(a, epi, true)?;
        store_tile(a, consts, epi, mr, accs)
    })
}

/// The GEMM microkernel for AVX-512 (AVX512F, with AVX2 and FMA for the epilogue): an
/// `mr x 16` tile (`mr <= AVX512_MR`) with one zmm accumulator a row, the same arguments,
/// panel layout, epilogues and starts (the biases or the output) as [`avx2_kernel`]. Each step of k loads the panel row once
/// and multiplies it by each row's `a` broadcast from memory (`{1to16}`), so a step is `mr`
/// FMAs for `mr + 1` loads. The accumulators are zmm16..zmm27 (EVEX only), so that the
/// epilogue can run the AVX2 activation code on each half (ymm0, ymm1) with ymm12..ymm15 as
/// scratch. Rows are addressed from up to four base registers, three rows each (base,
/// base + stride, base + 2 stride); the fourth A base is rcx, kept in the red zone meanwhile.
///
/// With `MicroEpi::wide`, an `mr x 32` tile over a panel and the one the last argument's bytes
/// after it, two accumulators a row (`ACC`, `ACC2`): each step loads both panels' rows and
/// broadcasts each row's `a` once into a register for its two FMAs, `2 mr` FMAs for `mr + 2`
/// loads (the two-load-a-cycle core is then bound by its FMAs, not its loads). Each column's
/// sum is added in the same order as in the one-panel tile, so both give the same bits.
pub fn avx512_kernel(mr: usize, epi: MicroEpi) -> Result<Vec<u8>, CodegenError> {
    assert!((1..=AVX512_MR).contains(&mr), "mr out of range");
    let accs = tile_accs(epi);
    function(|a, consts| {
        let pf_step = prefetch_args(a, epi)?;
        if epi.accumulate {
            load_partial_sums(a, mr, accs)?;
        } else {
            prefetch_tiles(a, epi, mr, accs.len())?;
        }
        second_panel(a, epi, false)?;
        if !epi.accumulate {
            // each panel's bias row starts its accumulators
            for r in 0..mr {
                for (j, acc) in accs.iter().enumerate() {
                    a.vmovups(acc[r], zmmword_ptr(panel(j, 0)))?;
                }
            }
            a.add(rdx, 64)?;
        }
        let abase = a_bases(a, mr)?;
        let nbases = mr.div_ceil(3);
        k_loop(
            a,
            epi.prefetch.then_some(pf_step),
            &abase[..nbases],
            [64, 4],
            |a, u| {
                let b = BREGS[u as usize % 2];
                for (j, &bj) in b.iter().enumerate().take(accs.len()) {
                    a.vmovups(bj, zmmword_ptr(panel(j, 64 * u)))?;
                }
                if epi.wide && epi.prefetch {
                    // the second panel's line of the step k_loop prefetches in the first
                    a.prefetcht0(byte_ptr(rax + r8))?;
                }
                for r in 0..mr {
                    let at = row(&abase, rsi, r, 4 * u);
                    if epi.wide {
                        let x = BCAST[r % 2];
                        a.vbroadcastss(x, dword_ptr(at))?;
                        a.vfmadd231ps(ACC[r], b[0], x)?;
                        a.vfmadd231ps(ACC2[r], b[1], x)?;
                    } else {
                        a.vfmadd231ps(ACC[r], b[0], dword_bcst(at))?;
                    }
                }
                Ok(())
            },
        )?;
        restore_c(a, mr)?;
        second_panel(a, epi, true)?;
        store_tile(a, consts, epi, mr, accs)
    })
}

/// Requests the output tile's lines for writing (and the residual tile's for reading) before
/// the k loop, so that their misses (the activations of a chunk do not all stay in cache while
/// the weights stream past) overlap the loop instead of stalling the stores at its end: `lines`
/// 64-byte lines a row (one a panel), rows from rcx (and the residual argument) by r8.
fn prefetch_tiles(
    a: &mut CodeAssembler,
    epi: MicroEpi,
    mr: usize,
    lines: usize,
) -> Result<(), IcedError> {
    a.mov(r10, rcx)?;
    if epi.residual {
        a.mov(r11, qword_ptr(rsp + 8))?;
    }
    for r in 0..mr {
        for l in 0..lines as i32 {
            a.prefetchw(byte_ptr(r10 + 64 * l))?;
            if epi.residual {
                a.prefetcht0(byte_ptr(r11 + 64 * l))?;
            }
        }
        if r + 1 < mr {
            a.add(r10, r8)?;
            if epi.residual {
                a.add(r11, r8)?;
            }
        }
    }
    Ok(())
}

/// Loads a tile's accumulators from the output tile (the partial sums of earlier k blocks):
/// for each set in `accs`, 16 columns further.
fn load_partial_sums(
    a: &mut CodeAssembler,
    mr: usize,
    accs: &[&[AsmRegisterZmm; AVX512_MR]],
) -> Result<(), IcedError> {
    // rows 3 j.. from r10 = c + 3 j ldc
    for r in 0..mr {
        let base = match r / 3 {
            0 => rcx,
            _ => r10,
        };
        if r % 3 == 0 && r > 0 {
            let from = if r == 3 { rcx } else { r10 };
            a.lea(r10, ptr(from + r8 * 2))?;
            a.add(r10, r8)?;
        }
        for (j, acc) in accs.iter().enumerate() {
            let off = 64 * j as i32;
            let at = match r % 3 {
                0 => base + off,
                1 => base + r8 + off,
                _ => base + r8 * 2 + off,
            };
            a.vmovups(acc[r], zmmword_ptr(at))?;
        }
    }
    Ok(())
}

/// `x = exp(x)` on 16 lanes, as `exp8` computes it on 8 (the same operations and constants,
/// broadcast from the constant table), with `t1` and `t2` as scratch.
pub(super) fn exp16(
    a: &mut CodeAssembler,
    k: &mut Consts,
    x: AsmRegisterZmm,
    t1: AsmRegisterZmm,
    t2: AsmRegisterZmm,
) -> Result<(), IcedError> {
    use bertc_numerics::{EXP_HI, EXP_LN2_HI, EXP_LN2_LO, EXP_LO, EXP_MAGIC};
    let lo = k.fb(a, EXP_LO);
    a.vmaxps(x, x, lo)?;
    let hi = k.fb(a, EXP_HI);
    a.vminps(x, x, hi)?;
    let magic = k.fb(a, EXP_MAGIC);
    let magic1 = k.f1(a, EXP_MAGIC);
    a.vbroadcastss(t1, magic1)?;
    let log2e = k.fb(a, std::f32::consts::LOG2_E);
    a.vfmadd231ps(t1, x, log2e)?;
    a.vsubps(t2, t1, magic)?;
    let ln2_hi = k.fb(a, EXP_LN2_HI);
    a.vfmadd231ps(x, t2, ln2_hi)?;
    let ln2_lo = k.fb(a, EXP_LN2_LO);
    a.vfmadd231ps(x, t2, ln2_lo)?;
    // 2^n: bits(t) = bits(magic) + n, and bits(magic) << 23 vanishes mod 2^32
    a.vpslld(t1, t1, 23)?;
    let one_bits = k.bcst(a, 127 << 23);
    a.vpaddd(t1, t1, one_bits)?;
    let c = bertc_numerics::EXP_TAYLOR;
    let c0 = k.f1(a, c[0]);
    a.vbroadcastss(t2, c0)?;
    for &cv in &c[1..] {
        let m = k.fb(a, cv);
        a.vfmadd213ps(t2, x, m)?;
    }
    a.vmulps(x, t2, t1)?;
    Ok(())
}

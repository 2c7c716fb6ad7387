//! The AVX2 + FMA kernels: the 6 x 16 GEMM microkernel with its epilogues, the row quantizer
//! of int8 linears, and the FMA peak loop `bertc bench --gemm` measures against (the row
//! kernels, softmax and layer norm, are in `rows.rs`).

use iced_x86::code_asm::*;

use super::{act8, asm_err, function, hreduce, k_loop, prefetch_args, Consts, MicroEpi};
use crate::lower::{CodegenError, QFormat, QPANEL_HEADER};

/// Rows of the AVX2 GEMM microkernel's tile.
pub const AVX2_MR: usize = 6;

const ACC: [AsmRegisterYmm; 12] = [
    ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11,
];

/// Row `r` (0 to 5) of a tile at byte `off`: rows 0-2 from `lo`, 3-5 from `hi` (`lo` + 3
/// strides), stride `stride`.
fn tile_row(
    [lo, hi]: [AsmRegister64; 2],
    stride: AsmRegister64,
    r: usize,
    off: i32,
) -> AsmMemoryOperand {
    let base = if r < 3 { lo } else { hi };
    match r % 3 {
        0 => base + off,
        1 => base + stride + off,
        _ => base + stride * 2 + off,
    }
}

/// Row `r` of `a` (rows 0-2 from `rdi`, 3-5 from `r10`, stride `rsi`), one f32.
fn a_row(r: usize, off: i32) -> AsmMemoryOperand {
    dword_ptr(tile_row([rdi, r10], rsi, r, off))
}

/// Row `r` of the output tile (rows 0-2 from `rcx`, 3-5 from `r11`, stride `r8`), 8 f32.
fn c_row(r: usize, off: i32) -> AsmMemoryOperand {
    ymmword_ptr(tile_row([rcx, r11], r8, r, off))
}

/// The k loop of both microkernels over rows 0-2 (`rdi`) and 3-5 (`r10`), the panel at `rdx`
/// advancing `b_step` bytes and the rows `a_step` a step, prefetching with `epi.prefetch`.
fn tile_loop(
    a: &mut CodeAssembler,
    epi: MicroEpi,
    steps: [i32; 2],
    step: impl FnMut(&mut CodeAssembler, i32) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    a.lea(r10, ptr(rdi + rsi * 2))?;
    a.add(r10, rsi)?;
    // rax: the prefetch address, advanced by the step at `pf_step`
    let pf_step = prefetch_args(a, epi)?;
    k_loop(a, epi.prefetch.then_some(pf_step), &[rdi, r10], steps, step)
}

/// The end of both microkernels: the activation and the residual add on the f32 tile in
/// `ymm0..ymm(2 mr)`, then the store to `c` (`rcx`, stride `r8`).
fn epilogue_store(
    a: &mut CodeAssembler,
    consts: &mut Consts,
    epi: MicroEpi,
    mr: usize,
) -> Result<(), IcedError> {
    let y = ACC;
    let dst = c_row;
    a.lea(r11, ptr(rcx + r8 * 2))?;
    a.add(r11, r8)?;
    if let Some(act) = epi.act {
        for acc in y.iter().take(2 * mr) {
            act8(a, consts, act, *acc, [ymm12, ymm13, ymm14, ymm15])?;
        }
    }
    if epi.residual {
        // the residual tile: rax (rows 0-2) and r10 (rows 3-5), stride r8
        a.mov(rax, qword_ptr(rsp + 8))?;
        a.lea(r10, ptr(rax + r8 * 2))?;
        a.add(r10, r8)?;
        let res = |r: usize, off: i32| ymmword_ptr(tile_row([rax, r10], r8, r, off));
        for r in 0..mr {
            a.vaddps(y[2 * r], y[2 * r], res(r, 0))?;
            a.vaddps(y[2 * r + 1], y[2 * r + 1], res(r, 32))?;
        }
    }
    for r in 0..mr {
        a.vmovups(dst(r, 0), y[2 * r])?;
        a.vmovups(dst(r, 32), y[2 * r + 1])?;
    }
    Ok(())
}

/// The AVX2 + FMA microkernel for `mr` rows (1 to 6) with epilogue `epi`, its accumulators
/// starting from the panel's bias row or (`epi.accumulate`) from the output tile.
pub fn avx2_kernel(mr: usize, epi: MicroEpi) -> Result<Vec<u8>, CodegenError> {
    assert!((1..=AVX2_MR).contains(&mr), "mr out of range");
    let y = ACC;
    function(|a, consts| {
        if epi.accumulate {
            // the partial sums in the output tile (rows 3-5 from r11 = c + 3 ldc)
            a.lea(r11, ptr(rcx + r8 * 2))?;
            a.add(r11, r8)?;
            for r in 0..mr {
                a.vmovups(y[2 * r], c_row(r, 0))?;
                a.vmovups(y[2 * r + 1], c_row(r, 32))?;
            }
        } else {
            for r in 0..mr {
                a.vmovups(y[2 * r], ymmword_ptr(rdx))?;
                a.vmovups(y[2 * r + 1], ymmword_ptr(rdx + 32))?;
            }
            a.add(rdx, 64)?;
        }
        tile_loop(a, epi, [64, 4], |a, u| {
            a.vmovups(ymm12, ymmword_ptr(rdx + 64 * u))?;
            a.vmovups(ymm13, ymmword_ptr(rdx + 64 * u + 32))?;
            for r in 0..mr {
                a.vbroadcastss(ymm14, a_row(r, 4 * u))?;
                a.vfmadd231ps(y[2 * r], ymm12, ymm14)?;
                a.vfmadd231ps(y[2 * r + 1], ymm13, ymm14)?;
            }
            Ok(())
        })?;
        epilogue_store(a, consts, epi, mr)
    })
}

/// The AVX2 int8 microkernel for `mr` rows (1 to 6) with epilogue `epi`:
/// `kernel(a, lda, bp, c, ldc, pairs[, res][, pf, pf_step])` over quantized rows (`pairs`
/// pairs of i16 integers, then the row's f32 scale) and one int8 panel (`pack_qlinear`: 16
/// biases, 16 scales, then 16 columns x 2 bytes a pair). Each pair of k is one `vpmaddwd` of
/// the row's two integers (broadcast) with 8 columns' two weights (sign-extended to 16 bits
/// by `vpmovsxbw`): products and pair sums exact in i32, never saturating (a pair of 8-bit
/// activations and int8 weights adds at most 2 · 127 · 128 = 32512, so any depth below 2^17
/// sums exactly). Then `fma(f32(acc), s_row · s_col, bias)`, the epilogue and the store as
/// in the f32 kernel.
pub fn avx2_qkernel(mr: usize, epi: MicroEpi) -> Result<Vec<u8>, CodegenError> {
    qkernel(mr, epi, QFormat::Pairs)
}

/// The AVX-VNNI int8 microkernel (the VEX `vpdpbusd` on ymm, without AVX-512) for `mr` rows
/// (1 to 6): `avx2_qkernel` over rows and a panel in fours (`QFormat::Quads`, as
/// `avx512vnni_qkernel` reads them: signed activation bytes, weights as `w + 128`): each four
/// of k is the panel's 64 bytes in two registers and, for each row, its four bytes broadcast
/// and two `vpdpbusd` (no saturation: the products go straight to the i32 sums), then the
/// row's `-128 Σ xq` added and the same dequantization and epilogue.
pub fn avxvnni_qkernel(mr: usize, epi: MicroEpi) -> Result<Vec<u8>, CodegenError> {
    qkernel(mr, epi, QFormat::Quads)
}

fn qkernel(mr: usize, epi: MicroEpi, format: QFormat) -> Result<Vec<u8>, CodegenError> {
    assert!((1..=AVX2_MR).contains(&mr), "mr out of range");
    assert!(
        !epi.accumulate,
        "the int8 tiles start from the biases (k is never split)"
    );
    let y = ACC;
    function(|a, consts| {
        for acc in y.iter().take(2 * mr) {
            a.vpxor(*acc, *acc, *acc)?;
        }
        // r11: the panel's biases and scales; rdx: its weights
        a.mov(r11, rdx)?;
        a.add(rdx, QPANEL_HEADER as i32)?;
        let quads = format == QFormat::Quads;
        let step = 16 * format.group() as i32;
        tile_loop(a, epi, [step, 4], |a, u| {
            if quads {
                a.vmovdqu(ymm12, ymmword_ptr(rdx + step * u))?;
                a.vmovdqu(ymm13, ymmword_ptr(rdx + step * u + 32))?;
            } else {
                a.vpmovsxbw(ymm12, xmmword_ptr(rdx + step * u))?;
                a.vpmovsxbw(ymm13, xmmword_ptr(rdx + step * u + 16))?;
            }
            for r in 0..mr {
                a.vpbroadcastd(ymm14, a_row(r, 4 * u))?;
                if quads {
                    a.vpdpbusd(y[2 * r], ymm12, ymm14)?;
                    a.vpdpbusd(y[2 * r + 1], ymm13, ymm14)?;
                } else {
                    a.vpmaddwd(ymm15, ymm14, ymm12)?;
                    a.vpaddd(y[2 * r], y[2 * r], ymm15)?;
                    a.vpmaddwd(ymm15, ymm14, ymm13)?;
                    a.vpaddd(y[2 * r + 1], y[2 * r + 1], ymm15)?;
                }
            }
            Ok(())
        })?;
        // rdi and r10 now point at the rows' scales (fours: at their sum terms, then scales)
        let scale_at = if quads { 4 } else { 0 };
        for r in 0..mr {
            if quads {
                a.vpbroadcastd(ymm14, a_row(r, 0))?;
                a.vpaddd(y[2 * r], y[2 * r], ymm14)?;
                a.vpaddd(y[2 * r + 1], y[2 * r + 1], ymm14)?;
            }
            a.vbroadcastss(ymm14, a_row(r, scale_at))?;
            a.vmulps(ymm12, ymm14, ymmword_ptr(r11 + 64))?;
            a.vmulps(ymm13, ymm14, ymmword_ptr(r11 + 96))?;
            a.vcvtdq2ps(y[2 * r], y[2 * r])?;
            a.vfmadd213ps(y[2 * r], ymm12, ymmword_ptr(r11))?;
            a.vcvtdq2ps(y[2 * r + 1], y[2 * r + 1])?;
            a.vfmadd213ps(y[2 * r + 1], ymm13, ymmword_ptr(r11 + 32))?;
        }
        epilogue_store(a, consts, epi, mr)
    })
}

/// `quantize(x, out, rows, k, ldx, ldo)`: quantizes `rows` rows of `k` f32 (stride `ldx`
/// bytes) to `abits`-bit integers as `Op::QLinear` defines it, into rows of stride `ldo`
/// bytes in `format`: `Pairs`, the integers as i16, a zero pad to an even count, then the f32
/// scale at byte `4 ceil(k / 2)`; `Quads`, the integers as i8, a zero pad to a multiple of 4,
/// then `-128 · Σ xq` as i32 and the scale. With `smooth`, a 7th argument points at `k`
/// multipliers and each row is `x · m` (in f32) from the start. `amax = max |x|`; a row whose `amax` is 0,
/// infinite or NaN gets zeros (and sum term) and scale 0; else `xq = round_ne(clamp(x · (q /
/// amax), -q, q))` (`vroundps`, whatever the caller's rounding mode), scale `amax / q`.
pub fn avx2_quantize(abits: u8, format: QFormat, smooth: bool) -> Result<Vec<u8>, CodegenError> {
    quantize(abits, format, smooth, false)
}

/// [`avx2_quantize`] with its two passes on zmm first (16 and 32 values at a time; the ymm
/// loops and the scalar ones take what is left), for AVX-512 targets (F and BW): the same
/// operations on each value (`vrndscaleps` rounds as `vroundps`, `vpmovsdb`/`vpmovsdw` never
/// saturate values within `±q`), so the same bytes.
pub fn avx512_quantize(abits: u8, format: QFormat, smooth: bool) -> Result<Vec<u8>, CodegenError> {
    quantize(abits, format, smooth, true)
}

fn quantize(abits: u8, format: QFormat, smooth: bool, zmm: bool) -> Result<Vec<u8>, CodegenError> {
    let q = ((1i32 << (abits - 1)) - 1) as f32;
    let quads = format == QFormat::Quads;
    function(|a, k| {
        if smooth {
            // rbx (callee-saved): the multipliers, the 7th argument
            a.push(rbx)?;
            a.mov(rbx, qword_ptr(rsp + 16))?;
        }
        let mut done = a.create_label();
        let mut row = a.create_label();
        a.test(rdx, rdx)?;
        a.jz(done)?;
        // r10 = k & !7, r11 = k & !15, rcx = k
        a.set_label(&mut row)?;
        a.mov(r10, rcx)?;
        a.and(r10, -8)?;
        // pass 1: max |x| (ymm0) and whether any is NaN (ymm1)
        a.vxorps(ymm0, ymm0, ymm0)?;
        a.vxorps(ymm1, ymm1, ymm1)?;
        let abs = k.bits(a, 0x7fff_ffff);
        a.vmovups(ymm7, abs)?;
        a.xor(eax, eax)?;
        let mut bad = a.create_label();
        if zmm {
            // 16 at a time (rax = k & !15 after), k3 whether any is NaN
            let (mut top, mut done) = (a.create_label(), a.create_label());
            a.kxorw(k3, k3, k3)?;
            a.mov(r11, rcx)?;
            a.and(r11, -16)?;
            a.set_label(&mut top)?;
            a.cmp(rax, r11)?;
            a.jge(done)?;
            a.vmovups(zmm2, zmmword_ptr(rdi + rax * 4))?;
            if smooth {
                a.vmulps(zmm2, zmm2, zmmword_ptr(rbx + rax * 4))?;
            }
            let abs = k.bcst(a, 0x7fff_ffff);
            a.vandps(zmm2, zmm2, abs)?;
            a.vcmpunordps(k2, zmm2, zmm2)?;
            a.korw(k3, k3, k2)?;
            a.vmaxps(zmm0, zmm0, zmm2)?;
            a.add(rax, 16)?;
            a.jmp(top)?;
            a.set_label(&mut done)?;
            a.kortestw(k3, k3)?;
            a.jnz(bad)?;
            a.vextractf64x4(ymm2, zmm0, 1)?;
            a.vmaxps(ymm0, ymm0, ymm2)?;
        }
        let mut l1 = a.create_label();
        let mut t1 = a.create_label();
        a.set_label(&mut l1)?;
        a.cmp(rax, r10)?;
        a.jge(t1)?;
        if smooth {
            a.vmovups(ymm2, ymmword_ptr(rdi + rax * 4))?;
            a.vmulps(ymm2, ymm2, ymmword_ptr(rbx + rax * 4))?;
            a.vandps(ymm2, ymm2, ymm7)?;
        } else {
            a.vandps(ymm2, ymm7, ymmword_ptr(rdi + rax * 4))?;
        }
        a.vcmpunordps(ymm3, ymm2, ymm2)?;
        a.vorps(ymm1, ymm1, ymm3)?;
        a.vmaxps(ymm0, ymm0, ymm2)?;
        a.add(rax, 8)?;
        a.jmp(l1)?;
        a.set_label(&mut t1)?;
        a.vptest(ymm1, ymm1)?;
        a.jnz(bad)?;
        hreduce(a, ymm0, ymm1, true)?;
        // the scalar tail (VEX.128 scalars: ymm0's upper half is no longer needed)
        let mut l1s = a.create_label();
        let mut t1s = a.create_label();
        a.set_label(&mut l1s)?;
        a.cmp(rax, rcx)?;
        a.jge(t1s)?;
        if smooth {
            a.vmovss(xmm2, dword_ptr(rdi + rax * 4))?;
            a.vmulss(xmm2, xmm2, dword_ptr(rbx + rax * 4))?;
            a.vandps(xmm2, xmm2, xmm7)?;
        } else {
            a.vandps(xmm2, xmm7, xmmword_ptr(rdi + rax * 4))?;
        }
        a.vucomiss(xmm2, xmm2)?;
        a.jp(bad)?;
        a.vmaxss(xmm0, xmm0, xmm2)?;
        a.inc(rax)?;
        a.jmp(l1s)?;
        a.set_label(&mut t1s)?;
        // usable: 0 < amax < inf
        a.vxorps(xmm1, xmm1, xmm1)?;
        a.vucomiss(xmm0, xmm1)?;
        a.jbe(bad)?;
        let inf = k.f1(a, f32::INFINITY);
        a.vucomiss(xmm0, inf)?;
        a.jae(bad)?;
        let qs = k.f1(a, q);
        a.vmovss(xmm3, qs)?;
        a.vdivss(xmm3, xmm3, xmm0)?; // inv = q / amax
        a.vdivss(xmm4, xmm0, qs)?; // scale = amax / q
        if zmm {
            // the same values in every lane of the zmm registers, for both loops
            a.vbroadcastss(zmm3, xmm3)?;
            let (qs, mqs) = (k.f1(a, q), k.f1(a, -q));
            a.vbroadcastss(zmm8, qs)?;
            a.vbroadcastss(zmm9, mqs)?;
        } else {
            a.vbroadcastss(ymm3, xmm3)?;
            let qv = k.f(a, q);
            let mq = k.f(a, -q);
            a.vmovups(ymm8, qv)?;
            a.vmovups(ymm9, mq)?;
        }
        // ymm10: the row's integer sum (quads)
        a.vpxor(ymm10, ymm10, ymm10)?;
        // pass 2: 32 at a time on zmm, 16 at a time, then single elements
        a.xor(eax, eax)?;
        if zmm {
            let (mut top, mut done) = (a.create_label(), a.create_label());
            a.mov(r11, rcx)?;
            a.and(r11, -32)?;
            a.set_label(&mut top)?;
            a.cmp(rax, r11)?;
            a.jge(done)?;
            if smooth {
                for (z, off) in [(zmm5, 0), (zmm6, 64)] {
                    a.vmovups(z, zmmword_ptr(rdi + rax * 4 + off))?;
                    a.vmulps(z, z, zmmword_ptr(rbx + rax * 4 + off))?;
                    a.vmulps(z, z, zmm3)?;
                }
            } else {
                a.vmulps(zmm5, zmm3, zmmword_ptr(rdi + rax * 4))?;
                a.vmulps(zmm6, zmm3, zmmword_ptr(rdi + rax * 4 + 64))?;
            }
            for z in [zmm5, zmm6] {
                a.vminps(z, z, zmm8)?;
                a.vmaxps(z, z, zmm9)?;
                a.vrndscaleps(z, z, 8)?;
                a.vcvttps2dq(z, z)?;
                if quads {
                    a.vpaddd(zmm10, zmm10, z)?;
                }
            }
            if quads {
                a.vpmovsdb(xmmword_ptr(rsi + rax), zmm5)?;
                a.vpmovsdb(xmmword_ptr(rsi + rax + 16), zmm6)?;
            } else {
                a.vpmovsdw(ymmword_ptr(rsi + rax * 2), zmm5)?;
                a.vpmovsdw(ymmword_ptr(rsi + rax * 2 + 32), zmm6)?;
            }
            a.add(rax, 32)?;
            a.jmp(top)?;
            a.set_label(&mut done)?;
            if quads {
                a.vextracti64x4(ymm11, zmm10, 1)?;
                a.vpaddd(ymm10, ymm10, ymm11)?;
            }
        }
        a.mov(r11, rcx)?;
        a.and(r11, -16)?;
        let mut l2 = a.create_label();
        let mut l2s = a.create_label();
        let mut t2s = a.create_label();
        a.set_label(&mut l2)?;
        a.cmp(rax, r11)?;
        a.jge(l2s)?;
        if smooth {
            // (x · m) · inv, the interpreter's order
            for (y, off) in [(ymm5, 0), (ymm6, 32)] {
                a.vmovups(y, ymmword_ptr(rdi + rax * 4 + off))?;
                a.vmulps(y, y, ymmword_ptr(rbx + rax * 4 + off))?;
                a.vmulps(y, y, ymm3)?;
            }
        } else {
            a.vmulps(ymm5, ymm3, ymmword_ptr(rdi + rax * 4))?;
            a.vmulps(ymm6, ymm3, ymmword_ptr(rdi + rax * 4 + 32))?;
        }
        for y in [ymm5, ymm6] {
            a.vminps(y, y, ymm8)?;
            a.vmaxps(y, y, ymm9)?;
            a.vroundps(y, y, 8)?;
            a.vcvttps2dq(y, y)?;
            if quads {
                a.vpaddd(ymm10, ymm10, y)?;
            }
        }
        a.vpackssdw(ymm5, ymm5, ymm6)?;
        a.vpermq(ymm5, ymm5, 0xd8)?;
        if quads {
            a.vextracti128(xmm6, ymm5, 1)?;
            a.vpacksswb(xmm5, xmm5, xmm6)?;
            a.vmovdqu(xmmword_ptr(rsi + rax), xmm5)?;
        } else {
            a.vmovdqu(ymmword_ptr(rsi + rax * 2), ymm5)?;
        }
        a.add(rax, 16)?;
        a.jmp(l2)?;
        a.set_label(&mut l2s)?;
        if quads {
            // the vector sums into xmm10's first lane (VEX.128 from here: the scalar tail
            // adds into that lane)
            a.vextracti128(xmm11, ymm10, 1)?;
            a.vpaddd(xmm10, xmm10, xmm11)?;
            a.vpshufd(xmm11, xmm10, 0x4e)?;
            a.vpaddd(xmm10, xmm10, xmm11)?;
            a.vpshufd(xmm11, xmm10, 0xb1)?;
            a.vpaddd(xmm10, xmm10, xmm11)?;
        }
        // the scalar loop's top (after the reduction; l2s itself for pairs)
        let l2t = if quads {
            let mut l = a.create_label();
            a.set_label(&mut l)?;
            l
        } else {
            l2s
        };
        a.cmp(rax, rcx)?;
        a.jge(t2s)?;
        if smooth {
            a.vmovss(xmm5, dword_ptr(rdi + rax * 4))?;
            a.vmulss(xmm5, xmm5, dword_ptr(rbx + rax * 4))?;
            a.vmulss(xmm5, xmm5, xmm3)?;
        } else {
            a.vmulss(xmm5, xmm3, dword_ptr(rdi + rax * 4))?;
        }
        a.vminss(xmm5, xmm5, xmm8)?;
        a.vmaxss(xmm5, xmm5, xmm9)?;
        a.vroundss(xmm5, xmm5, xmm5, 8)?;
        a.vcvttss2si(r11d, xmm5)?;
        if quads {
            a.mov(byte_ptr(rsi + rax), r11b)?;
            a.vmovd(xmm6, r11d)?;
            a.vpaddd(xmm10, xmm10, xmm6)?;
        } else {
            a.mov(word_ptr(rsi + rax * 2), r11w)?;
        }
        a.inc(rax)?;
        a.jmp(l2t)?;
        a.set_label(&mut t2s)?;
        let mut next = a.create_label();
        if quads {
            // the pad to a multiple of 4 (rax = k; a loop from t2s), then -128 Σ xq and the
            // scale
            let mut padded = a.create_label();
            a.test(al, 3)?;
            a.jz(padded)?;
            a.mov(byte_ptr(rsi + rax), 0)?;
            a.inc(rax)?;
            a.jmp(t2s)?;
            a.set_label(&mut padded)?;
            a.vmovd(r11d, xmm10)?;
            a.imul_3(r11d, r11d, -128)?;
            a.mov(dword_ptr(rsi + rax), r11d)?;
            a.vmovss(dword_ptr(rsi + rax + 4), xmm4)?;
        } else {
            // the pad of an odd k, then the scale at 4 ceil(k / 2)
            let mut even = a.create_label();
            a.test(cl, 1)?;
            a.jz(even)?;
            a.mov(word_ptr(rsi + rcx * 2), 0)?;
            a.set_label(&mut even)?;
            a.lea(rax, ptr(rcx + 1))?;
            a.shr(rax, 1)?;
            a.vmovss(dword_ptr(rsi + rax * 4), xmm4)?;
        }
        a.jmp(next)?;
        // an unusable row: zeros and scale 0 (`Pairs`: ceil(k / 2) + 1 dwords; `Quads`:
        // ceil(k / 4) + 2)
        a.set_label(&mut bad)?;
        if quads {
            a.lea(r11, ptr(rcx + 7))?;
            a.shr(r11, 2)?;
        } else {
            a.lea(r11, ptr(rcx + 1))?;
            a.shr(r11, 1)?;
        }
        a.xor(eax, eax)?;
        let mut lz = a.create_label();
        a.set_label(&mut lz)?;
        a.mov(dword_ptr(rsi + rax * 4), 0)?;
        a.inc(rax)?;
        a.cmp(rax, r11)?;
        a.jbe(lz)?;
        a.set_label(&mut next)?;
        a.add(rdi, r8)?;
        a.add(rsi, r9)?;
        a.dec(rdx)?;
        a.jnz(row)?;
        a.set_label(&mut done)?;
        if smooth {
            a.pop(rbx)?;
        }
        Ok(())
    })
}

/// A peak-throughput loop: `iters` rounds of 12 independent `vfmadd231ps` on ymm registers
/// (192 flops a round), no memory traffic. `peak(iters)`, System V.
pub fn avx2_peak() -> Result<Vec<u8>, CodegenError> {
    peak_loop(false)
}

/// `avx2_peak` on zmm registers (384 flops a round), for AVX-512 targets.
pub fn avx512_peak() -> Result<Vec<u8>, CodegenError> {
    peak_loop(true)
}

fn peak_loop(zmm: bool) -> Result<Vec<u8>, CodegenError> {
    let mut a = CodeAssembler::new(64).map_err(asm_err)?;
    let y = [
        ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13,
    ];
    let z = [
        zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13,
    ];
    (|| -> Result<(), IcedError> {
        for r in y {
            a.vxorps(r, r, r)?;
        }
        let mut done = a.create_label();
        let mut top = a.create_label();
        a.test(rdi, rdi)?;
        a.jz(done)?;
        a.set_label(&mut top)?;
        for i in 0..12 {
            if zmm {
                a.vfmadd231ps(z[i], z[12], z[13])?;
            } else {
                a.vfmadd231ps(y[i], y[12], y[13])?;
            }
        }
        a.dec(rdi)?;
        a.jnz(top)?;
        a.set_label(&mut done)?;
        a.vzeroupper()?;
        a.ret()?;
        Ok(())
    })()
    .map_err(asm_err)?;
    a.assemble(0).map_err(asm_err)
}

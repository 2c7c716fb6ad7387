//! Hand-assembled x86-64 kernels (iced-x86), placed into the object beside the Cranelift code
//! with `define_function_bytes`. Cranelift's x64 backend has 128-bit vectors only; these use
//! 256-bit AVX2 registers with FMA, and for targets with AVX-512, a GEMM microkernel on
//! 512-bit registers (`avx512_kernel`, tested under an emulator: `x86_emulated.rs`).
//!
//! The GEMM microkernel `kernel(a, lda, bp, c, ldc, k[, res])` (System V: rdi, rsi, rdx, rcx,
//! r8, r9, then the stack) computes an `mr x 16` tile:
//! `c[i][0..16] = epi(bp[0..16] + sum_kk a[i*lda + kk] * bp[16 + kk*16 ..])` where `bp` is one
//! packed panel (bias row, then `k` rows of 16 weights), `lda` and `ldc` are row strides in
//! bytes, and the epilogue `epi` (an activation, then adding the tile at `res`, stride `ldc`)
//! runs on the registers before the store. `softmax` normalises rows of scores. Constants
//! (polynomial coefficients, clamps) sit after the code and are read RIP-relative, so the
//! bytes are position independent. Every kernel only touches caller-saved registers.

use iced_x86::code_asm::*;

use super::lower::{Act, CodegenError};
use bertc_ir::GeluApprox;

fn asm_err(e: IcedError) -> CodegenError {
    CodegenError::Asm(e.to_string())
}

/// What a microkernel does to its tile between the accumulation and the store.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MicroEpi {
    pub act: Option<Act>,
    /// Add the tile at the 7th argument (same row stride as the output).
    pub residual: bool,
    /// Prefetch from the address in the argument after the regular ones, advancing it by the
    /// next argument's bytes at each step of k (in the 4-step loop), so that the next panel's
    /// weights stream from memory while this tile computes. The caller splits the next panel
    /// among the row blocks of this one.
    pub prefetch: bool,
}

impl MicroEpi {
    pub const NONE: MicroEpi = MicroEpi {
        act: None,
        residual: false,
        prefetch: false,
    };

    /// The kernel's argument count: `(a, lda, bp, c, ldc, k)`, then the residual tile, then
    /// the prefetch address and step.
    pub fn args(&self) -> usize {
        6 + usize::from(self.residual) + 2 * usize::from(self.prefetch)
    }

    /// A short name for symbols.
    pub fn tag(&self) -> String {
        let act = match self.act {
            None => "",
            Some(Act::Relu) => "relu",
            Some(Act::Tanh) => "tanh",
            Some(Act::Gelu(GeluApprox::Erf)) => "gelu",
            Some(Act::Gelu(GeluApprox::Tanh)) => "gelut",
        };
        let res = if self.residual { "res" } else { "" };
        let pf = if self.prefetch { "pf" } else { "" };
        format!("{act}{res}{pf}")
    }
}

/// f32 constants broadcast to 8 lanes, placed after the code and addressed RIP-relative.
struct Consts {
    items: Vec<(u32, CodeLabel)>,
}

impl Consts {
    fn new() -> Self {
        Consts { items: Vec::new() }
    }

    fn bits(&mut self, a: &mut CodeAssembler, bits: u32) -> AsmMemoryOperand {
        if let Some((_, l)) = self.items.iter().find(|(b, _)| *b == bits) {
            return ymmword_ptr(*l);
        }
        let l = a.create_label();
        self.items.push((bits, l));
        ymmword_ptr(l)
    }

    fn f(&mut self, a: &mut CodeAssembler, v: f32) -> AsmMemoryOperand {
        self.bits(a, v.to_bits())
    }

    /// Emits the table (after the last instruction).
    fn place(self, a: &mut CodeAssembler) -> Result<(), IcedError> {
        for (bits, mut l) in self.items {
            a.set_label(&mut l)?;
            a.dd(&[bits; 8])?;
        }
        Ok(())
    }
}

/// `x = exp(x)` on 8 lanes, with `t1` and `t2` as scratch: `x` clamped to [-87.3, 88],
/// `n = round(x / ln 2)` by the 1.5·2²³ trick, `r = x - n ln 2` (two-part ln 2), a degree-6
/// Taylor polynomial on |r| <= ln2/2 (relative error below 2e-7), times 2ⁿ built in the
/// exponent bits.
fn exp8(
    a: &mut CodeAssembler,
    k: &mut Consts,
    x: AsmRegisterYmm,
    t1: AsmRegisterYmm,
    t2: AsmRegisterYmm,
) -> Result<(), IcedError> {
    let lo = k.f(a, -87.3);
    a.vmaxps(x, x, lo)?;
    let hi = k.f(a, 88.0);
    a.vminps(x, x, hi)?;
    let magic = k.f(a, 12582912.0);
    a.vmovups(t1, magic)?;
    let log2e = k.f(a, std::f32::consts::LOG2_E);
    a.vfmadd231ps(t1, x, log2e)?;
    a.vsubps(t2, t1, magic)?;
    let ln2_hi = k.f(a, -0.693_145_75);
    a.vfmadd231ps(x, t2, ln2_hi)?;
    let ln2_lo = k.f(a, -1.428_606_8e-6);
    a.vfmadd231ps(x, t2, ln2_lo)?;
    // 2^n: bits(t) = bits(magic) + n, and bits(magic) << 23 vanishes mod 2^32
    a.vpslld(t1, t1, 23)?;
    let one_bits = k.bits(a, 127 << 23);
    a.vpaddd(t1, t1, one_bits)?;
    let c = super::emit::EXP_TAYLOR;
    let c0 = k.f(a, c[0]);
    a.vmovups(t2, c0)?;
    for &cv in &c[1..] {
        let m = k.f(a, cv);
        a.vfmadd213ps(t2, x, m)?;
    }
    a.vmulps(x, t2, t1)?;
    Ok(())
}

/// The coefficients of the rational erf approximation `erf(z) = z P(z²) / Q(z²)` on
/// z in [-4, 4] (clamped outside, where erf is ±1 in f32): the numerator's from z¹³ down to z¹,
/// the denominator's from z⁸ down to z⁰. Maximum absolute error about 1e-7 (tested against
/// libm in this module).
pub const ERF_P: [f32; 7] = [
    -2.726_142_3e-10,
    2.770_681_4e-8,
    -2.101_024e-6,
    -5.692_506_4e-5,
    -7.349_906_3e-4,
    -2.954_6e-3,
    -1.609_603_3e-2,
];
pub const ERF_Q: [f32; 5] = [
    -1.456_607_2e-5,
    -2.133_740_6e-4,
    -1.682_827e-3,
    -7.373_329e-3,
    -1.426_474e-2,
];

/// `y = act(y)` on 8 lanes with the four scratch registers `t`.
fn act8(
    a: &mut CodeAssembler,
    k: &mut Consts,
    act: Act,
    y: AsmRegisterYmm,
    t: [AsmRegisterYmm; 4],
) -> Result<(), IcedError> {
    match act {
        Act::Relu => {
            a.vxorps(t[0], t[0], t[0])?;
            a.vmaxps(y, y, t[0])?;
        }
        Act::Gelu(GeluApprox::Erf) => {
            // 0.5 x (1 + erf(x / sqrt 2))
            let [z, z2, p, q] = t;
            let r2 = k.f(a, std::f32::consts::FRAC_1_SQRT_2);
            a.vmulps(z, y, r2)?;
            let m4 = k.f(a, -4.0);
            a.vmaxps(z, z, m4)?;
            let p4 = k.f(a, 4.0);
            a.vminps(z, z, p4)?;
            a.vmulps(z2, z, z)?;
            let c = k.f(a, ERF_P[0]);
            a.vmovups(p, c)?;
            for &cv in &ERF_P[1..] {
                let m = k.f(a, cv);
                a.vfmadd213ps(p, z2, m)?;
            }
            a.vmulps(p, p, z)?;
            let c = k.f(a, ERF_Q[0]);
            a.vmovups(q, c)?;
            for &cv in &ERF_Q[1..] {
                let m = k.f(a, cv);
                a.vfmadd213ps(q, z2, m)?;
            }
            a.vdivps(p, p, q)?;
            let half = k.f(a, 0.5);
            a.vmulps(z, y, half)?;
            a.vfmadd213ps(p, z, z)?;
            a.vmovaps(y, p)?;
        }
        Act::Gelu(GeluApprox::Tanh) => {
            // x sigmoid(2u) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3)
            let [u, t1, t2, _] = t;
            let kk = (2.0 / std::f64::consts::PI).sqrt() as f32;
            a.vmulps(u, y, y)?;
            let c3 = k.f(a, -2.0 * kk * 0.044715);
            a.vmovups(t1, c3)?;
            let c1 = k.f(a, -2.0 * kk);
            a.vfmadd213ps(u, t1, c1)?;
            a.vmulps(u, u, y)?;
            exp8(a, k, u, t1, t2)?;
            let one = k.f(a, 1.0);
            a.vaddps(u, u, one)?;
            a.vdivps(y, y, u)?;
        }
        Act::Tanh => {
            // 2 / (1 + exp(-2x)) - 1
            let [u, t1, t2, _] = t;
            let m2 = k.f(a, -2.0);
            a.vmulps(u, y, m2)?;
            exp8(a, k, u, t1, t2)?;
            let one = k.f(a, 1.0);
            a.vaddps(u, u, one)?;
            let two = k.f(a, 2.0);
            a.vmovups(t1, two)?;
            a.vdivps(y, t1, u)?;
            a.vsubps(y, y, one)?;
        }
    }
    Ok(())
}

/// The AVX2 + FMA microkernel for `mr` rows (1 to 6) with epilogue `epi`.
pub fn avx2_kernel(mr: usize, epi: MicroEpi) -> Result<Vec<u8>, CodegenError> {
    assert!((1..=AVX2_MR).contains(&mr), "mr out of range");
    let y = [
        ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11,
    ];
    let src_off = |r: usize, off: i32| match r {
        0 => dword_ptr(rdi + off),
        1 => dword_ptr(rdi + rsi + off),
        2 => dword_ptr(rdi + rsi * 2 + off),
        3 => dword_ptr(r10 + off),
        4 => dword_ptr(r10 + rsi + off),
        _ => dword_ptr(r10 + rsi * 2 + off),
    };
    let dst = |r: usize, off: i32| match r {
        0 => ymmword_ptr(rcx + off),
        1 => ymmword_ptr(rcx + r8 + off),
        2 => ymmword_ptr(rcx + r8 * 2 + off),
        3 => ymmword_ptr(r11 + off),
        4 => ymmword_ptr(r11 + r8 + off),
        _ => ymmword_ptr(r11 + r8 * 2 + off),
    };
    function(|a, consts| {
        for r in 0..mr {
            a.vmovups(y[2 * r], ymmword_ptr(rdx))?;
            a.vmovups(y[2 * r + 1], ymmword_ptr(rdx + 32))?;
        }
        a.add(rdx, 64)?;
        a.lea(r10, ptr(rdi + rsi * 2))?;
        a.add(r10, rsi)?;
        // rax: the prefetch address, advanced by the step at `pf_step`
        let pf_arg = 8 + 8 * i32::from(epi.residual);
        let pf_step = qword_ptr(rsp + (pf_arg + 8));
        if epi.prefetch {
            a.mov(rax, qword_ptr(rsp + pf_arg))?;
        }
        k_loop(a, epi.prefetch.then_some(pf_step), &[rdi, r10], |a, u| {
            a.vmovups(ymm12, ymmword_ptr(rdx + 64 * u))?;
            a.vmovups(ymm13, ymmword_ptr(rdx + 64 * u + 32))?;
            for r in 0..mr {
                a.vbroadcastss(ymm14, src_off(r, 4 * u))?;
                a.vfmadd231ps(y[2 * r], ymm12, ymm14)?;
                a.vfmadd231ps(y[2 * r + 1], ymm13, ymm14)?;
            }
            Ok(())
        })?;
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
            let res = |r: usize, off: i32| match r {
                0 => ymmword_ptr(rax + off),
                1 => ymmword_ptr(rax + r8 + off),
                2 => ymmword_ptr(rax + r8 * 2 + off),
                3 => ymmword_ptr(r10 + off),
                4 => ymmword_ptr(r10 + r8 + off),
                _ => ymmword_ptr(r10 + r8 * 2 + off),
            };
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
    })
}

/// Assembles a function: `body`, then `vzeroupper; ret`, then the constants `body` asked for.
fn function(
    body: impl FnOnce(&mut CodeAssembler, &mut Consts) -> Result<(), IcedError>,
) -> Result<Vec<u8>, CodegenError> {
    let mut a = CodeAssembler::new(64).map_err(asm_err)?;
    let mut consts = Consts::new();
    (|| {
        body(&mut a, &mut consts)?;
        a.vzeroupper()?;
        a.ret()?;
        consts.place(&mut a)
    })()
    .map_err(asm_err)?;
    a.assemble(0).map_err(asm_err)
}

/// The k loop of the GEMM microkernels: 4 steps an iteration, then single steps. `r9` counts
/// the steps down, `rdx` walks the panel's rows (64 bytes a step) and each of `bases` (rows of
/// `a`) 4 bytes a step; `step(a, u)` emits step `u` of an iteration, reading the panel row at
/// `rdx + 64 u` and `a` at `+ 4 u`. With `prefetch` (the step's memory operand), each step of
/// the 4-step loop also prefetches the line at `rax` and advances `rax` by that step.
fn k_loop(
    a: &mut CodeAssembler,
    prefetch: Option<AsmMemoryOperand>,
    bases: &[AsmRegister64],
    mut step: impl FnMut(&mut CodeAssembler, i32) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    let mut done = a.create_label();
    let mut top4 = a.create_label();
    let mut tail = a.create_label();
    let mut top1 = a.create_label();
    a.cmp(r9, 4)?;
    a.jl(tail)?;
    a.set_label(&mut top4)?;
    for u in 0..4i32 {
        if let Some(pf_step) = prefetch {
            a.prefetcht0(byte_ptr(rax))?;
            a.add(rax, pf_step)?;
        }
        step(a, u)?;
    }
    a.add(rdx, 256)?;
    for base in bases {
        a.add(*base, 16)?;
    }
    a.sub(r9, 4)?;
    a.cmp(r9, 4)?;
    a.jge(top4)?;
    a.set_label(&mut tail)?;
    a.test(r9, r9)?;
    a.jz(done)?;
    a.set_label(&mut top1)?;
    step(a, 0)?;
    a.add(rdx, 64)?;
    for base in bases {
        a.add(*base, 4)?;
    }
    a.dec(r9)?;
    a.jnz(top1)?;
    a.set_label(&mut done)
}

/// Rows of the AVX2 GEMM microkernel's tile.
pub const AVX2_MR: usize = 6;

/// Rows of the AVX-512 GEMM microkernel's tile.
pub const AVX512_MR: usize = 12;

/// The GEMM microkernel for AVX-512 (AVX512F, with AVX2 and FMA for the epilogue): an
/// `mr x 16` tile (`mr <= AVX512_MR`) with one zmm accumulator a row, the same arguments,
/// panel layout and epilogues as [`avx2_kernel`]. Each step of k loads the panel row once
/// and multiplies it by each row's `a` broadcast from memory (`{1to16}`), so a step is `mr`
/// FMAs for `mr + 1` loads. The accumulators are zmm16..zmm27 (EVEX only), so that the
/// epilogue can run the AVX2 activation code on each half (ymm0, ymm1) with ymm12..ymm15 as
/// scratch. Rows are addressed from up to four base registers, three rows each (base,
/// base + stride, base + 2 stride); the fourth A base is rcx, kept in the red zone meanwhile.
pub fn avx512_kernel(mr: usize, epi: MicroEpi) -> Result<Vec<u8>, CodegenError> {
    assert!((1..=AVX512_MR).contains(&mr), "mr out of range");
    let acc = [
        zmm16, zmm17, zmm18, zmm19, zmm20, zmm21, zmm22, zmm23, zmm24, zmm25, zmm26, zmm27,
    ];
    let bregs = [zmm28, zmm29];
    // row r at base (r / 3) plus (r % 3) strides
    fn row(
        bases: &[AsmRegister64; 4],
        stride: AsmRegister64,
        r: usize,
        off: i32,
    ) -> AsmMemoryOperand {
        let b = bases[r / 3];
        match r % 3 {
            0 => b + off,
            1 => b + stride + off,
            _ => b + stride * 2 + off,
        }
    }
    let nbases = mr.div_ceil(3);
    function(|a, consts| {
        let pf_arg = 8 + 8 * i32::from(epi.residual);
        let pf_step = qword_ptr(rsp + (pf_arg + 8));
        if epi.prefetch {
            a.mov(rax, qword_ptr(rsp + pf_arg))?;
        }
        // the bias row starts every accumulator
        for r in acc.iter().take(mr) {
            a.vmovups(*r, zmmword_ptr(rdx))?;
        }
        a.add(rdx, 64)?;
        // A bases: rdi, r10, r11, rcx (rcx saved below the stack pointer, in the red zone)
        let abase = [rdi, r10, r11, rcx];
        if nbases == 4 {
            a.mov(qword_ptr(rsp - 8), rcx)?;
        }
        for j in 1..nbases {
            a.lea(abase[j], ptr(abase[j - 1] + rsi * 2))?;
            a.add(abase[j], rsi)?;
        }
        k_loop(
            a,
            epi.prefetch.then_some(pf_step),
            &abase[..nbases],
            |a, u| {
                let b = bregs[u as usize % 2];
                a.vmovups(b, zmmword_ptr(rdx + 64 * u))?;
                for (r, acc_r) in acc.iter().enumerate().take(mr) {
                    a.vfmadd231ps(*acc_r, b, dword_bcst(row(&abase, rsi, r, 4 * u)))?;
                }
                Ok(())
            },
        )?;
        if nbases == 4 {
            a.mov(rcx, qword_ptr(rsp - 8))?;
        }
        // C bases rcx, rsi, rdi, r9 (stride r8); residual bases rax, r10, r11, rdx
        let cbase = [rcx, rsi, rdi, r9];
        for j in 1..nbases {
            a.lea(cbase[j], ptr(cbase[j - 1] + r8 * 2))?;
            a.add(cbase[j], r8)?;
        }
        if epi.act.is_none() && !epi.residual {
            for (r, acc_r) in acc.iter().enumerate().take(mr) {
                a.vmovups(zmmword_ptr(row(&cbase, r8, r, 0)), *acc_r)?;
            }
        } else {
            let rbase = [rax, r10, r11, rdx];
            if epi.residual {
                a.mov(rax, qword_ptr(rsp + 8))?;
                for j in 1..nbases {
                    a.lea(rbase[j], ptr(rbase[j - 1] + r8 * 2))?;
                    a.add(rbase[j], r8)?;
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(mr) {
                for (half, y) in [ymm0, ymm1].into_iter().enumerate() {
                    let off = 32 * half as i32;
                    a.vextractf64x4(y, *acc_r, half as u32)?;
                    if let Some(act) = epi.act {
                        act8(a, consts, act, y, [ymm12, ymm13, ymm14, ymm15])?;
                    }
                    if epi.residual {
                        a.vaddps(y, y, ymmword_ptr(row(&rbase, r8, r, off)))?;
                    }
                    a.vmovups(ymmword_ptr(row(&cbase, r8, r, off)), y)?;
                }
            }
        }
        Ok(())
    })
}

/// Horizontal reduction of the 8 lanes of `x` into every lane (`max` or add), `t` scratch.
fn hreduce(
    a: &mut CodeAssembler,
    x: AsmRegisterYmm,
    t: AsmRegisterYmm,
    max: bool,
) -> Result<(), IcedError> {
    a.vperm2f128(t, x, x, 1)?;
    let op = |a: &mut CodeAssembler| {
        if max {
            a.vmaxps(x, x, t)
        } else {
            a.vaddps(x, x, t)
        }
    };
    op(a)?;
    a.vpermilps(t, x, 0x4e)?;
    op(a)?;
    a.vpermilps(t, x, 0xb1)?;
    op(a)
}

/// `softmax(rows_ptr, ld, rows, len, inv)`: for each of `rows` rows (stride `ld` bytes) of
/// `len` scores, in two passes: the maximum of the scaled scores, then
/// `p_j = exp(s x_j - max)` stored in place and summed, with the scale `s` baked in; the
/// normalisation `1 / sum` of row `i` goes to `inv[i]`, for the caller to apply to `P V`
/// (dv columns instead of len). Each row must have room for `len` rounded up to 8 floats: the
/// lanes past `len` of the last vector are written with junk and left out of the max and the
/// sum.
pub fn avx2_softmax(scale: f32) -> Result<Vec<u8>, CodegenError> {
    let mut a = CodeAssembler::new(64).map_err(asm_err)?;
    let mut k = Consts::new();
    let mut masks = a.create_label();
    (|| -> Result<(), IcedError> {
        let mut end = a.create_label();
        let mut row = a.create_label();
        a.mov(r11, r8)?;
        a.test(rdx, rdx)?;
        a.jz(end)?;
        // r8 = len & !7 (full vectors), r9 = len - r8 (the tail), ymm7 = the tail's mask
        a.mov(r8, rcx)?;
        a.and(r8, -8)?;
        a.mov(r9, rcx)?;
        a.sub(r9, r8)?;
        a.lea(r10, ptr(masks))?;
        a.shl(r9, 2)?;
        a.sub(r10, r9)?;
        a.vmovups(ymm7, ymmword_ptr(r10 + 32))?;
        let sc = k.f(&mut a, scale);
        a.vmovups(ymm6, sc)?;
        let lowest = k.f(&mut a, f32::MIN);
        a.vmovups(ymm8, lowest)?;
        a.set_label(&mut row)?;
        // pass 1: the maximum of the scaled scores
        a.vmovaps(ymm0, ymm8)?;
        a.xor(eax, eax)?;
        let mut l1 = a.create_label();
        let mut t1 = a.create_label();
        a.set_label(&mut l1)?;
        a.cmp(rax, r8)?;
        a.jge(t1)?;
        a.vmulps(ymm1, ymm6, ymmword_ptr(rdi + rax * 4))?;
        a.vmaxps(ymm0, ymm0, ymm1)?;
        a.add(rax, 8)?;
        a.jmp(l1)?;
        a.set_label(&mut t1)?;
        let mut h1 = a.create_label();
        a.cmp(r8, rcx)?;
        a.je(h1)?;
        a.vmulps(ymm1, ymm6, ymmword_ptr(rdi + rax * 4))?;
        a.vblendvps(ymm1, ymm8, ymm1, ymm7)?;
        a.vmaxps(ymm0, ymm0, ymm1)?;
        a.set_label(&mut h1)?;
        hreduce(&mut a, ymm0, ymm1, true)?;
        // pass 2: exponentials, stored, summed
        a.vxorps(ymm5, ymm5, ymm5)?;
        a.xor(eax, eax)?;
        let mut l2 = a.create_label();
        let mut t2 = a.create_label();
        a.set_label(&mut l2)?;
        a.cmp(rax, r8)?;
        a.jge(t2)?;
        a.vmulps(ymm1, ymm6, ymmword_ptr(rdi + rax * 4))?;
        a.vsubps(ymm1, ymm1, ymm0)?;
        exp8(&mut a, &mut k, ymm1, ymm2, ymm3)?;
        a.vmovups(ymmword_ptr(rdi + rax * 4), ymm1)?;
        a.vaddps(ymm5, ymm5, ymm1)?;
        a.add(rax, 8)?;
        a.jmp(l2)?;
        a.set_label(&mut t2)?;
        let mut h2 = a.create_label();
        a.cmp(r8, rcx)?;
        a.je(h2)?;
        a.vmulps(ymm1, ymm6, ymmword_ptr(rdi + rax * 4))?;
        a.vsubps(ymm1, ymm1, ymm0)?;
        exp8(&mut a, &mut k, ymm1, ymm2, ymm3)?;
        a.vandps(ymm1, ymm1, ymm7)?;
        a.vmovups(ymmword_ptr(rdi + rax * 4), ymm1)?;
        a.vaddps(ymm5, ymm5, ymm1)?;
        a.set_label(&mut h2)?;
        hreduce(&mut a, ymm5, ymm1, false)?;
        let one = k.f(&mut a, 1.0);
        a.vmovups(ymm1, one)?;
        a.vdivps(ymm1, ymm1, ymm5)?;
        a.vmovss(dword_ptr(r11), xmm1)?;
        a.add(r11, 4)?;
        a.add(rdi, rsi)?;
        a.dec(rdx)?;
        a.jnz(row)?;
        a.set_label(&mut end)?;
        a.vzeroupper()?;
        a.ret()?;
        // 8 lanes of all-ones then 8 of zeros: the mask of the first r lanes is at 32 - 4r
        a.set_label(&mut masks)?;
        a.dd(&[u32::MAX; 8])?;
        a.dd(&[0; 8])?;
        k.place(&mut a)?;
        Ok(())
    })()
    .map_err(asm_err)?;
    a.assemble(0).map_err(asm_err)
}

/// A peak-throughput loop: `iters` rounds of 12 independent `vfmadd231ps` on ymm registers
/// (192 flops a round), no memory traffic. `peak(iters)`, System V.
pub fn avx2_peak() -> Result<Vec<u8>, CodegenError> {
    let y = [
        ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11,
    ];
    let mut a = CodeAssembler::new(64).map_err(asm_err)?;
    (|| -> Result<(), IcedError> {
        for r in y.iter().chain([ymm12, ymm13].iter()) {
            a.vxorps(*r, *r, *r)?;
        }
        let mut done = a.create_label();
        let mut top = a.create_label();
        a.test(rdi, rdi)?;
        a.jz(done)?;
        a.set_label(&mut top)?;
        for r in y {
            a.vfmadd231ps(r, ymm12, ymm13)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" {
        fn erf(x: f64) -> f64;
    }

    /// The rational erf in f32 arithmetic with fused multiply-adds, as the kernels evaluate it.
    fn erf_f32(x: f32) -> f32 {
        let z = x.clamp(-4.0, 4.0);
        let z2 = z * z;
        let p = ERF_P[1..].iter().fold(ERF_P[0], |p, &c| p.mul_add(z2, c)) * z;
        let q = ERF_Q[1..].iter().fold(ERF_Q[0], |q, &c| q.mul_add(z2, c));
        p / q
    }

    #[test]
    fn rational_erf_is_within_its_error_budget() {
        let mut worst = 0f64;
        for i in -60000..=60000 {
            let x = i as f32 * 1e-4;
            let want = unsafe { erf(x as f64) };
            worst = worst.max((erf_f32(x) as f64 - want).abs());
        }
        assert!(worst < 5e-7, "max |erf error| {worst:e}");
    }

    #[test]
    fn kernels_assemble() {
        type Kernel = fn(usize, MicroEpi) -> Result<Vec<u8>, CodegenError>;
        let kernels: [(Kernel, usize); 2] = [(avx2_kernel, AVX2_MR), (avx512_kernel, AVX512_MR)];
        for (kernel, max_mr) in kernels {
            for mr in 1..=max_mr {
                for act in [
                    None,
                    Some(Act::Relu),
                    Some(Act::Tanh),
                    Some(Act::Gelu(GeluApprox::Erf)),
                    Some(Act::Gelu(GeluApprox::Tanh)),
                ] {
                    for residual in [false, true] {
                        for prefetch in [false, true] {
                            let epi = MicroEpi {
                                act,
                                residual,
                                prefetch,
                            };
                            assert!(!kernel(mr, epi).unwrap().is_empty());
                        }
                    }
                }
            }
        }
        assert!(!avx2_softmax(0.125).unwrap().is_empty());
    }
}

#[cfg(test)]
#[path = "x86_emulated.rs"]
mod emulated;

//! The AVX-512 GEMM microkernel (12 x 16 tile), for targets with avx512f; its epilogue runs
//! the AVX2 activation code on each half of an accumulator.

use iced_x86::code_asm::*;

use super::{act8, function, k_loop, MicroEpi};
use crate::lower::CodegenError;

/// Rows of the AVX-512 GEMM microkernel's tile.
pub const AVX512_MR: usize = 12;

/// The GEMM microkernel for AVX-512 (AVX512F, with AVX2 and FMA for the epilogue): an
/// `mr x 16` tile (`mr <= AVX512_MR`) with one zmm accumulator a row, the same arguments,
/// panel layout, epilogues and starts (the biases or the output) as [`avx2_kernel`]. Each step of k loads the panel row once
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
        if epi.accumulate {
            // the partial sums in the output tile: rows 3 j.. from r10 = c + 3 j ldc
            for (r, acc_r) in acc.iter().enumerate().take(mr) {
                let base = match r / 3 {
                    0 => rcx,
                    _ => r10,
                };
                if r % 3 == 0 && r > 0 {
                    let from = if r == 3 { rcx } else { r10 };
                    a.lea(r10, ptr(from + r8 * 2))?;
                    a.add(r10, r8)?;
                }
                let at = match r % 3 {
                    0 => base + 0,
                    1 => base + r8,
                    _ => base + r8 * 2,
                };
                a.vmovups(*acc_r, zmmword_ptr(at))?;
            }
        } else {
            // the bias row starts every accumulator
            for r in acc.iter().take(mr) {
                a.vmovups(*r, zmmword_ptr(rdx))?;
            }
            a.add(rdx, 64)?;
        }
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
            [64, 4],
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

//! Hand-assembled x86-64 GEMM microkernels (iced-x86), placed into the object beside the
//! Cranelift code with `define_function_bytes`. Cranelift's x64 backend has 128-bit vectors
//! only; these use 256-bit AVX2 registers with FMA.
//!
//! `kernel(a, lda, bp, c, ldc, k)` (System V: rdi, rsi, rdx, rcx, r8, r9) computes an
//! `mr x 16` tile: `c[i][0..16] = bp[0..16] + sum_kk a[i*lda + kk] * bp[16 + kk*16 ..]` where
//! `bp` is one packed panel (bias row, then `k` rows of 16 weights), `lda` and `ldc` are row
//! strides in bytes. It only touches caller-saved registers.

use iced_x86::code_asm::*;

use super::lower::CodegenError;

fn asm_err(e: IcedError) -> CodegenError {
    CodegenError::Asm(e.to_string())
}

/// The AVX2 + FMA microkernel for `mr` rows (1 to 6).
pub fn avx2_kernel(mr: usize) -> Result<Vec<u8>, CodegenError> {
    assert!((1..=6).contains(&mr), "mr out of range");
    let y = [
        ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11,
    ];
    let mut a = CodeAssembler::new(64).map_err(asm_err)?;
    let src = |r: usize| match r {
        0 => dword_ptr(rdi),
        1 => dword_ptr(rdi + rsi),
        2 => dword_ptr(rdi + rsi * 2),
        3 => dword_ptr(r10),
        4 => dword_ptr(r10 + rsi),
        _ => dword_ptr(r10 + rsi * 2),
    };
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
    (|| -> Result<(), IcedError> {
        for r in 0..mr {
            a.vmovups(y[2 * r], ymmword_ptr(rdx))?;
            a.vmovups(y[2 * r + 1], ymmword_ptr(rdx + 32))?;
        }
        a.add(rdx, 64)?;
        a.lea(r10, ptr(rdi + rsi * 2))?;
        a.add(r10, rsi)?;
        // main loop: 4 steps of k per iteration, then single steps
        let mut done = a.create_label();
        let mut top4 = a.create_label();
        let mut tail = a.create_label();
        let mut top1 = a.create_label();
        a.cmp(r9, 4)?;
        a.jl(tail)?;
        a.set_label(&mut top4)?;
        for u in 0..4i32 {
            a.vmovups(ymm12, ymmword_ptr(rdx + 64 * u))?;
            a.vmovups(ymm13, ymmword_ptr(rdx + 64 * u + 32))?;
            for r in 0..mr {
                a.vbroadcastss(ymm14, src_off(r, 4 * u))?;
                a.vfmadd231ps(y[2 * r], ymm12, ymm14)?;
                a.vfmadd231ps(y[2 * r + 1], ymm13, ymm14)?;
            }
        }
        a.add(rdx, 256)?;
        a.add(rdi, 16)?;
        a.add(r10, 16)?;
        a.sub(r9, 4)?;
        a.cmp(r9, 4)?;
        a.jge(top4)?;
        a.set_label(&mut tail)?;
        a.test(r9, r9)?;
        a.jz(done)?;
        a.set_label(&mut top1)?;
        a.vmovups(ymm12, ymmword_ptr(rdx))?;
        a.vmovups(ymm13, ymmword_ptr(rdx + 32))?;
        for r in 0..mr {
            a.vbroadcastss(ymm14, src(r))?;
            a.vfmadd231ps(y[2 * r], ymm12, ymm14)?;
            a.vfmadd231ps(y[2 * r + 1], ymm13, ymm14)?;
        }
        a.add(rdx, 64)?;
        a.add(rdi, 4)?;
        a.add(r10, 4)?;
        a.dec(r9)?;
        a.jnz(top1)?;
        a.set_label(&mut done)?;
        a.lea(r11, ptr(rcx + r8 * 2))?;
        a.add(r11, r8)?;
        for r in 0..mr {
            a.vmovups(dst(r, 0), y[2 * r])?;
            a.vmovups(dst(r, 32), y[2 * r + 1])?;
        }
        a.vzeroupper()?;
        a.ret()?;
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

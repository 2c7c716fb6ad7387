//! The AVX2 + FMA kernels: the 6 x 16 GEMM microkernel with its epilogues, the softmax of
//! attention rows, and the FMA peak loop `bertc bench --gemm` measures against.

use iced_x86::code_asm::*;

use super::{act8, asm_err, exp8, function, hreduce, k_loop, Consts, MicroEpi};
use crate::lower::CodegenError;

/// Rows of the AVX2 GEMM microkernel's tile.
pub const AVX2_MR: usize = 6;

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

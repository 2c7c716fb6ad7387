//! The row kernels: attention's online softmax and the layer norm, on ymm registers (AVX2
//! with FMA: `bertc_numerics`' 16-lane sums in two registers, the tails under vector masks)
//! and zmm registers (AVX-512: the 16 lanes in one register, the tails under write masks).
//! Each pair computes the same operations in the same order, so the two give the same bits.

use iced_x86::code_asm::*;

use super::{asm_err, exp8, hreduce, Consts};
use crate::lower::CodegenError;

/// `softmax(rows_ptr, ld, rows, len, state)`: one block of keys of an online (flash-style)
/// softmax, for each of `rows` rows (stride `ld` bytes) of `len` scores, in two passes: the
/// maximum `m` of the scaled scores and of the row's running maximum `m_old`, then
/// `p_j = exp(s x_j - m)` stored in place and summed, with the scale `s` baked in. Row `i`'s
/// state is the four floats at `state + 16 i`: `[m, l, alpha, _]`, read as the running
/// maximum and sum so far and written as `m`, `l = alpha l_old + sum_j p_j` and
/// `alpha = exp(m_old - m)` (what the caller multiplies the row's `P V` so far by). A row's
/// first block starts from `m_old = f32::MIN, l_old = 0`, which gives `l = sum_j p_j` exactly;
/// the caller applies `1 / l` to `P V` (dv columns instead of len). Each row must have room for
/// `len` rounded up to 8 floats: the lanes past `len` of the last vector are written with junk
/// and left out of the max and the sum.
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
        // r10 = len & !15 (whole groups of the sum's 16 lanes)
        a.mov(r10, rcx)?;
        a.and(r10, -16)?;
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
        // with the running maximum
        a.vbroadcastss(ymm4, dword_ptr(r11))?;
        a.vmaxps(ymm0, ymm0, ymm4)?;
        // pass 2: exponentials, stored, summed in bertc_numerics' 16 lanes: scores 16c..16c+7
        // into ymm5, 16c+8..16c+15 into ymm9
        a.vxorps(ymm5, ymm5, ymm5)?;
        a.vxorps(ymm9, ymm9, ymm9)?;
        a.xor(eax, eax)?;
        // p = exp(s x - m) of the 8 scores at rax + off (the tail's lanes past len zeroed
        // when `tail`), stored and added to `acc`
        let exp_add = |a: &mut CodeAssembler,
                       k: &mut Consts,
                       off: i32,
                       acc: AsmRegisterYmm,
                       tail: bool|
         -> Result<(), IcedError> {
            a.vmulps(ymm1, ymm6, ymmword_ptr(rdi + rax * 4 + off))?;
            a.vsubps(ymm1, ymm1, ymm0)?;
            exp8(a, k, ymm1, ymm2, ymm3)?;
            if tail {
                a.vandps(ymm1, ymm1, ymm7)?;
            }
            a.vmovups(ymmword_ptr(rdi + rax * 4 + off), ymm1)?;
            a.vaddps(acc, acc, ymm1)
        };
        let mut l2 = a.create_label();
        let mut t2 = a.create_label();
        a.set_label(&mut l2)?;
        a.cmp(rax, r10)?;
        a.jge(t2)?;
        exp_add(&mut a, &mut k, 0, ymm5, false)?;
        exp_add(&mut a, &mut k, 32, ymm9, false)?;
        a.add(rax, 16)?;
        a.jmp(l2)?;
        // at most a whole vector (lanes 0..8) and a tail (lanes 8..16) are left, or a tail
        // (lanes 0..8)
        a.set_label(&mut t2)?;
        let mut h2 = a.create_label();
        let mut short = a.create_label();
        a.cmp(rax, r8)?;
        a.jge(short)?;
        exp_add(&mut a, &mut k, 0, ymm5, false)?;
        a.add(rax, 8)?;
        a.cmp(r8, rcx)?;
        a.je(h2)?;
        exp_add(&mut a, &mut k, 0, ymm9, true)?;
        a.jmp(h2)?;
        a.set_label(&mut short)?;
        a.cmp(r8, rcx)?;
        a.je(h2)?;
        exp_add(&mut a, &mut k, 0, ymm5, true)?;
        a.set_label(&mut h2)?;
        a.vaddps(ymm5, ymm5, ymm9)?;
        hreduce(&mut a, ymm5, ymm1, false)?;
        // alpha = exp(m_old - m), l = alpha l_old + sum
        a.vsubps(ymm1, ymm4, ymm0)?;
        exp8(&mut a, &mut k, ymm1, ymm2, ymm3)?;
        a.vmovss(xmm2, dword_ptr(r11 + 4))?;
        a.vfmadd213ss(xmm2, xmm1, xmm5)?;
        a.vmovss(dword_ptr(r11), xmm0)?;
        a.vmovss(dword_ptr(r11 + 4), xmm2)?;
        a.vmovss(dword_ptr(r11 + 8), xmm1)?;
        a.add(r11, 16)?;
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

/// `layer_norm(x, out, rows, gamma, beta, width)`: `bertc_numerics::layer_norm_row` on each
/// of `rows` rows of `width` floats (`x` and `out` contiguous, possibly the same), with the
/// epsilon baked in. Pass 1 sums `d = x - x[0]` and `d·d` in `bertc_numerics::sum`'s 16 lanes
/// (elements 16c..16c+7 into ymm0 and ymm1, 16c+8..16c+15 into ymm8 and ymm9; the tail's
/// lanes loaded under a mask and their `d` zeroed past the row, which adds `+0` to a lane: no
/// change), folded in halves; the statistics in scalar registers; pass 2 writes
/// `fma((x - mean) · inv, gamma, beta)`. Nothing past a row (or `gamma`, `beta`) is read or
/// written: the tail loads and stores are masked.
pub fn avx2_layer_norm(eps: f32) -> Result<Vec<u8>, CodegenError> {
    let mut a = CodeAssembler::new(64).map_err(asm_err)?;
    let mut k = Consts::new();
    let mut masks = a.create_label();
    (|| -> Result<(), IcedError> {
        let mut end = a.create_label();
        let mut row = a.create_label();
        a.test(rdx, rdx)?;
        a.jz(end)?;
        a.test(r9, r9)?;
        a.jz(end)?;
        // ymm10 = the mask of the width % 8 lanes after the whole vectors
        a.mov(r10, r9)?;
        a.and(r10, 7)?;
        a.shl(r10, 2)?;
        a.lea(rax, ptr(masks))?;
        a.sub(rax, r10)?;
        a.vmovups(ymm10, ymmword_ptr(rax + 32))?;
        layer_norm_inv_n(&mut a, &mut k)?;
        // r10 = bytes of a row's whole groups of 16, r11 = a row's bytes, r9 = bytes of its
        // whole vectors of 8
        a.mov(r10, r9)?;
        a.and(r10, -16)?;
        a.shl(r10, 2)?;
        a.lea(r11, ptr(r9 * 4))?;
        a.and(r9, -8)?;
        a.shl(r9, 2)?;
        a.set_label(&mut row)?;
        // pass 1: the sums of d = x - x[0] and of d·d, in 16 lanes
        a.vbroadcastss(ymm7, dword_ptr(rdi))?;
        for r in [ymm0, ymm1, ymm8, ymm9] {
            a.vxorps(r, r, r)?;
        }
        a.xor(eax, eax)?;
        // d of the 8 floats at rax + off into the sums `s` and `q` (under ymm10 when `tail`)
        let add = |a: &mut CodeAssembler,
                   off: i32,
                   [s, q]: [AsmRegisterYmm; 2],
                   tail: bool|
         -> Result<(), IcedError> {
            if tail {
                a.vmaskmovps(ymm2, ymm10, ymmword_ptr(rdi + rax + off))?;
                a.vsubps(ymm2, ymm2, ymm7)?;
                a.vandps(ymm2, ymm2, ymm10)?;
            } else {
                a.vmovups(ymm2, ymmword_ptr(rdi + rax + off))?;
                a.vsubps(ymm2, ymm2, ymm7)?;
            }
            a.vaddps(s, s, ymm2)?;
            a.vmulps(ymm3, ymm2, ymm2)?;
            a.vaddps(q, q, ymm3)
        };
        let mut l1 = a.create_label();
        let mut t1 = a.create_label();
        a.set_label(&mut l1)?;
        a.cmp(rax, r10)?;
        a.jge(t1)?;
        add(&mut a, 0, [ymm0, ymm1], false)?;
        add(&mut a, 32, [ymm8, ymm9], false)?;
        a.add(rax, 64)?;
        a.jmp(l1)?;
        // left: a whole vector (lanes 0..8) and a tail (lanes 8..16), or a tail (lanes 0..8)
        a.set_label(&mut t1)?;
        let mut short = a.create_label();
        let mut folded = a.create_label();
        a.cmp(rax, r9)?;
        a.jge(short)?;
        add(&mut a, 0, [ymm0, ymm1], false)?;
        add(&mut a, 32, [ymm8, ymm9], true)?;
        a.jmp(folded)?;
        a.set_label(&mut short)?;
        add(&mut a, 0, [ymm0, ymm1], true)?;
        a.set_label(&mut folded)?;
        a.vaddps(ymm0, ymm0, ymm8)?;
        hreduce(&mut a, ymm0, ymm2, false)?;
        a.vaddps(ymm1, ymm1, ymm9)?;
        hreduce(&mut a, ymm1, ymm3, false)?;
        layer_norm_stats(&mut a, &mut k, eps)?;
        a.vbroadcastss(ymm4, xmm4)?;
        a.vbroadcastss(ymm5, xmm5)?;
        // pass 2: fma((x - mean) · inv, gamma, beta), 8 floats at a time, then the tail
        a.xor(eax, eax)?;
        let mut l2 = a.create_label();
        let mut t2 = a.create_label();
        a.set_label(&mut l2)?;
        a.cmp(rax, r9)?;
        a.jge(t2)?;
        a.vmovups(ymm2, ymmword_ptr(rdi + rax))?;
        a.vsubps(ymm2, ymm2, ymm4)?;
        a.vmulps(ymm2, ymm2, ymm5)?;
        a.vmovups(ymm3, ymmword_ptr(rcx + rax))?;
        a.vfmadd213ps(ymm2, ymm3, ymmword_ptr(r8 + rax))?;
        a.vmovups(ymmword_ptr(rsi + rax), ymm2)?;
        a.add(rax, 32)?;
        a.jmp(l2)?;
        a.set_label(&mut t2)?;
        a.vmaskmovps(ymm2, ymm10, ymmword_ptr(rdi + rax))?;
        a.vsubps(ymm2, ymm2, ymm4)?;
        a.vmulps(ymm2, ymm2, ymm5)?;
        a.vmaskmovps(ymm3, ymm10, ymmword_ptr(rcx + rax))?;
        a.vmaskmovps(ymm8, ymm10, ymmword_ptr(r8 + rax))?;
        a.vfmadd213ps(ymm2, ymm3, ymm8)?;
        a.vmaskmovps(ymmword_ptr(rsi + rax), ymm10, ymm2)?;
        a.add(rdi, r11)?;
        a.add(rsi, r11)?;
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

/// [`avx2_softmax`] on zmm registers, for AVX-512 targets: the same
/// contract (one block of keys of the online softmax; the state `[m, l, alpha, _]` a row), 16
/// scores a vector, the tail of a row under a write mask (`k1`), so that nothing past `len` is
/// read or written. The sum is `bertc_numerics::sum`'s 16 lanes in one register (the AVX2
/// kernel keeps them in two): the two kernels' results are the same bits.
pub fn avx512_softmax(scale: f32) -> Result<Vec<u8>, CodegenError> {
    let mut a = CodeAssembler::new(64).map_err(asm_err)?;
    let mut k = Consts::new();
    let mut masks = a.create_label();
    (|| -> Result<(), IcedError> {
        let mut end = a.create_label();
        let mut row = a.create_label();
        a.mov(r11, r8)?;
        a.test(rdx, rdx)?;
        a.jz(end)?;
        // r8 = len & !15 (full vectors), r9 = len - r8 (the tail), k1 = the tail's lanes
        a.mov(r8, rcx)?;
        a.and(r8, -16)?;
        a.mov(r9, rcx)?;
        a.sub(r9, r8)?;
        a.lea(r10, ptr(masks))?;
        a.kmovw(k1, word_ptr(r10 + r9 * 2))?;
        let sc = k.f1(&mut a, scale);
        a.vbroadcastss(zmm6, sc)?;
        let lowest = k.f1(&mut a, f32::MIN);
        a.vbroadcastss(zmm8, lowest)?;
        exp_constants(&mut a, &mut k)?;
        a.set_label(&mut row)?;
        // pass 1: the maximum of the scaled scores, in four registers over four vectors at a
        // time (a maximum is exact in any order), then one
        let maxes = [zmm0, zmm7, zmm30, zmm31];
        for m in maxes {
            a.vmovaps(m, zmm8)?;
        }
        a.xor(eax, eax)?;
        let mut l14 = a.create_label();
        let mut l1 = a.create_label();
        let mut t1 = a.create_label();
        a.set_label(&mut l14)?;
        a.lea(r10, ptr(rax + 48))?;
        a.cmp(r10, r8)?;
        a.jge(l1)?;
        for (i, (m, t)) in maxes.iter().zip(EXP_CHAINS).enumerate() {
            a.vmulps(t[0], zmm6, zmmword_ptr(rdi + rax * 4 + 64 * i as i32))?;
            a.vmaxps(*m, *m, t[0])?;
        }
        a.add(rax, 64)?;
        a.jmp(l14)?;
        a.set_label(&mut l1)?;
        a.cmp(rax, r8)?;
        a.jge(t1)?;
        a.vmulps(zmm1, zmm6, zmmword_ptr(rdi + rax * 4))?;
        a.vmaxps(zmm0, zmm0, zmm1)?;
        a.add(rax, 16)?;
        a.jmp(l1)?;
        a.set_label(&mut t1)?;
        a.vmaxps(zmm0, zmm0, zmm7)?;
        a.vmaxps(zmm30, zmm30, zmm31)?;
        a.vmaxps(zmm0, zmm0, zmm30)?;
        // the tail's lanes only (the others keep f32::MIN); none when len is a multiple of 16
        let mut r1 = a.create_label();
        a.test(r9, r9)?;
        a.jz(r1)?;
        a.vmovaps(zmm1, zmm8)?;
        a.vmulps(zmm1.k1(), zmm6, zmmword_ptr(rdi + rax * 4))?;
        a.vmaxps(zmm0, zmm0, zmm1)?;
        a.set_label(&mut r1)?;
        a.vextractf64x4(ymm1, zmm0, 1)?;
        a.vmaxps(ymm0, ymm0, ymm1)?;
        hreduce(&mut a, ymm0, ymm1, true)?;
        // with the running maximum
        a.vbroadcastss(zmm4, dword_ptr(r11))?;
        a.vbroadcastss(zmm0, xmm0)?;
        a.vmaxps(zmm0, zmm0, zmm4)?;
        // pass 2: exponentials, stored, summed; four vectors at a time (their exponentials'
        // operations interleaved, the sums added in order), then one at a time
        a.vxorps(zmm5, zmm5, zmm5)?;
        a.xor(eax, eax)?;
        let mut l4 = a.create_label();
        let mut l2 = a.create_label();
        let mut t2 = a.create_label();
        a.set_label(&mut l4)?;
        a.lea(r10, ptr(rax + 48))?;
        a.cmp(r10, r8)?;
        a.jge(l2)?;
        for (i, c) in EXP_CHAINS.iter().enumerate() {
            a.vmulps(c[0], zmm6, zmmword_ptr(rdi + rax * 4 + 64 * i as i32))?;
            a.vsubps(c[0], c[0], zmm0)?;
        }
        exp16_chains(&mut a, &EXP_CHAINS)?;
        for (i, c) in EXP_CHAINS.iter().enumerate() {
            a.vmovups(zmmword_ptr(rdi + rax * 4 + 64 * i as i32), c[0])?;
            a.vaddps(zmm5, zmm5, c[0])?;
        }
        a.add(rax, 64)?;
        a.jmp(l4)?;
        a.set_label(&mut l2)?;
        a.cmp(rax, r8)?;
        a.jge(t2)?;
        a.vmulps(zmm1, zmm6, zmmword_ptr(rdi + rax * 4))?;
        a.vsubps(zmm1, zmm1, zmm0)?;
        exp16_chains(&mut a, &EXP_CHAINS[..1])?;
        a.vmovups(zmmword_ptr(rdi + rax * 4), zmm1)?;
        a.vaddps(zmm5, zmm5, zmm1)?;
        a.add(rax, 16)?;
        a.jmp(l2)?;
        a.set_label(&mut t2)?;
        let mut r2 = a.create_label();
        a.test(r9, r9)?;
        a.jz(r2)?;
        a.vmulps(zmm1.k1().z(), zmm6, zmmword_ptr(rdi + rax * 4))?;
        a.vsubps(zmm1, zmm1, zmm0)?;
        exp16_chains(&mut a, &EXP_CHAINS[..1])?;
        a.vmovups(zmmword_ptr(rdi + rax * 4).k1(), zmm1)?;
        a.vaddps(zmm5.k1(), zmm5, zmm1)?;
        a.set_label(&mut r2)?;
        a.vextractf64x4(ymm1, zmm5, 1)?;
        a.vaddps(ymm5, ymm5, ymm1)?;
        hreduce(&mut a, ymm5, ymm1, false)?;
        // alpha = exp(m_old - m), l = alpha l_old + sum
        a.vsubps(ymm1, ymm4, ymm0)?;
        exp8(&mut a, &mut k, ymm1, ymm2, ymm3)?;
        a.vmovss(xmm2, dword_ptr(r11 + 4))?;
        a.vfmadd213ss(xmm2, xmm1, xmm5)?;
        a.vmovss(dword_ptr(r11), xmm0)?;
        a.vmovss(dword_ptr(r11 + 4), xmm2)?;
        a.vmovss(dword_ptr(r11 + 8), xmm1)?;
        a.add(r11, 16)?;
        a.add(rdi, rsi)?;
        a.dec(rdx)?;
        a.jnz(row)?;
        a.set_label(&mut end)?;
        a.vzeroupper()?;
        a.ret()?;
        // the write mask of the first r lanes at masks + 2 r
        a.set_label(&mut masks)?;
        let m: Vec<u16> = (0..16).map(|r| ((1u32 << r) - 1) as u16).collect();
        a.dw(&m)?;
        k.place(&mut a)?;
        Ok(())
    })()
    .map_err(asm_err)?;
    a.assemble(0).map_err(asm_err)
}

/// [`avx2_layer_norm`] on zmm registers, for AVX-512 targets: the
/// same contract and operations, `bertc_numerics::sum`'s 16 lanes in one register (the AVX2
/// kernel keeps them in two), the tail of a row under a write mask (`k1`), so that nothing
/// past a row is read or written: the two kernels' results are the same bits.
pub fn avx512_layer_norm(eps: f32) -> Result<Vec<u8>, CodegenError> {
    let mut a = CodeAssembler::new(64).map_err(asm_err)?;
    let mut k = Consts::new();
    let mut masks = a.create_label();
    (|| -> Result<(), IcedError> {
        let mut end = a.create_label();
        let mut row = a.create_label();
        a.test(rdx, rdx)?;
        a.jz(end)?;
        a.test(r9, r9)?;
        a.jz(end)?;
        // r10 = bytes of a row's whole vectors, k1 = the tail's lanes, r11 = a row's bytes
        a.mov(r10, r9)?;
        a.and(r10, -16)?;
        a.mov(rax, r9)?;
        a.sub(rax, r10)?;
        a.lea(r11, ptr(masks))?;
        a.kmovw(k1, word_ptr(r11 + rax * 2))?;
        a.shl(r10, 2)?;
        a.lea(r11, ptr(r9 * 4))?;
        layer_norm_inv_n(&mut a, &mut k)?;
        a.set_label(&mut row)?;
        // pass 1: the sums of d = x - x[0] and of d·d, in 16 lanes
        a.vbroadcastss(zmm7, dword_ptr(rdi))?;
        a.vxorps(zmm0, zmm0, zmm0)?;
        a.vxorps(zmm1, zmm1, zmm1)?;
        a.xor(eax, eax)?;
        let mut l1 = a.create_label();
        let mut t1 = a.create_label();
        a.set_label(&mut l1)?;
        a.cmp(rax, r10)?;
        a.jge(t1)?;
        a.vmovups(zmm2, zmmword_ptr(rdi + rax))?;
        a.vsubps(zmm2, zmm2, zmm7)?;
        a.vaddps(zmm0, zmm0, zmm2)?;
        a.vmulps(zmm3, zmm2, zmm2)?;
        a.vaddps(zmm1, zmm1, zmm3)?;
        a.add(rax, 64)?;
        a.jmp(l1)?;
        // the tail's lanes (d zero in the others: adding +0 leaves a lane as it is)
        a.set_label(&mut t1)?;
        a.vmovups(zmm2.k1().z(), zmmword_ptr(rdi + rax))?;
        a.vsubps(zmm2.k1().z(), zmm2, zmm7)?;
        a.vaddps(zmm0, zmm0, zmm2)?;
        a.vmulps(zmm3, zmm2, zmm2)?;
        a.vaddps(zmm1, zmm1, zmm3)?;
        for (zs, ys, yt) in [(zmm0, ymm0, ymm2), (zmm1, ymm1, ymm3)] {
            a.vextractf64x4(yt, zs, 1)?;
            a.vaddps(ys, ys, yt)?;
            hreduce(&mut a, ys, yt, false)?;
        }
        layer_norm_stats(&mut a, &mut k, eps)?;
        a.vbroadcastss(zmm4, xmm4)?;
        a.vbroadcastss(zmm5, xmm5)?;
        // pass 2: fma((x - mean) · inv, gamma, beta)
        a.xor(eax, eax)?;
        let mut l2 = a.create_label();
        let mut t2 = a.create_label();
        a.set_label(&mut l2)?;
        a.cmp(rax, r10)?;
        a.jge(t2)?;
        a.vmovups(zmm2, zmmword_ptr(rdi + rax))?;
        a.vsubps(zmm2, zmm2, zmm4)?;
        a.vmulps(zmm2, zmm2, zmm5)?;
        a.vmovups(zmm3, zmmword_ptr(rcx + rax))?;
        a.vfmadd213ps(zmm2, zmm3, zmmword_ptr(r8 + rax))?;
        a.vmovups(zmmword_ptr(rsi + rax), zmm2)?;
        a.add(rax, 64)?;
        a.jmp(l2)?;
        a.set_label(&mut t2)?;
        a.vmovups(zmm2.k1().z(), zmmword_ptr(rdi + rax))?;
        a.vsubps(zmm2, zmm2, zmm4)?;
        a.vmulps(zmm2, zmm2, zmm5)?;
        a.vmovups(zmm3.k1().z(), zmmword_ptr(rcx + rax))?;
        a.vmovups(zmm8.k1().z(), zmmword_ptr(r8 + rax))?;
        a.vfmadd213ps(zmm2, zmm3, zmm8)?;
        a.vmovups(zmmword_ptr(rsi + rax).k1(), zmm2)?;
        a.add(rdi, r11)?;
        a.add(rsi, r11)?;
        a.dec(rdx)?;
        a.jnz(row)?;
        a.set_label(&mut end)?;
        a.vzeroupper()?;
        a.ret()?;
        // the write mask of the first r lanes at masks + 2 r
        a.set_label(&mut masks)?;
        let m: Vec<u16> = (0..16).map(|r| ((1u32 << r) - 1) as u16).collect();
        a.dw(&m)?;
        k.place(&mut a)?;
        Ok(())
    })()
    .map_err(asm_err)?;
    a.assemble(0).map_err(asm_err)
}

/// The layer norms' `xmm6 = 1 / n` for the width `n` in `r9`, rounded to f32 once (as
/// `bertc_numerics::layer_norm_row`: `n` is exact in f32 below 2^24).
fn layer_norm_inv_n(a: &mut CodeAssembler, k: &mut Consts) -> Result<(), IcedError> {
    a.vcvtsi2ss(xmm6, xmm6, r9)?;
    let one = k.f1(a, 1.0);
    a.vmovss(xmm2, one)?;
    a.vdivss(xmm6, xmm2, xmm6)
}

/// The layer norms' statistics from the folded sums `s` (xmm0) and `q` (xmm1), `x[0]` (xmm7)
/// and `1 / n` (xmm6), in `bertc_numerics::layer_norm_row`'s operations: `xmm4 = mean =
/// x[0] + s/n`, `xmm5 = inv = 1 / sqrt(max(q/n - (s/n)², 0) + eps)` (`vmaxss` returns its
/// second operand for a NaN, as `f32::max` does); xmm0..xmm3 are clobbered.
fn layer_norm_stats(a: &mut CodeAssembler, k: &mut Consts, eps: f32) -> Result<(), IcedError> {
    a.vmulss(xmm0, xmm0, xmm6)?;
    a.vaddss(xmm4, xmm7, xmm0)?;
    a.vmulss(xmm1, xmm1, xmm6)?;
    a.vmulss(xmm2, xmm0, xmm0)?;
    a.vsubss(xmm1, xmm1, xmm2)?;
    a.vxorps(xmm2, xmm2, xmm2)?;
    a.vmaxss(xmm1, xmm1, xmm2)?;
    let e = k.f1(a, eps);
    a.vaddss(xmm1, xmm1, e)?;
    a.vsqrtss(xmm1, xmm1, xmm1)?;
    let one = k.f1(a, 1.0);
    a.vmovss(xmm5, one)?;
    a.vdivss(xmm5, xmm5, xmm1)
}

/// The registers of `exp16_chains`: four chains of `[x, t1, t2]`, and its constants
/// (`EXP_LO`, the magic, log2(e), the two parts of ln 2, then the Taylor coefficients), loaded
/// once by `exp_constants`.
const EXP_CHAINS: [[AsmRegisterZmm; 3]; 4] = [
    [zmm1, zmm2, zmm3],
    [zmm9, zmm10, zmm11],
    [zmm12, zmm13, zmm14],
    [zmm15, zmm16, zmm17],
];
const EXP_REGS: [AsmRegisterZmm; 12] = [
    zmm18, zmm19, zmm20, zmm21, zmm22, zmm23, zmm24, zmm25, zmm26, zmm27, zmm28, zmm29,
];

/// The constants of `exp16_chains` in every lane of `EXP_REGS`.
fn exp_constants(a: &mut CodeAssembler, k: &mut Consts) -> Result<(), IcedError> {
    use bertc_numerics::{EXP_LN2_HI, EXP_LN2_LO, EXP_LO, EXP_MAGIC, EXP_TAYLOR};
    let head = [
        EXP_LO,
        EXP_MAGIC,
        std::f32::consts::LOG2_E,
        EXP_LN2_HI,
        EXP_LN2_LO,
    ];
    for (r, v) in EXP_REGS.iter().zip(head.into_iter().chain(EXP_TAYLOR)) {
        let m = k.f1(a, v);
        a.vbroadcastss(*r, m)?;
    }
    Ok(())
}

/// `x = exp(x)` of a softmax's exponents (`x <= 0`, or NaN) for each chain `[x, t1, t2]`, with
/// the constants in registers, one step for all chains before the next (their latencies
/// overlap): `bertc_numerics::exp`'s operations, but for two that give the same bits on these
/// inputs. The upper clamp is left out (a no-op for `x <= 0`; a NaN still becomes `EXP_LO`),
/// and `p · 2ⁿ` is one `vscalefps` of `p` by the float `n` instead of a multiplication by `2ⁿ`
/// built in the exponent bits: both are the correctly rounded product, and `2ⁿ` is a normal
/// float for every `n` the clamp allows (-126..=0).
fn exp16_chains(a: &mut CodeAssembler, chains: &[[AsmRegisterZmm; 3]]) -> Result<(), IcedError> {
    let [lo, magic, log2e, ln2_hi, ln2_lo, c0, c @ ..] = EXP_REGS;
    type Step<'a> = &'a dyn Fn(&mut CodeAssembler, [AsmRegisterZmm; 3]) -> Result<(), IcedError>;
    let each = |a: &mut CodeAssembler, f: Step| -> Result<(), IcedError> {
        for &regs in chains {
            f(a, regs)?;
        }
        Ok(())
    };
    each(a, &|a, [x, _, _]| a.vmaxps(x, x, lo))?;
    // n = (x log2(e) + magic) - magic, rounded to an integer
    each(a, &|a, [_, n, _]| a.vmovaps(n, magic))?;
    each(a, &|a, [x, n, _]| a.vfmadd231ps(n, x, log2e))?;
    each(a, &|a, [_, n, _]| a.vsubps(n, n, magic))?;
    // r = x - n ln 2, then the polynomial in r
    each(a, &|a, [x, n, _]| a.vfmadd231ps(x, n, ln2_hi))?;
    each(a, &|a, [x, n, _]| a.vfmadd231ps(x, n, ln2_lo))?;
    each(a, &|a, [_, _, p]| a.vmovaps(p, c0))?;
    for m in c {
        each(a, &|a, [x, _, p]| a.vfmadd213ps(p, x, m))?;
    }
    each(a, &|a, [x, n, p]| a.vscalefps(x, p, n))
}

//! aarch64: NEON's 128-bit vectors (4 f32 lanes, 32 registers) for the portable Cranelift
//! kernels and, with Armv8.2's dot product (`--cpu neoverse-n1`, feature `dotprod`), a
//! hand-assembled int8 GEMM tile on `sdot` (A64 has no assembler crate among bertc's
//! dependencies: the few instructions the tile needs are encoded by `A64`, each checked
//! against the GNU assembler in the tests); with Armv8.6's int8 matrix multiply as well
//! (`--cpu neoverse-v1`, feature `i8mm`), a tile on `smmla`, twice the `sdot` tile's
//! multiply-adds an instruction.

use bertc_targets::Target;

use super::{GemmKernels, Isa, MicroEpi};
use crate::lower::{CodegenError, LayoutKind, QFormat, PANEL, QPANEL_HEADER};

pub fn isa(target: &Target) -> Isa {
    let gemm = if target.has("i8mm") {
        vec![GemmKernels {
            family: "neon_smmla_q8_6x16",
            dtype: bertc_ir::DType::I8,
            layout: LayoutKind::QPanels(QFormat::Octs),
            mr: SMMLA_MR,
            nr: PANEL,
            epilogues: false,
            accumulates: false,
            wide: false,
            assemble: smmla_qkernel,
        }]
    } else if target.has("dotprod") {
        vec![GemmKernels {
            family: "neon_sdot_q8_6x16",
            dtype: bertc_ir::DType::I8,
            layout: LayoutKind::QPanels(QFormat::Quads),
            mr: SDOT_MR,
            nr: PANEL,
            epilogues: false,
            accumulates: false,
            wide: false,
            assemble: sdot_qkernel,
        }]
    } else {
        vec![]
    };
    Isa {
        name: "aarch64 NEON",
        lanes: 4,
        fma: true,
        regs: 32,
        gemm,
        softmax: None,
        layer_norm: None,
        quantize: None,
        fma_peak: None,
        caches: target.caches,
    }
}

/// Rows of the `sdot` tile: 4 accumulators a row (16 columns of i32), so 24 of the 32
/// registers, with the panel's four vectors, a row's broadcast bytes (two, alternating) and
/// the constant 0x80.
pub const SDOT_MR: usize = 6;

/// Rows of the `smmla` tile: three pairs of rows, eight accumulators a pair (each a 2 x 2
/// block of i32: two rows by two columns), so 24 registers, with half a panel's four vectors
/// and the three pairs' rows.
pub const SMMLA_MR: usize = 6;

/// The int8 tiles' arguments (AAPCS64: x0..x7): `a, lda, bp, c, ldc, steps, pf, pf_step`.
const ARGS: [X; 8] = [0, 1, 2, 3, 4, 5, 6, 7];
/// The panel's header (biases, scales), kept for after the k loop.
const HEADER: X = 9;
/// Row 0's pointer; row `r`'s is `ROW0 + r` (up to x15).
const ROW0: X = 10;

/// The few A64 instructions the int8 tiles need, encoded into 32-bit words.
#[derive(Default)]
struct A64 {
    code: Vec<u32>,
}

/// A general register `x0..x30` (31: xzr or sp, by instruction).
type X = u32;
/// A vector register `v0..v31`.
type V = u32;

impl A64 {
    fn emit(&mut self, w: u32) {
        self.code.push(w);
    }

    fn here(&self) -> usize {
        self.code.len()
    }

    /// `mov xd, xm`
    fn mov(&mut self, d: X, m: X) {
        self.emit(0xAA00_03E0 | (m << 16) | d);
    }

    /// `add xd, xn, #imm` (imm < 4096)
    fn add_imm(&mut self, d: X, n: X, imm: u32) {
        assert!(imm < 4096);
        self.emit(0x9100_0000 | (imm << 10) | (n << 5) | d);
    }

    /// `add xd, xn, xm`
    fn add(&mut self, d: X, n: X, m: X) {
        self.emit(0x8B00_0000 | (m << 16) | (n << 5) | d);
    }

    /// `subs xd, xn, #imm`
    fn subs_imm(&mut self, d: X, n: X, imm: u32) {
        assert!(imm < 4096);
        self.emit(0xF100_0000 | (imm << 10) | (n << 5) | d);
    }

    /// `b.ne` to the instruction at index `to`.
    fn b_ne(&mut self, to: usize) {
        let off = (to as i64 - self.here() as i64) as u32 & 0x7_FFFF;
        self.emit(0x5400_0001 | (off << 5));
    }

    /// `cbz xt` to a later instruction: returns the index to `patch`.
    fn cbz(&mut self, t: X) -> usize {
        self.emit(0xB400_0000 | t);
        self.here() - 1
    }

    /// Points the branch at `at` to the next instruction.
    fn patch(&mut self, at: usize) {
        let off = (self.here() - at) as u32;
        self.code[at] |= (off & 0x7_FFFF) << 5;
    }

    fn ret(&mut self) {
        self.emit(0xD65F_03C0);
    }

    /// `prfm pldl1keep, [xn]`
    fn prfm(&mut self, n: X) {
        self.emit(0xF980_0000 | (n << 5));
    }

    /// `ld1 {vt.16b - vt+3.16b}, [xn], #64`
    fn ld1x4_post(&mut self, t: V, n: X) {
        self.emit(0x4CDF_2000 | (n << 5) | t);
    }

    /// `ld1 {vt.4s - vt+3.4s}, [xn]`
    fn ld1x4(&mut self, t: V, n: X) {
        self.emit(0x4C40_2800 | (n << 5) | t);
    }

    /// `ld1r {vt.4s}, [xn], #4`
    fn ld1r_post(&mut self, t: V, n: X) {
        self.emit(0x4DDF_C800 | (n << 5) | t);
    }

    /// `ldr dt, [xn], #8`
    fn ldr_d_post8(&mut self, t: V, n: X) {
        self.emit(0xFC40_8400 | (n << 5) | t);
    }

    /// `ld1 {vt.d}[1], [xn], #8`
    fn ld1_d1_post(&mut self, t: V, n: X) {
        self.emit(0x4DDF_8400 | (n << 5) | t);
    }

    /// `ld1r {vt.4s}, [xn]`
    fn ld1r(&mut self, t: V, n: X) {
        self.emit(0x4D40_C800 | (n << 5) | t);
    }

    /// `ldr qt, [xn, #imm]` (imm a multiple of 16)
    fn ldr_q(&mut self, t: V, n: X, imm: u32) {
        assert!(imm % 16 == 0 && imm / 16 < 4096);
        self.emit(0x3DC0_0000 | ((imm / 16) << 10) | (n << 5) | t);
    }

    /// `str qt, [xn, #imm]` (imm a multiple of 16)
    fn str_q(&mut self, t: V, n: X, imm: u32) {
        assert!(imm % 16 == 0 && imm / 16 < 4096);
        self.emit(0x3D80_0000 | ((imm / 16) << 10) | (n << 5) | t);
    }

    /// `movi vd.16b, #imm`
    fn movi16b(&mut self, d: V, imm: u8) {
        let (abc, defgh) = (u32::from(imm) >> 5, u32::from(imm) & 31);
        self.emit(0x4F00_E400 | (abc << 16) | (defgh << 5) | d);
    }

    /// `movi vd.2d, #0`
    fn zero(&mut self, d: V) {
        self.emit(0x6F00_E400 | d);
    }

    /// `eor vd.16b, vn.16b, vm.16b`
    fn eor(&mut self, d: V, n: V, m: V) {
        self.emit(0x6E20_1C00 | (m << 16) | (n << 5) | d);
    }

    /// `mov vd.16b, vn.16b`
    fn vmov(&mut self, d: V, n: V) {
        self.emit(0x4EA0_1C00 | (n << 16) | (n << 5) | d);
    }

    /// `sdot vd.4s, vn.16b, vm.16b`
    fn sdot(&mut self, d: V, n: V, m: V) {
        self.emit(0x4E80_9400 | (m << 16) | (n << 5) | d);
    }

    /// `smmla vd.4s, vn.16b, vm.16b`: `d[2i + j] += Σ_k n[8i + k] m[8j + k]`, the 2 x 8
    /// signed bytes of `n` times the transpose of `m`'s.
    fn smmla(&mut self, d: V, n: V, m: V) {
        self.emit(0x4E80_A400 | (m << 16) | (n << 5) | d);
    }

    /// `zip1 vd.2d, vn.2d, vm.2d` (`zip2`: `high`): the low (high) halves of `n` and `m`.
    fn zip_2d(&mut self, d: V, n: V, m: V, high: bool) {
        let op = if high { 0x4EC0_7800 } else { 0x4EC0_3800 };
        self.emit(op | (m << 16) | (n << 5) | d);
    }

    /// `scvtf vd.4s, vn.4s`
    fn scvtf(&mut self, d: V, n: V) {
        self.emit(0x4E21_D800 | (n << 5) | d);
    }

    /// `fmul vd.4s, vn.4s, vm.4s`
    fn fmul(&mut self, d: V, n: V, m: V) {
        self.emit(0x6E20_DC00 | (m << 16) | (n << 5) | d);
    }

    /// `fmla vd.4s, vn.4s, vm.4s` (`d += n m`, one rounding)
    fn fmla(&mut self, d: V, n: V, m: V) {
        self.emit(0x4E20_CC00 | (m << 16) | (n << 5) | d);
    }

    /// `stp dt1, dt2, [sp, #off]` (`pre`: `[sp, #off]!`), off a multiple of 8
    fn stp_d(&mut self, t1: V, t2: V, off: i32, pre: bool) {
        let imm = ((off / 8) as u32) & 0x7F;
        let op = if pre { 0x6D80_0000 } else { 0x6D00_0000 };
        self.emit(op | (imm << 15) | (t2 << 10) | (31 << 5) | t1);
    }

    /// `ldp dt1, dt2, [sp, #off]` (`post`: `[sp], #off`), off a multiple of 8
    fn ldp_d(&mut self, t1: V, t2: V, off: i32, post: bool) {
        let imm = ((off / 8) as u32) & 0x7F;
        let op = if post { 0x6CC0_0000 } else { 0x6D40_0000 };
        self.emit(op | (imm << 15) | (t2 << 10) | (31 << 5) | t1);
    }

    fn bytes(&self) -> Vec<u8> {
        self.code.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

/// The int8 GEMM tile on Armv8.2's `sdot`: `kernel(a, lda, bp, c, ldc, quads[, pf, pf_step])`
/// (AAPCS64, x0..x7) over rows quantized in fours (`QFormat::Quads`: `4 quads` signed bytes,
/// the `-128 Σ xq` term, the f32 scale) and one panel in fours (`pack_qlinear`: 16 biases, 16
/// scales, then for each four of k the 16 columns' `w + 128` as bytes). An `mr x 16` tile
/// (`mr <= SDOT_MR`), four accumulators a row: each four of k loads the panel's 64 bytes,
/// flips their top bits (`w + 128` XOR 0x80 is `w` as a signed byte, so the row's sum term is
/// not needed), and for each row broadcasts its four bytes (`ld1r`) into one `sdot` per four
/// columns, exact i32 sums of `w xq` (at most 4 · 128 · 127 a step). Then, as every int8
/// tile, `fma(f32(acc), s_col · s_row, bias)` (`fmul` then `fmla`: one rounding each) and the
/// store; the linear's activation and residual run after the tile (`epilogues: false`).
pub fn sdot_qkernel(mr: usize, epi: MicroEpi) -> Result<Vec<u8>, CodegenError> {
    assert!((1..=SDOT_MR).contains(&mr), "mr out of range");
    assert!(
        epi.act.is_none() && !epi.residual && !epi.accumulate && !epi.wide,
        "the sdot tile stores the tile as it is"
    );
    let [a, lda, bp, _, _, steps, pf, pf_step] = ARGS;
    let (header, row0) = (HEADER, ROW0);
    let acc = |r: usize, j: usize| (4 * r + j) as V;
    let (b0, x80, xa, xt) = (25, 31, [29, 30], 24);
    let mut s = A64::default();
    // d8..d15 are callee-saved (AAPCS64): rows 2 and 3's accumulators
    save_d8_d15(&mut s);
    s.mov(header, bp);
    s.add_imm(bp, bp, QPANEL_HEADER as u32);
    s.mov(row0, a);
    for r in 1..mr as u32 {
        s.add(row0 + r, row0 + r - 1, lda);
    }
    for r in 0..mr {
        for j in 0..4 {
            s.zero(acc(r, j));
        }
    }
    s.movi16b(x80, 0x80);
    let done = s.cbz(steps);
    let top = s.here();
    s.ld1x4_post(b0, bp);
    for j in 0..4 {
        s.eor(b0 + j, b0 + j, x80);
    }
    if epi.prefetch {
        s.prfm(pf);
        s.add(pf, pf, pf_step);
    }
    for r in 0..mr {
        let x = xa[r % 2];
        s.ld1r_post(x, row0 + r as u32);
        for j in 0..4 {
            s.sdot(acc(r, j), b0 + j as u32, x);
        }
    }
    s.subs_imm(steps, steps, 1);
    s.b_ne(top);
    s.patch(done);
    store_rows(&mut s, mr, &acc, [b0, x80, xa[0], xa[1], xt]);
    restore_d8_d15_ret(&mut s);
    Ok(s.bytes())
}

/// The int8 tiles' end: with the panel's header at x9 and row `r`'s pointer (x10 + r) at its
/// sum term, each row's i32 sums in `acc(r, j)` (columns `4j..4j + 4`) become
/// `fma(f32(acc), s_col · s_row, bias)`, stored at x3 (stride x4). `free`: five vector
/// registers the tile no longer needs (the biases take four from the first).
fn store_rows(s: &mut A64, mr: usize, acc: &dyn Fn(usize, usize) -> V, free: [V; 5]) {
    let [.., c, ldc, _, _, _] = ARGS;
    let (header, row0) = (HEADER, ROW0);
    let [bias, row_scale, col_scale, prod, out] = free;
    s.ld1x4(bias, header);
    s.add_imm(header, header, 64);
    for r in 0..mr {
        let row = row0 + r as u32;
        s.add_imm(row, row, 4);
        s.ld1r(row_scale, row);
        for j in 0..4u32 {
            let v = acc(r, j as usize);
            s.ldr_q(col_scale, header, 16 * j);
            s.fmul(prod, col_scale, row_scale);
            s.scvtf(v, v);
            s.vmov(out, bias + j);
            s.fmla(out, v, prod);
            s.str_q(out, c, 16 * j);
        }
        s.add(c, c, ldc);
    }
}

/// Saves d8..d15, callee-saved under AAPCS64, on the stack.
fn save_d8_d15(s: &mut A64) {
    s.stp_d(8, 9, -64, true);
    s.stp_d(10, 11, 16, false);
    s.stp_d(12, 13, 32, false);
    s.stp_d(14, 15, 48, false);
}

/// Restores d8..d15 and returns.
fn restore_d8_d15_ret(s: &mut A64) {
    s.ldp_d(10, 11, 16, false);
    s.ldp_d(12, 13, 32, false);
    s.ldp_d(14, 15, 48, false);
    s.ldp_d(8, 9, 64, true);
    s.ret();
}

/// The int8 GEMM tile on Armv8.6's `smmla`: `kernel(a, lda, bp, c, ldc, eights[, pf,
/// pf_step])` (AAPCS64, x0..x7) over rows quantized in eights (`QFormat::Octs`: `8 eights`
/// signed bytes, the unused sum term, the f32 scale) and one panel in eights (`pack_qlinear`:
/// 16 biases, 16 scales, then for each eight of k the 16 columns' signed bytes, eight a
/// column, so that each 16 bytes are two adjacent columns). An `mr x 16` tile (`mr <=
/// SMMLA_MR`) in pairs of rows: each eight of k loads each pair's two rows' eight bytes into
/// the two halves of one register (a last odd row is paired with itself, not stored) and, for
/// each half of the panel (four registers of two columns), one `smmla` a pair and register:
/// its 2 x 2 block of exact i32 sums gains 16 products (at most 8 · 128 · 128 a step). After
/// the loop, `zip1`/`zip2` on the blocks' 64-bit halves turn each pair's eight blocks into
/// the two rows' four vectors of four columns; then, as every int8 tile, `fma(f32(acc),
/// s_col · s_row, bias)` and the store (`epilogues: false`).
pub fn smmla_qkernel(mr: usize, epi: MicroEpi) -> Result<Vec<u8>, CodegenError> {
    assert!((1..=SMMLA_MR).contains(&mr), "mr out of range");
    assert!(
        epi.act.is_none() && !epi.residual && !epi.accumulate && !epi.wide,
        "the smmla tile stores the tile as it is"
    );
    let [a, lda, bp, _, _, steps, pf, pf_step] = ARGS;
    let (header, row0) = (HEADER, ROW0);
    let pairs = mr.div_ceil(2);
    // pair p's block of columns 2j, 2j + 1
    let acc = |p: usize, j: usize| (8 * p + j) as V;
    let (b0, a0) = (24, 28);
    let mut s = A64::default();
    save_d8_d15(&mut s);
    s.mov(header, bp);
    s.add_imm(bp, bp, QPANEL_HEADER as u32);
    // row pointers x10.., a last odd row's partner a copy of it
    s.mov(row0, a);
    for r in 1..mr as u32 {
        s.add(row0 + r, row0 + r - 1, lda);
    }
    if mr % 2 == 1 {
        s.mov(row0 + mr as u32, row0 + mr as u32 - 1);
    }
    for p in 0..pairs {
        for j in 0..8 {
            s.zero(acc(p, j));
        }
    }
    let done = s.cbz(steps);
    let top = s.here();
    for p in 0..pairs {
        let x = (a0 + p) as V;
        s.ldr_d_post8(x, row0 + 2 * p as u32);
        s.ld1_d1_post(x, row0 + 2 * p as u32 + 1);
    }
    if epi.prefetch {
        s.prfm(pf);
        s.add(pf, pf, pf_step);
    }
    for half in 0..2 {
        s.ld1x4_post(b0, bp);
        for p in 0..pairs {
            for j in 0..4 {
                s.smmla(acc(p, 4 * half + j), (a0 + p) as V, b0 + j as V);
            }
        }
    }
    s.subs_imm(steps, steps, 1);
    s.b_ne(top);
    s.patch(done);
    // blocks to rows: pair p's row 2p in acc(p, 2q), row 2p + 1 in acc(p, 2q + 1), q the four
    // columns 4q..4q + 3
    let (t0, t1) = (30, 31);
    for p in 0..pairs {
        for q in 0..4 {
            let (lo, hi) = (acc(p, 2 * q), acc(p, 2 * q + 1));
            s.zip_2d(t0, lo, hi, false);
            s.zip_2d(t1, lo, hi, true);
            s.vmov(lo, t0);
            s.vmov(hi, t1);
        }
    }
    let row_acc = |r: usize, q: usize| acc(r / 2, 2 * q + r % 2);
    store_rows(&mut s, mr, &row_acc, [b0, 28, 29, 30, 31]);
    restore_d8_d15_ret(&mut s);
    Ok(s.bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every encoding against the GNU assembler's (`aarch64-linux-gnu-as`), when it is here.
    #[test]
    fn encodings_match_the_gnu_assembler() {
        let mut s = A64::default();
        let mut text = Vec::new();
        fn op(s: &mut A64, text: &mut Vec<String>, t: &str, f: &dyn Fn(&mut A64)) {
            f(s);
            text.push(t.to_string());
        }
        op(&mut s, &mut text, "mov x9, x2", &|s| s.mov(9, 2));
        op(&mut s, &mut text, "add x2, x2, #128", &|s| {
            s.add_imm(2, 2, 128)
        });
        op(&mut s, &mut text, "add x11, x10, x1", &|s| s.add(11, 10, 1));
        op(&mut s, &mut text, "subs x5, x5, #1", &|s| {
            s.subs_imm(5, 5, 1)
        });
        op(&mut s, &mut text, "prfm pldl1keep, [x6]", &|s| s.prfm(6));
        op(
            &mut s,
            &mut text,
            "ld1 {v25.16b-v28.16b}, [x2], #64",
            &|s| s.ld1x4_post(25, 2),
        );
        op(&mut s, &mut text, "ld1 {v25.4s-v28.4s}, [x9]", &|s| {
            s.ld1x4(25, 9)
        });
        op(&mut s, &mut text, "ld1r {v29.4s}, [x13], #4", &|s| {
            s.ld1r_post(29, 13)
        });
        op(&mut s, &mut text, "ld1r {v31.4s}, [x15]", &|s| {
            s.ld1r(31, 15)
        });
        op(&mut s, &mut text, "ldr q29, [x9, #48]", &|s| {
            s.ldr_q(29, 9, 48)
        });
        op(&mut s, &mut text, "str q24, [x3, #32]", &|s| {
            s.str_q(24, 3, 32)
        });
        op(&mut s, &mut text, "movi v31.16b, #0x80", &|s| {
            s.movi16b(31, 0x80)
        });
        op(&mut s, &mut text, "movi v7.2d, #0", &|s| s.zero(7));
        op(&mut s, &mut text, "eor v26.16b, v26.16b, v31.16b", &|s| {
            s.eor(26, 26, 31)
        });
        op(&mut s, &mut text, "mov v24.16b, v27.16b", &|s| {
            s.vmov(24, 27)
        });
        op(&mut s, &mut text, "sdot v23.4s, v28.16b, v30.16b", &|s| {
            s.sdot(23, 28, 30)
        });
        op(&mut s, &mut text, "scvtf v5.4s, v5.4s", &|s| s.scvtf(5, 5));
        op(&mut s, &mut text, "ldr d28, [x10], #8", &|s| {
            s.ldr_d_post8(28, 10)
        });
        op(&mut s, &mut text, "ld1 {v29.d}[1], [x13], #8", &|s| {
            s.ld1_d1_post(29, 13)
        });
        op(&mut s, &mut text, "smmla v17.4s, v30.16b, v26.16b", &|s| {
            s.smmla(17, 30, 26)
        });
        op(&mut s, &mut text, "zip1 v30.2d, v4.2d, v5.2d", &|s| {
            s.zip_2d(30, 4, 5, false)
        });
        op(&mut s, &mut text, "zip2 v31.2d, v22.2d, v23.2d", &|s| {
            s.zip_2d(31, 22, 23, true)
        });
        op(&mut s, &mut text, "fmul v30.4s, v29.4s, v31.4s", &|s| {
            s.fmul(30, 29, 31)
        });
        op(&mut s, &mut text, "fmla v24.4s, v5.4s, v30.4s", &|s| {
            s.fmla(24, 5, 30)
        });
        op(&mut s, &mut text, "ret", &|s| s.ret());
        op(&mut s, &mut text, "stp d8, d9, [sp, #-64]!", &|s| {
            s.stp_d(8, 9, -64, true)
        });
        op(&mut s, &mut text, "stp d14, d15, [sp, #48]", &|s| {
            s.stp_d(14, 15, 48, false)
        });
        op(&mut s, &mut text, "ldp d12, d13, [sp, #32]", &|s| {
            s.ldp_d(12, 13, 32, false)
        });
        op(&mut s, &mut text, "ldp d8, d9, [sp], #64", &|s| {
            s.ldp_d(8, 9, 64, true)
        });
        // branches: a cbz over two instructions, a b.ne three back
        let at = s.cbz(5);
        text.push("cbz x5, 1f".into());
        op(&mut s, &mut text, "add x2, x2, #1", &|s| s.add_imm(2, 2, 1));
        op(&mut s, &mut text, "add x2, x2, #2", &|s| s.add_imm(2, 2, 2));
        s.patch(at);
        text.push("1:".into());
        let back = s.here() - 3;
        s.b_ne(back);
        text.push("b.ne .-12".into());
        super::super::assert_encodes_as_gnu(
            "aarch64-linux-gnu",
            "armv8.2-a+dotprod+i8mm",
            &text,
            &s.code,
        );
    }
}

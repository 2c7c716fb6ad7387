//! riscv64: with the vector extension (`v`, VLEN at least 128), 4 f32 lanes for the portable
//! Cranelift kernels and a hand-assembled int8 GEMM tile on the widening multiply-accumulate
//! (`vwmacc.vx`); without it scalar code. The few RV64GCV instructions the tile needs are
//! encoded by `Rv`, each checked against the GNU assembler in the tests.

use bertc_targets::Target;

use super::{GemmKernels, Isa, MicroEpi};
use crate::lower::{CodegenError, LayoutKind, QFormat, PANEL, QPANEL_HEADER};

pub fn isa(target: &Target) -> Isa {
    let v = target.has("v");
    let gemm = if v {
        vec![GemmKernels {
            family: "rvv_q16_5x16",
            dtype: bertc_ir::DType::I8,
            layout: LayoutKind::QPanels(QFormat::Pairs),
            mr: RVV_MR,
            nr: PANEL,
            epilogues: false,
            accumulates: false,
            wide: false,
            assemble: rvv_qkernel,
        }]
    } else {
        vec![]
    };
    Isa {
        name: if v { "riscv64 V" } else { "riscv64 scalar" },
        lanes: if v { 4 } else { 1 },
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

/// Rows of the RVV tile: a row's 16 i32 sums are one register group of four (LMUL 4 at
/// VLEN 128), and five groups leave one for the epilogue's products, one for the biases (which
/// the k loop's weights use first) and one for the scales.
pub const RVV_MR: usize = 5;

/// The few RV64GCV instructions the tile needs, encoded into 32-bit words.
#[derive(Default)]
struct Rv {
    code: Vec<u32>,
}

/// A general register `x0..x31`.
type X = u32;
/// A vector register `v0..v31` (the first of a group).
type V = u32;

/// Element width and group size of `vsetivli`: e8 m1, e16 m2, e32 m4, each tail and mask
/// agnostic.
#[derive(Clone, Copy)]
enum Vtype {
    E8M1,
    E16M2,
    E32M4,
}

impl Rv {
    fn emit(&mut self, w: u32) {
        self.code.push(w);
    }

    fn here(&self) -> usize {
        self.code.len()
    }

    /// `addi rd, rs1, imm`
    fn addi(&mut self, d: X, s: X, imm: i32) {
        assert!((-2048..2048).contains(&imm));
        self.emit(((imm as u32 & 0xFFF) << 20) | (s << 15) | (d << 7) | 0x13);
    }

    /// `add rd, rs1, rs2`
    fn add(&mut self, d: X, s1: X, s2: X) {
        self.emit((s2 << 20) | (s1 << 15) | (d << 7) | 0x33);
    }

    /// `lh rd, imm(rs1)`
    fn lh(&mut self, d: X, s: X, imm: i32) {
        self.emit(((imm as u32 & 0xFFF) << 20) | (s << 15) | (1 << 12) | (d << 7) | 0x03);
    }

    /// `flw fd, imm(rs1)`
    fn flw(&mut self, d: u32, s: X, imm: i32) {
        self.emit(((imm as u32 & 0xFFF) << 20) | (s << 15) | (2 << 12) | (d << 7) | 0x07);
    }

    /// A B-type branch (`funct3`: 0 beq, 1 bne) comparing with x0, `off` bytes on.
    fn branch_zero(&mut self, funct3: u32, s: X, off: i32) {
        let o = off as u32;
        let imm = ((o >> 12) & 1) << 31
            | ((o >> 5) & 0x3F) << 25
            | ((o >> 1) & 0xF) << 8
            | ((o >> 11) & 1) << 7;
        self.emit(imm | (s << 15) | (funct3 << 12) | 0x63);
    }

    /// `beqz rs, <later>`: returns the index to `patch`.
    fn beqz(&mut self, s: X) -> usize {
        self.branch_zero(0, s, 0);
        self.here() - 1
    }

    /// Points the `beqz` at `at` to the next instruction.
    fn patch(&mut self, at: usize) {
        let s = (self.code[at] >> 15) & 31;
        let off = 4 * (self.here() - at) as i32;
        let mut sub = Rv::default();
        sub.branch_zero(0, s, off);
        self.code[at] = sub.code[0];
    }

    /// `bnez rs, <the instruction at index to>`
    fn bnez(&mut self, s: X, to: usize) {
        let off = 4 * (to as i32 - self.here() as i32);
        self.branch_zero(1, s, off);
    }

    fn ret(&mut self) {
        self.emit(0x0000_8067);
    }

    /// `vsetivli x0, avl, vtype, ta, ma`
    fn vsetivli(&mut self, avl: u32, t: Vtype) {
        let vt = match t {
            Vtype::E8M1 => 0b1100_0000,
            Vtype::E16M2 => 0b1100_1001,
            Vtype::E32M4 => 0b1101_0010,
        };
        self.emit((0b11 << 30) | (vt << 20) | (avl << 15) | (0b111 << 12) | 0x57);
    }

    /// `vlse8.v vd, (rs1), rs2`
    fn vlse8(&mut self, d: V, s: X, stride: X) {
        self.emit((0b10 << 26) | (1 << 25) | (stride << 20) | (s << 15) | (d << 7) | 0x07);
    }

    /// `vle32.v vd, (rs1)`
    fn vle32(&mut self, d: V, s: X) {
        self.emit((1 << 25) | (s << 15) | (0b110 << 12) | (d << 7) | 0x07);
    }

    /// `vse32.v vs3, (rs1)`
    fn vse32(&mut self, v: V, s: X) {
        self.emit((1 << 25) | (s << 15) | (0b110 << 12) | (v << 7) | 0x27);
    }

    /// An unmasked OP-V instruction.
    fn opv(&mut self, funct6: u32, vs2: u32, vs1: u32, funct3: u32, vd: u32) {
        self.emit(
            (funct6 << 26)
                | (1 << 25)
                | (vs2 << 20)
                | (vs1 << 15)
                | (funct3 << 12)
                | (vd << 7)
                | 0x57,
        );
    }

    /// `vmv.v.i vd, 0`
    fn vzero(&mut self, d: V) {
        self.opv(0b010111, 0, 0, 0b011, d);
    }

    /// `vsext.vf2 vd, vs2`
    fn vsext2(&mut self, d: V, s: V) {
        self.opv(0b010010, s, 0b00111, 0b010, d);
    }

    /// `vwmacc.vx vd, rs1, vs2`: `vd += x[rs1] · vs2`, widened to 2 SEW
    fn vwmacc(&mut self, d: V, x: X, s: V) {
        self.opv(0b111101, s, x, 0b110, d);
    }

    /// `vfcvt.f.x.v vd, vs2`
    fn vfcvt(&mut self, d: V, s: V) {
        self.opv(0b010010, s, 0b00011, 0b001, d);
    }

    /// `vfmul.vf vd, vs2, fs1`
    fn vfmul_f(&mut self, d: V, s: V, f: u32) {
        self.opv(0b100100, s, f, 0b101, d);
    }

    /// `vfmadd.vv vd, vs1, vs2`: `vd = vs1 · vd + vs2`, one rounding
    fn vfmadd(&mut self, d: V, s1: V, s2: V) {
        self.opv(0b101000, s2, s1, 0b001, d);
    }

    fn bytes(&self) -> Vec<u8> {
        self.code.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

/// The int8 GEMM tile on RVV: `kernel(a, lda, bp, c, ldc, pairs[, pf, pf_step])` (LP64,
/// a0..a7; the prefetch arguments are ignored: base RVV has no prefetch) over rows of 16-bit
/// integers in pairs (`QFormat::Pairs`, any activation width) and one panel in pairs
/// (`pack_qlinear`: 16 biases, 16 scales, then for each pair of k the 16 columns' two signed
/// bytes). An `mr x 16` tile (`mr <= RVV_MR`), a group of four vector registers a row (16
/// i32 at VLEN 128; `vl` is set to 16, so wider vectors work alike): each k gathers its 16
/// weights (a strided load), sign-extends them to 16 bits, and for each row adds the row's
/// 16-bit integer times them with one widening multiply-accumulate into the row's i32 sums
/// (exact: the products fit 31 bits, as in every pair kernel). Then `fma(f32(acc), s_col ·
/// s_row, bias)` (`vfmul.vf`, `vfmadd.vv`: one rounding each) and the store; the linear's
/// activation and residual run after the tile (`epilogues: false`).
pub fn rvv_qkernel(mr: usize, epi: MicroEpi) -> Result<Vec<u8>, CodegenError> {
    assert!((1..=RVV_MR).contains(&mr), "mr out of range");
    assert!(
        epi.act.is_none() && !epi.residual && !epi.accumulate && !epi.wide,
        "the RVV tile stores the tile as it is"
    );
    // a0..a7 = x10..x17; the rows in t0, t1, t2, t3, t4; t5 the stride, t6 scratch
    let (a, lda, bp, c, ldc, pairs, header, xv) = (10, 11, 12, 13, 14, 15, 16, 17);
    let rows = [5, 6, 7, 28, 29];
    let (stride, t6) = (30, 31);
    let acc = |r: usize| 4 * (r as u32 + 1);
    // the k loop's weights: bytes in v0, v1, widened in v24 and v26; after it the biases in
    // v0 (a group of four), the products in v24, the scales in v28
    let (w8, w16) = ([0, 1], [24, 26]);
    let (bias, prod, scales) = (0, 24, 28);
    let mut s = Rv::default();
    s.addi(header, bp, 0);
    s.addi(bp, bp, QPANEL_HEADER as i32);
    s.addi(rows[0], a, 0);
    for r in 1..mr {
        s.add(rows[r], rows[r - 1], lda);
    }
    s.vsetivli(PANEL as u32, Vtype::E32M4);
    for r in 0..mr {
        s.vzero(acc(r));
    }
    s.addi(stride, 0, 2);
    let done = s.beqz(pairs);
    let top = s.here();
    s.vsetivli(PANEL as u32, Vtype::E8M1);
    s.vlse8(w8[0], bp, stride);
    s.addi(t6, bp, 1);
    s.vlse8(w8[1], t6, stride);
    s.vsetivli(PANEL as u32, Vtype::E16M2);
    for j in 0..2 {
        s.vsext2(w16[j], w8[j]);
    }
    for (r, &row) in rows.iter().enumerate().take(mr) {
        for (j, &w) in w16.iter().enumerate() {
            s.lh(xv, row, 2 * j as i32);
            s.vwmacc(acc(r), xv, w);
        }
        s.addi(row, row, 4);
    }
    s.addi(bp, bp, (2 * PANEL) as i32);
    s.addi(pairs, pairs, -1);
    s.bnez(pairs, top);
    s.patch(done);
    // each row's pointer is now at its scale
    s.vsetivli(PANEL as u32, Vtype::E32M4);
    s.vle32(bias, header);
    s.addi(header, header, 64);
    s.vle32(scales, header);
    for (r, &row) in rows.iter().enumerate().take(mr) {
        s.flw(0, row, 0);
        s.vfcvt(acc(r), acc(r));
        s.vfmul_f(prod, scales, 0);
        s.vfmadd(acc(r), prod, bias);
        s.vse32(acc(r), c);
        s.add(c, c, ldc);
    }
    s.ret();
    Ok(s.bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(s: &mut Rv, text: &mut Vec<String>, t: &str, f: &dyn Fn(&mut Rv)) {
        f(s);
        text.push(t.to_string());
    }

    /// Every encoding against the GNU assembler's (`riscv64-linux-gnu-as`), when it is here.
    #[test]
    fn encodings_match_the_gnu_assembler() {
        let mut s = Rv::default();
        let mut t = Vec::new();
        op(&mut s, &mut t, "addi a6, a2, 0", &|s| s.addi(16, 12, 0));
        op(&mut s, &mut t, "addi a5, a5, -1", &|s| s.addi(15, 15, -1));
        op(&mut s, &mut t, "add t3, t2, a1", &|s| s.add(28, 7, 11));
        op(&mut s, &mut t, "lh a7, 2(t4)", &|s| s.lh(17, 29, 2));
        op(&mut s, &mut t, "flw ft0, 0(t3)", &|s| s.flw(0, 28, 0));
        op(&mut s, &mut t, "ret", &|s| s.ret());
        op(&mut s, &mut t, "vsetivli zero, 16, e8, m1, ta, ma", &|s| {
            s.vsetivli(16, Vtype::E8M1)
        });
        op(&mut s, &mut t, "vsetivli zero, 16, e16, m2, ta, ma", &|s| {
            s.vsetivli(16, Vtype::E16M2)
        });
        op(&mut s, &mut t, "vsetivli zero, 16, e32, m4, ta, ma", &|s| {
            s.vsetivli(16, Vtype::E32M4)
        });
        op(&mut s, &mut t, "vlse8.v v1, (t6), t5", &|s| {
            s.vlse8(1, 31, 30)
        });
        op(&mut s, &mut t, "vle32.v v28, (a6)", &|s| s.vle32(28, 16));
        op(&mut s, &mut t, "vse32.v v20, (a3)", &|s| s.vse32(20, 13));
        op(&mut s, &mut t, "vmv.v.i v12, 0", &|s| s.vzero(12));
        op(&mut s, &mut t, "vsext.vf2 v26, v1", &|s| s.vsext2(26, 1));
        op(&mut s, &mut t, "vwmacc.vx v16, a7, v24", &|s| {
            s.vwmacc(16, 17, 24)
        });
        op(&mut s, &mut t, "vfcvt.f.x.v v8, v8", &|s| s.vfcvt(8, 8));
        op(&mut s, &mut t, "vfmul.vf v24, v28, ft0", &|s| {
            s.vfmul_f(24, 28, 0)
        });
        op(&mut s, &mut t, "vfmadd.vv v4, v24, v0", &|s| {
            s.vfmadd(4, 24, 0)
        });
        // branches: a beqz over two instructions, a bnez three back
        let at = s.beqz(15);
        t.push("beqz a5, 1f".into());
        op(&mut s, &mut t, "addi a2, a2, 1", &|s| s.addi(12, 12, 1));
        op(&mut s, &mut t, "addi a2, a2, 2", &|s| s.addi(12, 12, 2));
        s.patch(at);
        t.push("1:".into());
        let back = s.here() - 3;
        s.bnez(15, back);
        t.push("bnez a5, .-12".into());
        // no compressed instructions
        t.insert(0, ".option norvc".into());
        super::super::assert_encodes_as_gnu("riscv64-linux-gnu", "rv64gcv", &t, &s.code);
    }
}

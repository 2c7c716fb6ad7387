//! The x86-64 ISA: hand-assembled kernels (iced-x86), placed into the object beside the
//! Cranelift code with `define_function_bytes`. Cranelift's x64 backend has 128-bit vectors
//! only; these use 256-bit AVX2 registers with FMA (`avx2`), and for targets with AVX-512, a
//! GEMM microkernel on 512-bit registers (`avx512`, tested under an emulator: `emulated.rs`).
//! This file holds what both share (the epilogues, the k loop, the function frame, constants)
//! and the registry: which kernels a target's features allow.
//!
//! The GEMM microkernel `kernel(a, lda, bp, c, ldc, k[, res])` (System V: rdi, rsi, rdx, rcx,
//! r8, r9, then the stack) computes an `mr x 16` tile:
//! `c[i][0..16] = epi(bp[0..16] + sum_kk a[i*lda + kk] * bp[16 + kk*16 ..])` where `bp` is one
//! packed panel (bias row, then `k` rows of 16 weights), `lda` and `ldc` are row strides in
//! bytes, and the epilogue `epi` (an activation, then adding the tile at `res`, stride `ldc`)
//! runs on the registers before the store. `softmax` normalises rows of scores, `layer_norm`
//! rows of activations. Constants
//! (polynomial coefficients, clamps) sit after the code and are read RIP-relative, so the
//! bytes are position independent. Every kernel only touches caller-saved registers.

mod avx2;
mod avx512;
mod rows;

pub use avx2::{
    avx2_kernel, avx2_peak, avx2_qkernel, avx2_quantize, avx512_peak, avx512_quantize,
    avxvnni_qkernel, AVX2_MR,
};
pub use avx512::{avx512_kernel, avx512vnni_pairs_qkernel, avx512vnni_qkernel, AVX512_MR};
pub use rows::{avx2_layer_norm, avx2_softmax, avx512_layer_norm, avx512_softmax};

use iced_x86::code_asm::*;

#[cfg(test)]
use crate::lower::QFormat;
use crate::lower::{Act, CodegenError};
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
    /// Start the accumulators from the output tile (a partial sum of earlier steps of k)
    /// rather than from the panel's bias row; the panel argument then points at the first
    /// step's weights.
    pub accumulate: bool,
    /// Two adjacent panels: an `mr x 32` tile, the second panel the number of bytes in the
    /// last argument past the first (GEMM families with `GemmKernels::wide`).
    pub wide: bool,
}

impl MicroEpi {
    pub const NONE: MicroEpi = MicroEpi {
        act: None,
        residual: false,
        prefetch: false,
        accumulate: false,
        wide: false,
    };

    /// The kernel's argument count: `(a, lda, bp, c, ldc, k)`, then the residual tile, then
    /// the prefetch address and step, then the second panel's offset.
    pub fn args(&self) -> usize {
        6 + usize::from(self.residual) + 2 * usize::from(self.prefetch) + usize::from(self.wide)
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
        let acc = if self.accumulate { "acc" } else { "" };
        let wide = if self.wide { "w" } else { "" };
        format!("{wide}{acc}{act}{res}{pf}")
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

    /// The label of the constant with bits `bits` (added to the table the first time).
    fn label(&mut self, a: &mut CodeAssembler, bits: u32) -> CodeLabel {
        if let Some(&(_, l)) = self.items.iter().find(|(b, _)| *b == bits) {
            return l;
        }
        let l = a.create_label();
        self.items.push((bits, l));
        l
    }

    fn bits(&mut self, a: &mut CodeAssembler, bits: u32) -> AsmMemoryOperand {
        ymmword_ptr(self.label(a, bits))
    }

    fn f(&mut self, a: &mut CodeAssembler, v: f32) -> AsmMemoryOperand {
        self.bits(a, v.to_bits())
    }

    /// The constant with bits `bits` broadcast to every lane of an EVEX instruction
    /// (`{1to16}`).
    fn bcst(&mut self, a: &mut CodeAssembler, bits: u32) -> AsmMemoryOperand {
        dword_bcst(self.label(a, bits))
    }

    /// `bcst` of the f32 `v`.
    fn fb(&mut self, a: &mut CodeAssembler, v: f32) -> AsmMemoryOperand {
        self.bcst(a, v.to_bits())
    }

    /// The first lane of the constant `v`, for scalar instructions.
    fn f1(&mut self, a: &mut CodeAssembler, v: f32) -> AsmMemoryOperand {
        dword_ptr(self.label(a, v.to_bits()))
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
    let lo = k.f(a, EXP_LO);
    a.vmaxps(x, x, lo)?;
    let hi = k.f(a, EXP_HI);
    a.vminps(x, x, hi)?;
    let magic = k.f(a, EXP_MAGIC);
    a.vmovups(t1, magic)?;
    let log2e = k.f(a, std::f32::consts::LOG2_E);
    a.vfmadd231ps(t1, x, log2e)?;
    a.vsubps(t2, t1, magic)?;
    let ln2_hi = k.f(a, EXP_LN2_HI);
    a.vfmadd231ps(x, t2, ln2_hi)?;
    let ln2_lo = k.f(a, EXP_LN2_LO);
    a.vfmadd231ps(x, t2, ln2_lo)?;
    // 2^n: bits(t) = bits(magic) + n, and bits(magic) << 23 vanishes mod 2^32
    a.vpslld(t1, t1, 23)?;
    let one_bits = k.bits(a, 127 << 23);
    a.vpaddd(t1, t1, one_bits)?;
    let c = bertc_numerics::EXP_TAYLOR;
    let c0 = k.f(a, c[0]);
    a.vmovups(t2, c0)?;
    for &cv in &c[1..] {
        let m = k.f(a, cv);
        a.vfmadd213ps(t2, x, m)?;
    }
    a.vmulps(x, t2, t1)?;
    Ok(())
}

use bertc_numerics::{ERF_CLAMP, ERF_P, ERF_Q, EXP_HI, EXP_LN2_HI, EXP_LN2_LO, EXP_LO, EXP_MAGIC};

/// `y = act(y)` with the four scratch registers `t`: `act8` on ymm (constants read as
/// 8-float vectors), `act16` on zmm (constants broadcast by EVEX, `exp16`). One body, so the
/// two compute each lane with the same operations in the same order: the AVX-512 epilogue's
/// results are the AVX2 one's, bit for bit.
macro_rules! activation {
    ($name:ident, $reg:ty, $konst:ident, $exp:path) => {
        fn $name(
            a: &mut CodeAssembler,
            k: &mut Consts,
            act: Act,
            y: $reg,
            t: [$reg; 4],
        ) -> Result<(), IcedError> {
            // `c!(v)`: the constant v in every lane, as an instruction's last source
            macro_rules! c {
                ($v:expr) => {
                    k.$konst(a, $v)
                };
            }
            match act {
                Act::Relu => {
                    a.vxorps(t[0], t[0], t[0])?;
                    a.vmaxps(y, y, t[0])?;
                }
                Act::Gelu(GeluApprox::Erf) => {
                    // 0.5 x (1 + erf(x / sqrt 2)), erf(z) = z P(z²) / Q(z²) on z in [-4, 4]
                    let [z, z2, p, q] = t;
                    let r2 = c!(std::f32::consts::FRAC_1_SQRT_2);
                    a.vmulps(z, y, r2)?;
                    let m4 = c!(-ERF_CLAMP);
                    a.vmaxps(z, z, m4)?;
                    let p4 = c!(ERF_CLAMP);
                    a.vminps(z, z, p4)?;
                    a.vmulps(z2, z, z)?;
                    for (r, coef) in [(p, &ERF_P[..]), (q, &ERF_Q[..])] {
                        let c0 = k.f1(a, coef[0]);
                        a.vbroadcastss(r, c0)?;
                        for &cv in &coef[1..] {
                            let m = c!(cv);
                            a.vfmadd213ps(r, z2, m)?;
                        }
                    }
                    a.vmulps(p, p, z)?;
                    a.vdivps(p, p, q)?;
                    let half = c!(0.5);
                    a.vmulps(z, y, half)?;
                    a.vfmadd213ps(p, z, z)?;
                    a.vmovaps(y, p)?;
                }
                Act::Gelu(GeluApprox::Tanh) => {
                    // x sigmoid(2u) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3)
                    let [u, t1, t2, _] = t;
                    use bertc_numerics::{GELU_TANH_C3, GELU_TANH_K as kk};
                    a.vmulps(u, y, y)?;
                    let c3 = k.f1(a, -2.0 * kk * GELU_TANH_C3);
                    a.vbroadcastss(t1, c3)?;
                    let c1 = c!(-2.0 * kk);
                    a.vfmadd213ps(u, t1, c1)?;
                    a.vmulps(u, u, y)?;
                    $exp(a, k, u, t1, t2)?;
                    let one = c!(1.0);
                    a.vaddps(u, u, one)?;
                    a.vdivps(y, y, u)?;
                }
                Act::Tanh => {
                    // 2 / (1 + exp(-2x)) - 1
                    let [u, t1, t2, _] = t;
                    let m2 = c!(-2.0);
                    a.vmulps(u, y, m2)?;
                    $exp(a, k, u, t1, t2)?;
                    let one = c!(1.0);
                    a.vaddps(u, u, one)?;
                    let two = k.f1(a, 2.0);
                    a.vbroadcastss(t1, two)?;
                    a.vdivps(y, t1, u)?;
                    let one = c!(1.0);
                    a.vsubps(y, y, one)?;
                }
            }
            Ok(())
        }
    };
}

activation!(act8, AsmRegisterYmm, f, exp8);
activation!(act16, AsmRegisterZmm, fb, avx512::exp16);

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

/// Loads the prefetch address into `rax` if the kernel prefetches, and returns the memory
/// operand of its step (the arguments after the residual), for every GEMM microkernel.
pub(super) fn prefetch_args(
    a: &mut CodeAssembler,
    epi: MicroEpi,
) -> Result<AsmMemoryOperand, IcedError> {
    let pf_arg = 8 + 8 * i32::from(epi.residual);
    if epi.prefetch {
        a.mov(rax, qword_ptr(rsp + pf_arg))?;
    }
    Ok(qword_ptr(rsp + (pf_arg + 8)))
}

/// The k loop of the GEMM microkernels: 4 steps an iteration, then single steps. `r9` counts
/// the steps down, `rdx` walks the panel (`b_step` bytes a step) and each of `bases` (rows of
/// `a`) `a_step` bytes a step; `step(a, u)` emits step `u` of an iteration, reading the panel
/// at `rdx + b_step u` and `a` at `+ a_step u`. With `prefetch` (the step's memory operand),
/// each step of the 4-step loop also prefetches the line at `rax` and advances `rax` by that
/// step.
fn k_loop(
    a: &mut CodeAssembler,
    prefetch: Option<AsmMemoryOperand>,
    bases: &[AsmRegister64],
    [b_step, a_step]: [i32; 2],
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
    a.add(rdx, 4 * b_step)?;
    for base in bases {
        a.add(*base, 4 * a_step)?;
    }
    a.sub(r9, 4)?;
    a.cmp(r9, 4)?;
    a.jge(top4)?;
    a.set_label(&mut tail)?;
    a.test(r9, r9)?;
    a.jz(done)?;
    a.set_label(&mut top1)?;
    step(a, 0)?;
    a.add(rdx, b_step)?;
    for base in bases {
        a.add(*base, a_step)?;
    }
    a.dec(r9)?;
    a.jnz(top1)?;
    a.set_label(&mut done)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_assemble() {
        type Kernel = fn(usize, MicroEpi) -> Result<Vec<u8>, CodegenError>;
        let kernels: [(Kernel, usize); 6] = [
            (avx2_kernel, AVX2_MR),
            (avx2_qkernel, AVX2_MR),
            (avx512vnni_qkernel, AVX512_MR),
            (avx512_kernel, AVX512_MR),
            (avx512vnni_pairs_qkernel, AVX512_MR),
            (avxvnni_qkernel, AVX2_MR),
        ];
        for (j, (kernel, max_mr)) in kernels.into_iter().enumerate() {
            // the f32 tiles also start from the output (the int8 ones never)
            let starts: &[bool] = if j == 0 || j == 3 {
                &[false, true]
            } else {
                &[false]
            };
            for (mr, &accumulate) in (1..=max_mr).flat_map(|m| starts.iter().map(move |a| (m, a))) {
                for act in [
                    None,
                    Some(Act::Relu),
                    Some(Act::Tanh),
                    Some(Act::Gelu(GeluApprox::Erf)),
                    Some(Act::Gelu(GeluApprox::Tanh)),
                ] {
                    for residual in [false, true] {
                        // the AVX-512 tiles also span two panels
                        let wides: &[bool] = if (2..=4).contains(&j) {
                            &[false, true]
                        } else {
                            &[false]
                        };
                        for (prefetch, &wide) in [false, true]
                            .into_iter()
                            .flat_map(|p| wides.iter().map(move |w| (p, w)))
                        {
                            let epi = MicroEpi {
                                act,
                                residual,
                                prefetch,
                                accumulate,
                                wide,
                            };
                            assert!(!kernel(mr, epi).unwrap().is_empty());
                        }
                    }
                }
            }
        }
        assert!(!avx2_softmax(0.125).unwrap().is_empty());
        assert!(!avx512_softmax(0.125).unwrap().is_empty());
        assert!(!avx2_layer_norm(1e-12).unwrap().is_empty());
        assert!(!avx512_layer_norm(1e-12).unwrap().is_empty());
        for abits in 2..=8 {
            for format in [QFormat::Pairs, QFormat::Quads] {
                for smooth in [false, true] {
                    assert!(!avx2_quantize(abits, format, smooth).unwrap().is_empty());
                    assert!(!avx512_quantize(abits, format, smooth).unwrap().is_empty());
                }
            }
        }
    }
}

#[cfg(test)]
mod emulated;

/// The x86-64 kernels a target's features allow: with AVX2 and FMA, the AVX2 GEMM tiles (or
/// the AVX-512 ones with avx512f), the AVX2 softmax and peak loop; without them only the
/// portable Cranelift kernels on 128-bit SSE vectors.
pub fn isa(target: &bertc_targets::Target) -> super::Isa {
    use super::{GemmKernels, Isa, PeakLoop, QuantizeKernel, RowKernel};
    use crate::lower::{LayoutKind, QFormat, PANEL};
    let avx2 = target.has("avx2") && target.has("fma");
    let avx512 = avx2 && target.has("avx512f");
    let gemm = if avx512 {
        Some(GemmKernels {
            family: "avx512_12x16",
            dtype: bertc_ir::DType::F32,
            layout: LayoutKind::Panels,
            mr: AVX512_MR,
            nr: PANEL,
            epilogues: true,
            accumulates: true,
            wide: true,
            assemble: avx512_kernel,
        })
    } else if avx2 {
        Some(GemmKernels {
            family: "avx2_6x16",
            dtype: bertc_ir::DType::F32,
            layout: LayoutKind::Panels,
            mr: AVX2_MR,
            nr: PANEL,
            epilogues: true,
            accumulates: true,
            wide: false,
            assemble: avx2_kernel,
        })
    } else {
        None
    };
    // the int8 tiles: AVX512-VNNI's `vpdpbusd` on k in fours (8-bit activations) and
    // `vpdpwssd` on k in pairs (wider ones) where the target has it; AVX-VNNI's `vpdpbusd`
    // on ymm for fours beside AVX2's pairs; else AVX2's `vpmaddwd` on k in pairs (an int8
    // panel of depth 2048 is 32 KiB: k stays whole)
    let vnni = avx512 && target.has("avx512vnni");
    // (`wide`: the AVX512-VNNI families also span two panels, `MicroEpi::wide`)
    let int8 = |family, format, (mr, wide), assemble| GemmKernels {
        family,
        dtype: bertc_ir::DType::I8,
        layout: LayoutKind::QPanels(format),
        mr,
        nr: PANEL,
        epilogues: true,
        accumulates: false,
        wide,
        assemble,
    };
    let qgemm: Vec<GemmKernels> = if vnni {
        vec![
            int8(
                "avx512vnni_q8_12x16",
                QFormat::Quads,
                (AVX512_MR, true),
                avx512vnni_qkernel as fn(usize, MicroEpi) -> super::Code,
            ),
            int8(
                "avx512vnni_q16_12x16",
                QFormat::Pairs,
                (AVX512_MR, true),
                avx512vnni_pairs_qkernel,
            ),
        ]
    } else if avx2 && target.has("avxvnni") {
        vec![
            int8(
                "avxvnni_q8_6x16",
                QFormat::Quads,
                (AVX2_MR, false),
                avxvnni_qkernel as fn(usize, MicroEpi) -> super::Code,
            ),
            int8(
                "avx2_q8_6x16",
                QFormat::Pairs,
                (AVX2_MR, false),
                avx2_qkernel,
            ),
        ]
    } else if avx2 {
        let pairs = (AVX2_MR, false);
        vec![int8("avx2_q8_6x16", QFormat::Pairs, pairs, avx2_qkernel)]
    } else {
        vec![]
    };
    Isa {
        name: if avx512 {
            "x86-64 AVX-512"
        } else if avx2 {
            "x86-64 AVX2"
        } else {
            "x86-64 SSE"
        },
        lanes: 4,
        fma: target.has("fma"),
        regs: 16,
        gemm: gemm.into_iter().chain(qgemm).collect(),
        softmax: if avx512 {
            Some(RowKernel {
                name: "avx512_softmax",
                assemble: avx512_softmax,
            })
        } else {
            avx2.then_some(RowKernel {
                name: "avx2_softmax",
                assemble: avx2_softmax,
            })
        },
        layer_norm: if avx512 {
            Some(RowKernel {
                name: "avx512_layer_norm",
                assemble: avx512_layer_norm,
            })
        } else {
            avx2.then_some(RowKernel {
                name: "avx2_layer_norm",
                assemble: avx2_layer_norm,
            })
        },
        quantize: if avx512 {
            Some(QuantizeKernel {
                name: "avx512_quantize",
                assemble: avx512_quantize,
            })
        } else {
            avx2.then_some(QuantizeKernel {
                name: "avx2_quantize",
                assemble: avx2_quantize,
            })
        },
        fma_peak: if avx512 {
            Some(PeakLoop {
                assemble: avx512_peak,
                flops: 384,
                what: "12 independent 16-wide FMAs",
            })
        } else if avx2 {
            Some(PeakLoop {
                assemble: avx2_peak,
                flops: 192,
                what: "12 independent 8-wide FMAs",
            })
        } else {
            None
        },
        caches: target.caches,
    }
}

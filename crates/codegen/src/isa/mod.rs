//! The ISA seam: what each target's instruction set gives code generation. An ISA registers
//! its hand-written microkernels (GEMM tiles for a weight dtype and layout, with the
//! epilogues they apply in registers; the attention softmax; the layer norm; the FMA peak loop) and the
//! vector shape of the portable Cranelift kernels. The rest of codegen asks an `Isa` what it
//! has and never reads a CPU feature: the features are read once, in `Isa::for_target`, by
//! each architecture's `isa` function.

mod aarch64;
mod riscv64;
pub(crate) mod x86_64;

use bertc_ir::DType;
use bertc_targets::{Arch, Caches, Target};

use crate::linear::Blocking;
use crate::lower::{CodegenError, LayoutKind, LinearWeights, QFormat};

pub use x86_64::MicroEpi;

/// Machine code, or why it could not be assembled.
pub type Code = Result<Vec<u8>, CodegenError>;

/// The tallest tile any registered GEMM family has (the stack tile of a partial panel holds
/// this many rows).
pub const MAX_GEMM_MR: usize = 12;

/// A family of GEMM microkernels: one per tile height `1..=mr`, each `mr x nr` tile reading
/// one panel of weights of `dtype` in `layout`.
#[derive(Clone, Copy)]
pub struct GemmKernels {
    /// The family's part of the symbol names (`NAME__{family}_m{rows}[_{epilogue}]`).
    pub family: &'static str,
    pub dtype: DType,
    pub layout: LayoutKind,
    /// Rows of the tallest tile.
    pub mr: usize,
    /// Columns of a tile (the panel width).
    pub nr: usize,
    /// Whether the kernels apply a linear's epilogue (activation, residual add) to the tile in
    /// registers; if not, the portable epilogue runs over the stored tile.
    pub epilogues: bool,
    /// Whether the kernels start from a partial sum in the output (`MicroEpi::accumulate`),
    /// so that the driver may split k in blocks that fit L1.
    pub accumulates: bool,
    /// Whether the family also has tiles of two adjacent panels (`MicroEpi::wide`: `mr x 2 nr`,
    /// the second panel's offset an extra argument), which the driver runs on pairs of full
    /// panels.
    pub wide: bool,
    /// The machine code of the kernel for `rows` rows (1..=mr) and epilogue `epi`.
    pub assemble: fn(usize, MicroEpi) -> Code,
}

/// A hand-written kernel over rows with one constant baked in (the softmax's scale, the layer
/// norm's epsilon): `Isa::softmax` and `Isa::layer_norm` say what each computes.
#[derive(Clone, Copy)]
pub struct RowKernel {
    /// The symbol name's part (`NAME__{name}{index}`).
    pub name: &'static str,
    /// The machine code for a value of the constant.
    pub assemble: fn(f32) -> Code,
}

/// A hand-written quantizer of rows for int8 linears:
/// `quantize(x, out, rows, k, ldx, ldo)` as `Step::Quantize` defines it.
#[derive(Clone, Copy)]
pub struct QuantizeKernel {
    /// The symbol name's part (`NAME__{name}_{abits}[_quads][_smooth]`).
    pub name: &'static str,
    /// The machine code for `abits`-bit integers in rows of a format, with or without the
    /// smoothing multipliers (a 7th argument).
    pub assemble: fn(u8, QFormat, bool) -> Code,
}

/// A function of one argument running `iters` rounds of independent FMAs on the widest
/// vectors, no memory traffic: the core's f32 peak.
#[derive(Clone, Copy)]
pub struct PeakLoop {
    pub assemble: fn() -> Code,
    /// Floating-point operations a round.
    pub flops: u32,
    /// For messages: what a round is.
    pub what: &'static str,
}

/// What code generation may use on a target.
pub struct Isa {
    /// For messages: the kernels' instruction set.
    pub name: &'static str,
    /// f32 lanes of the portable kernels' vectors (1: scalar code).
    pub lanes: usize,
    /// Whether the portable kernels may fuse multiply and add.
    pub fma: bool,
    /// Vector registers the portable GEMM tile may fill.
    pub regs: usize,
    pub gemm: Vec<GemmKernels>,
    /// `softmax(rows_ptr, ld, rows, len, state)`: one block of keys of attention's online
    /// softmax over rows of scores, the scale baked in.
    pub softmax: Option<RowKernel>,
    /// `layer_norm(x, out, rows, gamma, beta, width)` over `rows` contiguous rows of `width`
    /// floats, as `bertc_numerics::layer_norm_row` computes each, the epsilon baked in.
    pub layer_norm: Option<RowKernel>,
    pub quantize: Option<QuantizeKernel>,
    /// The core's f32 peak loop (`bertc bench --gemm` measures against it).
    pub fma_peak: Option<PeakLoop>,
    /// The caches the GEMMs are blocked for (the target's).
    pub caches: Caches,
}

impl Isa {
    pub fn for_target(target: &Target) -> Isa {
        let isa = match target.arch {
            Arch::X86_64 => x86_64::isa(target),
            Arch::Aarch64 => aarch64::isa(target),
            Arch::Riscv64 => riscv64::isa(target),
        };
        for k in &isa.gemm {
            assert!((1..=MAX_GEMM_MR).contains(&k.mr));
            assert_eq!(k.nr, crate::lower::PANEL);
        }
        isa
    }

    /// The microkernels for weights of `dtype` in `layout`, if the ISA has them (else the
    /// portable Cranelift tiles run).
    pub fn gemm(&self, dtype: DType, layout: LayoutKind) -> Option<&GemmKernels> {
        self.gemm
            .iter()
            .find(|k| k.dtype == dtype && k.layout == layout)
    }

    /// How int8 linears whose activations fit a byte (8 bits or fewer) group k on this ISA:
    /// in eights where its int8 microkernels read them (`smmla`), else in fours where they
    /// read those (`vpdpbusd`, `sdot`; the hand-written or the portable quantizer writes the
    /// rows), else in pairs (the pair kernels and the
    /// portable tile). Wider activations are always in pairs (`QFormat::for_bits`).
    pub fn int8_format(&self) -> QFormat {
        [QFormat::Octs, QFormat::Quads]
            .into_iter()
            .find(|&f| self.gemm(DType::I8, LayoutKind::QPanels(f)).is_some())
            .unwrap_or(QFormat::Pairs)
    }

    /// The f32 panel microkernels.
    pub fn gemm_f32(&self) -> Option<&GemmKernels> {
        self.gemm(DType::F32, LayoutKind::Panels)
    }

    /// Rows of an f32 GEMM tile: the microkernels' tallest, or the portable tile's.
    pub fn gemm_mr(&self) -> usize {
        self.mr(DType::F32, LayoutKind::Panels)
    }

    /// Rows of a GEMM tile for weights of `dtype` in `layout`: the microkernels' tallest, or
    /// the portable tile's.
    pub fn mr(&self, dtype: DType, layout: LayoutKind) -> usize {
        match (self.gemm(dtype, layout), dtype) {
            (Some(k), _) => k.mr,
            (None, DType::I8) => crate::qkernels::portable_qmr(self.lanes, self.regs),
            (None, _) => crate::linear::portable_mr(self.lanes, self.regs),
        }
    }

    /// How a linear of depth `k` on `weights` is blocked for the caches (see
    /// `Blocking::for_linear`): with the microkernels if the ISA has them, else the portable
    /// tiles (which start from a partial sum).
    pub fn linear_blocking(&self, weights: LinearWeights, k: usize) -> Blocking {
        let (dtype, layout) = (weights.dtype(), weights.layout());
        let accumulates = self.gemm(dtype, layout).is_none_or(|g| g.accumulates);
        Blocking::for_linear(
            &self.caches,
            weights,
            k,
            self.mr(dtype, layout),
            accumulates,
        )
    }

    /// Whether attention runs as GEMMs on the microkernels with the hand-written softmax (one
    /// tile of queries at a time), rather than the portable row-by-row kernel.
    pub fn gemm_attention(&self) -> bool {
        self.gemm_f32().is_some() && self.softmax.is_some()
    }
}

/// Asserts that `ours`, a hand-written encoder's 32-bit words, are what the GNU assembler for
/// `tool_prefix` (`aarch64-linux-gnu`) makes of `lines` with `-march=march`: the reference the
/// encoders of fixed-width ISAs are tested against. Says `skipped:` without the assembler.
#[cfg(test)]
pub(crate) fn assert_encodes_as_gnu(
    tool_prefix: &str,
    march: &str,
    lines: &[String],
    ours: &[u32],
) {
    let Some(gnu) = gnu_words(tool_prefix, march, lines) else {
        eprintln!("skipped: {tool_prefix}-as is not installed (Debian: binutils-{tool_prefix})");
        return;
    };
    assert_eq!(gnu.len(), ours.len(), "{gnu:08x?}");
    for (i, (&o, g)) in ours.iter().zip(&gnu).enumerate() {
        assert_eq!(o, *g, "instruction {i}: {o:08x} vs {g:08x}");
    }
}

/// The 32-bit words the GNU assembler for `tool_prefix` makes of `lines` with `-march=march`,
/// or `None` when it is not installed.
#[cfg(test)]
fn gnu_words(tool_prefix: &str, march: &str, lines: &[String]) -> Option<Vec<u32>> {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let (src, obj, bin) = (
        dir.path().join("t.s"),
        dir.path().join("t.o"),
        dir.path().join("t.bin"),
    );
    std::fs::write(&src, lines.join("\n") + "\n").unwrap();
    let ok = Command::new(format!("{tool_prefix}-as"))
        .arg(format!("-march={march}"))
        .arg("-o")
        .arg(&obj)
        .arg(&src)
        .status()
        .ok()?
        .success();
    assert!(ok, "the assembler rejected {lines:?}");
    let st = Command::new(format!("{tool_prefix}-objcopy"))
        .args(["-O", "binary", "-j", ".text"])
        .arg(&obj)
        .arg(&bin)
        .status()
        .ok()?;
    assert!(st.success());
    let b = std::fs::read(&bin).unwrap();
    Some(
        b.chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect(),
    )
}

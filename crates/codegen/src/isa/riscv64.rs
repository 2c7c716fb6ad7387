//! riscv64: with the vector extension (`v`, VLEN at least 128), 4 f32 lanes for the portable
//! Cranelift kernels; without it scalar code. No hand-written kernels are registered yet.

use bertc_targets::Target;

use super::Isa;

pub fn isa(target: &Target) -> Isa {
    let v = target.has("v");
    Isa {
        name: if v { "riscv64 V" } else { "riscv64 scalar" },
        lanes: if v { 4 } else { 1 },
        fma: true,
        regs: 32,
        gemm: vec![],
        softmax: None,
        quantize: None,
        fma_peak: None,
        caches: target.caches,
    }
}

//! aarch64: NEON's 128-bit vectors (4 f32 lanes, 32 registers) for the portable Cranelift
//! kernels. No hand-written kernels are registered yet; an `sdot`/`smmla` int8 GEMM or a NEON
//! f32 tile is registered here.

use bertc_targets::Target;

use super::Isa;

pub fn isa(target: &Target) -> Isa {
    Isa {
        name: "aarch64 NEON",
        lanes: 4,
        fma: true,
        regs: 32,
        gemm: vec![],
        softmax: None,
        quantize: None,
        fma_peak: None,
        caches: target.caches,
    }
}

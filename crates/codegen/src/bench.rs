//! The GEMM bench object (`bertc bench --gemm` and the GEMM tests): the linear kernel that
//! compiled models use for one layer shape, the int8 row quantizer, and the ISA's peak loop,
//! as exported functions.

use cranelift_codegen::ir::InstBuilder;
use cranelift_frontend::FunctionBuilderContext;
use cranelift_module::{Linkage, Module};

use crate::emit::Emit;
use crate::gemm::{self, emit_linear};
use crate::lower::{CodegenError, LinearWeights, QFormat, QuantRows, Step};
use crate::{cl_err, define, entry_block, isa, kernels, linear, new_module, qkernels, sig_n};
use bertc_targets::Target;

/// An object for measuring the GEMM code compiled models use: the exported
/// `bertc_bench_linear(x, out, rows, packed)` is the linear kernel for a `k -> n` layer, and,
/// where the ISA has a peak loop, `bertc_bench_peak(iters)` runs `iters` rounds of it to
/// measure the core's peak. With `int8`, the linear is the int8
/// one over rows quantized to `abits` bits (in the format the ISA's kernels read for them),
/// and `bertc_bench_quantize(x, out, rows)` quantizes rows of `k` f32 for it, as a model's
/// quantize step does. Returns the object and the peak loop, if it is there.
pub fn compile_gemm_bench(
    target: &Target,
    k: usize,
    n: usize,
    int8: Option<u8>,
) -> Result<(Vec<u8>, Option<isa::PeakLoop>), CodegenError> {
    let (mut module, isa, mut asm) = new_module(target, "bertc_bench")?;
    let cc = module.isa().default_call_conv();
    let fe = module.isa().frontend_config();
    let id = module
        .declare_function("bertc_bench_linear", Linkage::Export, &sig_n(cc, 4))
        .map_err(cl_err)?;
    let mut fctx = module.make_context();
    fctx.func.signature = sig_n(cc, 4);
    // the kernels are chosen by the step they serve (the int8 family, the tiles of the k
    // blocks)
    let format = int8.map(|abits| QFormat::for_bits(isa.int8_format(), abits, k));
    let weights = format.map_or(LinearWeights::F32, LinearWeights::Int8);
    let step = Step::Linear {
        x: 0,
        out: 0,
        packed: 0,
        k,
        n,
        act: None,
        residual: None,
        weights,
    };
    let micro_refs = asm.refs_for(&mut module, &mut fctx.func, Some(&step))?;
    let mut fbc = FunctionBuilderContext::new();
    {
        let (b, a) = entry_block(&mut fctx.func, &mut fbc);
        let mut e = Emit::new(b, isa.lanes, isa.fma);
        let tasks = gemm::linear_task_count(&mut e, a[2], n, weights, &isa);
        let zero = e.i(0);
        let args = [a[0], a[1], a[2], a[3]];
        emit_linear(
            &mut e,
            args,
            [zero, tasks],
            k,
            n,
            weights,
            &isa,
            &micro_refs,
            &linear::Epilogue::NONE,
        );
        e.b.ins().return_(&[]);
        e.b.finalize(fe);
    }
    define(&mut module, id, &mut fctx, "bertc_bench_linear")?;
    if let (Some(abits), Some(format)) = (int8, format) {
        let id = module
            .declare_function("bertc_bench_quantize", Linkage::Export, &sig_n(cc, 3))
            .map_err(cl_err)?;
        fctx.func.signature = sig_n(cc, 3);
        let rows = QuantRows {
            abits,
            format,
            smooth: None,
        };
        let step = Step::Quantize {
            x: 0,
            out: 0,
            k,
            rows,
        };
        let refs = asm.refs_for(&mut module, &mut fctx.func, Some(&step))?;
        let (b, a) = entry_block(&mut fctx.func, &mut fbc);
        let mut e = Emit::new(b, isa.lanes, isa.fma);
        let zero = e.i(0);
        let tasks = e.b.ins().iadd_imm_s(a[2], kernels::ROW_BLOCK - 1);
        let tasks = e.b.ins().udiv_imm_u(tasks, kernels::ROW_BLOCK);
        let args = [a[0], a[1], a[2]];
        qkernels::quantize_rows(&mut e, args, [zero, tasks], k, (rows, None), refs.quantize);
        e.b.ins().return_(&[]);
        e.b.finalize(fe);
        define(&mut module, id, &mut fctx, "bertc_bench_quantize")?;
    }
    if let Some(peak) = isa.fma_peak {
        let id = module
            .declare_function("bertc_bench_peak", Linkage::Export, &sig_n(cc, 1))
            .map_err(cl_err)?;
        module
            .define_function_bytes(id, 16, &(peak.assemble)()?, &[])
            .map_err(cl_err)?;
    }
    let object = module.finish().emit().map_err(cl_err)?;
    Ok((object, isa.fma_peak))
}

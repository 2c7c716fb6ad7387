//! The hand-written kernels a module holds: those the target's ISA registers (`isa`), each
//! variant (tile height, epilogue, prefetching) defined in the object the first time a
//! Cranelift kernel asks for it, and declared in the functions that call it.

use std::collections::BTreeMap;

use cranelift_codegen::ir::FuncRef;
use cranelift_module::{FuncId, Linkage, Module};
use cranelift_object::ObjectModule;

use crate::isa;
use crate::linear::Blocking;
use crate::lower::{CodegenError, LinearWeights, QFormat, QuantRows, Step};
use crate::{cl_err, sig_n};

/// The hand-written kernels of a module (those the ISA registers), each defined the first time
/// a kernel asks for it, so that the object holds just the variants the program uses.
pub(crate) struct Asm {
    prefix: String,
    gemm: Vec<isa::GemmKernels>,
    softmax_kernel: Option<isa::RowKernel>,
    /// The defined tiles by family and epilogue tag.
    tiles: BTreeMap<(&'static str, String), Vec<FuncId>>,
    softmax: BTreeMap<u32, FuncId>,
    layer_norm_kernel: Option<isa::RowKernel>,
    layer_norm: BTreeMap<u32, FuncId>,
    quantize_kernel: Option<isa::QuantizeKernel>,
    quantize: BTreeMap<(u8, QFormat, bool), FuncId>,
    caches: bertc_targets::Caches,
    /// Whether the program's attention runs in blocks of keys (so its `P V` tiles also start
    /// from the output).
    pub(crate) attention_key_blocks: bool,
}

/// GEMM microkernels for 1..=mr rows, one set for each way of starting the accumulators.
#[derive(Default)]
pub(crate) struct TileSet {
    /// Without an epilogue.
    pub(crate) plain: Vec<FuncRef>,
    /// With this step's epilogue (empty: none).
    pub(crate) fused: Vec<FuncRef>,
    /// `plain` and `fused` that also prefetch the next panel.
    pub(crate) plain_pf: Vec<FuncRef>,
    pub(crate) fused_pf: Vec<FuncRef>,
}

/// The hand-assembled kernels one Cranelift function calls.
pub(crate) struct AsmRefs {
    /// The GEMM tiles starting from the panel's biases.
    pub(crate) start: TileSet,
    /// The GEMM tiles starting from the output's partial sums (the later k blocks of a linear
    /// whose blocking splits k; empty otherwise).
    pub(crate) acc: TileSet,
    /// `start` and `acc` on two adjacent panels (`MicroEpi::wide`), for a linear step whose
    /// ISA family has them (empty otherwise).
    pub(crate) wide_start: TileSet,
    pub(crate) wide_acc: TileSet,
    pub(crate) softmax: Option<FuncRef>,
    /// The layer norm of a layer norm step, when the ISA has one.
    pub(crate) layer_norm: Option<FuncRef>,
    /// The row quantizer of a quantize step, when the ISA has one.
    pub(crate) quantize: Option<FuncRef>,
}

impl Asm {
    /// The kernels `isa` registers, for a module whose symbols start with `prefix`.
    pub(crate) fn new(prefix: &str, isa: &isa::Isa) -> Asm {
        Asm {
            prefix: prefix.to_string(),
            gemm: isa.gemm.clone(),
            softmax_kernel: isa.softmax,
            tiles: BTreeMap::new(),
            softmax: BTreeMap::new(),
            layer_norm_kernel: isa.layer_norm,
            layer_norm: BTreeMap::new(),
            quantize_kernel: isa.quantize,
            quantize: BTreeMap::new(),
            caches: isa.caches,
            attention_key_blocks: false,
        }
    }

    /// The microkernels of `kernels` for 1..=mr rows with epilogue `epi`.
    fn tiles(
        &mut self,
        module: &mut ObjectModule,
        kernels: isa::GemmKernels,
        epi: isa::MicroEpi,
    ) -> Result<Vec<FuncId>, CodegenError> {
        let tag = epi.tag();
        if let Some(ids) = self.tiles.get(&(kernels.family, tag.clone())) {
            return Ok(ids.clone());
        }
        let sig = sig_n(module.isa().default_call_conv(), epi.args());
        let mut ids = Vec::new();
        let family = kernels.family;
        for mr in 1..=kernels.mr {
            let sym = if tag.is_empty() {
                format!("{}__{family}_m{mr}", self.prefix)
            } else {
                format!("{}__{family}_m{mr}_{tag}", self.prefix)
            };
            let id = module
                .declare_function(&sym, Linkage::Local, &sig)
                .map_err(cl_err)?;
            let code = (kernels.assemble)(mr, epi)?;
            module
                .define_function_bytes(id, 16, &code, &[])
                .map_err(cl_err)?;
            ids.push(id);
        }
        self.tiles.insert((family, tag), ids.clone());
        Ok(ids)
    }

    fn quantize(
        &mut self,
        module: &mut ObjectModule,
        rows: QuantRows,
    ) -> Result<Option<FuncId>, CodegenError> {
        let Some(kernel) = self.quantize_kernel else {
            return Ok(None);
        };
        let QuantRows {
            abits,
            format,
            smooth,
        } = rows;
        let suffix = match format {
            QFormat::Pairs => "",
            QFormat::Quads => "_quads",
            QFormat::Octs => "_octs",
        };
        let sm = if smooth.is_some() { "_smooth" } else { "" };
        let sym = format!("{}__{}_{abits}{suffix}{sm}", self.prefix, kernel.name);
        let key = (abits, format, smooth.is_some());
        let args = 6 + usize::from(smooth.is_some());
        define_once(&mut self.quantize, module, key, sym, args, || {
            (kernel.assemble)(abits, format, smooth.is_some())
        })
        .map(Some)
    }

    /// Declares in `func` the kernels a kernel for `step` calls.
    pub(crate) fn refs_for(
        &mut self,
        module: &mut ObjectModule,
        func: &mut cranelift_codegen::ir::Function,
        step: Option<&Step>,
    ) -> Result<AsmRefs, CodegenError> {
        let mut r = AsmRefs {
            start: TileSet::default(),
            acc: TileSet::default(),
            wide_start: TileSet::default(),
            wide_acc: TileSet::default(),
            softmax: None,
            layer_norm: None,
            quantize: None,
        };
        if let Some(Step::LayerNorm { eps, .. }) = step {
            let kernel = (&self.prefix[..], self.layer_norm_kernel);
            if let Some(id) = row_kernel(kernel, &mut self.layer_norm, module, *eps, 6)? {
                r.layer_norm = Some(module.declare_func_in_func(id, func));
            }
        }
        if let Some(
            Step::Quantize { rows, .. }
            | Step::LayerNorm {
                quantized: Some((_, rows)),
                ..
            },
        ) = step
        {
            if let Some(id) = self.quantize(module, *rows)? {
                r.quantize = Some(module.declare_func_in_func(id, func));
            }
            return Ok(r);
        }
        // an int8 linear calls the int8 family, every other step the f32 one
        let weights = match step {
            Some(Step::Linear { weights, .. }) => *weights,
            _ => LinearWeights::F32,
        };
        let (dtype, layout) = (weights.dtype(), weights.layout());
        let Some(kernels) = self
            .gemm
            .iter()
            .find(|k| k.dtype == dtype && k.layout == layout)
            .copied()
        else {
            return Ok(r);
        };
        // the later k blocks' tiles when the step's blocking splits k
        let split = match step {
            Some(Step::Linear { k, .. }) => {
                let bl = Blocking::for_linear(
                    &self.caches,
                    weights,
                    *k,
                    kernels.mr,
                    kernels.accumulates,
                );
                bl.kblocks > 1
            }
            Some(Step::Attention { .. }) => self.attention_key_blocks,
            _ => false,
        };
        let epi = match step {
            Some(Step::Linear { act, residual, .. })
                if (act.is_some() || residual.is_some()) && kernels.epilogues =>
            {
                Some(isa::MicroEpi {
                    act: *act,
                    residual: residual.is_some(),
                    ..isa::MicroEpi::NONE
                })
            }
            _ => None,
        };
        let wide = kernels.wide;
        let sets = [(false, false), (true, false), (false, true), (true, true)];
        for (accumulate, two) in sets {
            if (accumulate && !split) || (two && !wide) {
                continue;
            }
            let mut set = TileSet::default();
            for (fused, pf) in [(false, false), (false, true), (true, false), (true, true)] {
                // attention's later key blocks need the plain tiles only
                if accumulate && pf && matches!(step, Some(Step::Attention { .. })) {
                    continue;
                }
                let e = match (fused, epi) {
                    (false, _) => isa::MicroEpi::NONE,
                    (true, Some(e)) => e,
                    (true, None) => continue,
                };
                let e = isa::MicroEpi {
                    prefetch: pf,
                    accumulate,
                    wide: two,
                    ..e
                };
                let refs = match (fused, pf) {
                    (false, false) => &mut set.plain,
                    (false, true) => &mut set.plain_pf,
                    (true, false) => &mut set.fused,
                    (true, true) => &mut set.fused_pf,
                };
                for id in self.tiles(module, kernels, e)? {
                    refs.push(module.declare_func_in_func(id, func));
                }
            }
            *match (accumulate, two) {
                (false, false) => &mut r.start,
                (true, false) => &mut r.acc,
                (false, true) => &mut r.wide_start,
                (true, true) => &mut r.wide_acc,
            } = set;
        }
        if let Some(Step::Attention { scale, .. }) = step {
            let kernel = (&self.prefix[..], self.softmax_kernel);
            if let Some(id) = row_kernel(kernel, &mut self.softmax, module, *scale, 5)? {
                r.softmax = Some(module.declare_func_in_func(id, func));
            }
        }
        Ok(r)
    }
}

/// The hand-written function for `key` in `cache`, declared as `sym` (`args` i64 arguments)
/// and defined from `code` the first time it is asked for.
fn define_once<K: Ord>(
    cache: &mut BTreeMap<K, FuncId>,
    module: &mut ObjectModule,
    key: K,
    sym: String,
    args: usize,
    code: impl FnOnce() -> isa::Code,
) -> Result<FuncId, CodegenError> {
    if let Some(&id) = cache.get(&key) {
        return Ok(id);
    }
    let sig = sig_n(module.isa().default_call_conv(), args);
    let id = module
        .declare_function(&sym, Linkage::Local, &sig)
        .map_err(cl_err)?;
    module
        .define_function_bytes(id, 16, &code()?, &[])
        .map_err(cl_err)?;
    cache.insert(key, id);
    Ok(id)
}

/// The row kernel `kernel` (if the ISA has it) for the constant `c`, with `args` arguments,
/// defined once per constant in `defined`; its symbols (`prefix`) are numbered in the order
/// the constants first occur.
fn row_kernel(
    (prefix, kernel): (&str, Option<isa::RowKernel>),
    defined: &mut BTreeMap<u32, FuncId>,
    module: &mut ObjectModule,
    c: f32,
    args: usize,
) -> Result<Option<FuncId>, CodegenError> {
    let Some(kernel) = kernel else {
        return Ok(None);
    };
    let sym = format!("{prefix}__{}{}", kernel.name, defined.len());
    define_once(defined, module, c.to_bits(), sym, args, || {
        (kernel.assemble)(c)
    })
    .map(Some)
}

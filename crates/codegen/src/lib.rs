//! Code generation: a raised graph with one selected output becomes one relocatable object
//! (Cranelift, position independent) holding the weights in read-only data, one function per
//! distinct kernel, hand-assembled GEMM microkernels on x86-64 with AVX2, and the entry
//! `NAME__forward(ctx)` that runs the kernels in order over a caller-provided workspace.
//! `shim` writes the C glue (argument checks, the public ABI, the executable's I/O).

mod emit;
mod kernels;
mod lower;
pub mod shim;
mod x86;

use std::collections::BTreeMap;
use std::str::FromStr;

use bertc_targets::{Arch, Target};
use cranelift_codegen::ir::{
    types, AbiParam, FuncRef, InstBuilder, Signature, StackSlotData, StackSlotKind, Value,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};

pub use lower::{lower, pack_linear, Act, CodegenError, Program, Rows, Step, PANEL};

use bertc_ir::Graph;
use emit::Emit;

/// Offsets of the fields of the context `NAME__forward` takes (all 8 bytes).
pub mod ctx {
    pub const BATCH: i32 = 0;
    pub const SEQ: i32 = 8;
    pub const IDS: i32 = 16;
    pub const MASK: i32 = 24;
    pub const TYPES: i32 = 32;
    pub const WS: i32 = 40;
    pub const OUT: i32 = 48;
    pub const POOL: i32 = 56;
    /// Packed tokens (those with mask 1).
    pub const TOKENS: i32 = 64;
    /// For each packed token, its index in the padded `[batch, seq]` layout (i32).
    pub const TOK_SRC: i32 = 72;
    /// `batch + 1` offsets of each sequence's first packed token (i32).
    pub const SEQ_START: i32 = 80;

    /// Every slot with its C name (`CTX_` + name), in order.
    pub const SLOTS: [(&str, i32); 11] = [
        ("BATCH", BATCH),
        ("SEQ", SEQ),
        ("IDS", IDS),
        ("MASK", MASK),
        ("TYPES", TYPES),
        ("WS", WS),
        ("OUT", OUT),
        ("POOL", POOL),
        ("TOKENS", TOKENS),
        ("TOK_SRC", TOK_SRC),
        ("SEQ_START", SEQ_START),
    ];

    /// The layout as C: `#define CTX_NAME index` for each slot, and `CTX_SLOTS`.
    pub fn c_defines() -> String {
        let mut s = String::new();
        for (name, offset) in SLOTS {
            s += &format!("#define CTX_{name} {}\n", offset / 8);
        }
        s + &format!("#define CTX_SLOTS {}\n", SLOTS.len())
    }

    #[test]
    fn slots_are_consecutive_i64s() {
        for (i, (_, offset)) in SLOTS.iter().enumerate() {
            assert_eq!(*offset, 8 * i as i32);
        }
    }
}

/// The object and what the glue needs to know about it.
pub struct Compiled {
    pub object: Vec<u8>,
    pub program: Program,
    /// Whether the x86 AVX2 microkernels are used (the artifact checks the CPU for them).
    pub uses_avx2: bool,
    /// Whether the linears run the AVX-512 microkernels (`x86::avx512_kernel`).
    pub uses_avx512: bool,
    pub instructions: usize,
    /// A C expression of `batch`, `seq` and `threads`: the floats of attention scratch the
    /// workspace needs after the activations.
    pub scratch_floats_c: String,
}

fn cl_err(e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Cranelift(e.to_string())
}

struct Cfg {
    lanes: usize,
    fma: bool,
    regs: usize,
    avx2: bool,
    /// AVX-512 GEMM microkernels for every GEMM (the rest stays AVX2).
    avx512: bool,
}

fn isa_for(
    target: &Target,
) -> Result<(std::sync::Arc<dyn cranelift_codegen::isa::TargetIsa>, Cfg), CodegenError> {
    let mut flags = settings::builder();
    flags.set("opt_level", "none").map_err(cl_err)?;
    flags.set("is_pic", "true").map_err(cl_err)?;
    let triple = target_lexicon::Triple::from_str(&target.triple)
        .map_err(|e| CodegenError::Cranelift(format!("triple '{}': {e}", target.triple)))?;
    let mut isa = cranelift_codegen::isa::lookup(triple).map_err(cl_err)?;
    for flag in target.cranelift_flags() {
        isa.set(flag, "true").map_err(cl_err)?;
    }
    let cfg = match target.arch {
        Arch::X86_64 => Cfg {
            lanes: 4,
            fma: target.has("fma"),
            regs: 16,
            avx2: target.has("avx2") && target.has("fma"),
            avx512: target.has("avx2") && target.has("fma") && target.has("avx512f"),
        },
        Arch::Aarch64 => Cfg {
            lanes: 4,
            fma: true,
            regs: 32,
            avx2: false,
            avx512: false,
        },
        Arch::Riscv64 => {
            let v = target.has("v");
            Cfg {
                lanes: if v { 4 } else { 1 },
                fma: true,
                regs: 32,
                avx2: false,
                avx512: false,
            }
        }
    };
    let isa = isa.finish(settings::Flags::new(flags)).map_err(cl_err)?;
    Ok((isa, cfg))
}

/// The hand-assembled kernels of a module (x86-64 with AVX2 only), each defined the first time
/// a kernel asks for it, so that the object holds just the variants the program uses. With
/// `avx512` the GEMM microkernels are the AVX-512 ones (same arguments, up to
/// `x86::AVX512_MR` rows), the softmax stays AVX2.
struct Asm {
    prefix: String,
    enabled: bool,
    avx512: bool,
    tiles: BTreeMap<String, Vec<FuncId>>,
    softmax: BTreeMap<u32, FuncId>,
}

/// The hand-assembled kernels one Cranelift function calls.
struct AsmRefs {
    /// The plain GEMM microkernels for 1..=mr rows (`gemm_mr`).
    plain: Vec<FuncRef>,
    /// The microkernels with this step's epilogue (empty: none).
    fused: Vec<FuncRef>,
    /// `plain` and `fused` that also prefetch the next panel.
    plain_pf: Vec<FuncRef>,
    fused_pf: Vec<FuncRef>,
    softmax: Option<FuncRef>,
}

impl Asm {
    /// The microkernels for 1..=mr rows with epilogue `epi`.
    fn tiles(
        &mut self,
        module: &mut ObjectModule,
        epi: x86::MicroEpi,
    ) -> Result<Vec<FuncId>, CodegenError> {
        let tag = epi.tag();
        if let Some(ids) = self.tiles.get(&tag) {
            return Ok(ids.clone());
        }
        let sig = sig_n(module.isa().default_call_conv(), epi.args());
        let mut ids = Vec::new();
        let (family, max_mr) = if self.avx512 {
            ("avx512_12x16", x86::AVX512_MR)
        } else {
            ("avx2_6x16", x86::AVX2_MR)
        };
        for mr in 1..=max_mr {
            let sym = if tag.is_empty() {
                format!("{}__{family}_m{mr}", self.prefix)
            } else {
                format!("{}__{family}_m{mr}_{tag}", self.prefix)
            };
            let id = module
                .declare_function(&sym, Linkage::Local, &sig)
                .map_err(cl_err)?;
            let code = if self.avx512 {
                x86::avx512_kernel(mr, epi)?
            } else {
                x86::avx2_kernel(mr, epi)?
            };
            module
                .define_function_bytes(id, 16, &code, &[])
                .map_err(cl_err)?;
            ids.push(id);
        }
        self.tiles.insert(tag, ids.clone());
        Ok(ids)
    }

    fn softmax(&mut self, module: &mut ObjectModule, scale: f32) -> Result<FuncId, CodegenError> {
        if let Some(&id) = self.softmax.get(&scale.to_bits()) {
            return Ok(id);
        }
        let sig = sig_n(module.isa().default_call_conv(), 5);
        let sym = format!("{}__avx2_softmax{}", self.prefix, self.softmax.len());
        let id = module
            .declare_function(&sym, Linkage::Local, &sig)
            .map_err(cl_err)?;
        module
            .define_function_bytes(id, 16, &x86::avx2_softmax(scale)?, &[])
            .map_err(cl_err)?;
        self.softmax.insert(scale.to_bits(), id);
        Ok(id)
    }

    /// Declares in `func` the kernels a kernel for `step` calls.
    fn refs_for(
        &mut self,
        module: &mut ObjectModule,
        func: &mut cranelift_codegen::ir::Function,
        step: Option<&Step>,
    ) -> Result<AsmRefs, CodegenError> {
        let mut r = AsmRefs {
            plain: Vec::new(),
            fused: Vec::new(),
            plain_pf: Vec::new(),
            fused_pf: Vec::new(),
            softmax: None,
        };
        if !self.enabled {
            return Ok(r);
        }
        let pf = |epi: x86::MicroEpi| x86::MicroEpi {
            prefetch: true,
            ..epi
        };
        for id in self.tiles(module, x86::MicroEpi::NONE)? {
            r.plain.push(module.declare_func_in_func(id, func));
        }
        for id in self.tiles(module, pf(x86::MicroEpi::NONE))? {
            r.plain_pf.push(module.declare_func_in_func(id, func));
        }
        match step {
            Some(Step::Linear { act, residual, .. }) if act.is_some() || residual.is_some() => {
                let epi = x86::MicroEpi {
                    act: *act,
                    residual: residual.is_some(),
                    prefetch: false,
                };
                for id in self.tiles(module, epi)? {
                    r.fused.push(module.declare_func_in_func(id, func));
                }
                for id in self.tiles(module, pf(epi))? {
                    r.fused_pf.push(module.declare_func_in_func(id, func));
                }
            }
            Some(Step::Attention { scale, .. }) => {
                let id = self.softmax(module, *scale)?;
                r.softmax = Some(module.declare_func_in_func(id, func));
            }
            _ => {}
        }
        Ok(r)
    }
}

/// A module for `target`, and its hand-assembled kernels when the target has them.
fn new_module(target: &Target, name: &str) -> Result<(ObjectModule, Cfg, Asm), CodegenError> {
    let (isa, cfg) = isa_for(target)?;
    let builder = ObjectBuilder::new(
        isa,
        name.as_bytes().to_vec(),
        cranelift_module::default_libcall_names(),
    )
    .map_err(cl_err)?;
    let module = ObjectModule::new(builder);
    let asm = Asm {
        prefix: name.to_string(),
        enabled: cfg.avx2,
        avx512: cfg.avx512,
        tiles: BTreeMap::new(),
        softmax: BTreeMap::new(),
    };
    Ok((module, cfg, asm))
}

fn sig_n(cc: cranelift_codegen::isa::CallConv, n: usize) -> Signature {
    let mut s = Signature::new(cc);
    for _ in 0..n {
        s.params.push(AbiParam::new(types::I64));
    }
    s
}

/// An object for measuring the GEMM code compiled models use: the exported
/// `bertc_bench_linear(x, out, rows, packed)` is the linear kernel for a `k -> n` layer, and,
/// on x86-64 with AVX2, `bertc_bench_peak(iters)` runs `iters` rounds of 12 independent 8-wide
/// FMAs (192 flops a round) to measure the core's peak. Returns the object and whether the
/// peak function is there.
pub fn compile_gemm_bench(
    target: &Target,
    k: usize,
    n: usize,
) -> Result<(Vec<u8>, bool), CodegenError> {
    let (mut module, cfg, mut asm) = new_module(target, "bertc_bench")?;
    let cc = module.isa().default_call_conv();
    let fe = module.isa().frontend_config();
    let id = module
        .declare_function("bertc_bench_linear", Linkage::Export, &sig_n(cc, 4))
        .map_err(cl_err)?;
    let mut fctx = module.make_context();
    fctx.func.signature = sig_n(cc, 4);
    let micro_refs = asm.refs_for(&mut module, &mut fctx.func, None)?;
    let mut fbc = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut fctx.func, &mut fbc);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let a: Vec<Value> = b.block_params(entry).to_vec();
        let mut e = Emit::new(b, cfg.lanes, cfg.fma);
        let tasks = kernels::linear_task_count(&mut e, a[2], n, gemm_mr(&cfg));
        let zero = e.i(0);
        let args = [a[0], a[1], a[2], a[3]];
        emit_linear(
            &mut e,
            args,
            [zero, tasks],
            k,
            n,
            &cfg,
            &micro_refs,
            &kernels::Epilogue::NONE,
        );
        e.b.ins().return_(&[]);
        e.b.finalize(fe);
    }
    module
        .define_function(id, &mut fctx)
        .map_err(|e| CodegenError::Cranelift(format!("{e:?}")))?;
    module.clear_context(&mut fctx);
    if cfg.avx2 {
        let id = module
            .declare_function("bertc_bench_peak", Linkage::Export, &sig_n(cc, 1))
            .map_err(cl_err)?;
        module
            .define_function_bytes(id, 16, &x86::avx2_peak()?, &[])
            .map_err(cl_err)?;
    }
    let object = module.finish().emit().map_err(cl_err)?;
    Ok((object, cfg.avx2))
}

/// Compiles a raised graph (one output selected) for `target`; symbols are prefixed `name`.
pub fn compile(g: &Graph, target: &Target, name: &str) -> Result<Compiled, CodegenError> {
    compile_with(g, target, name, &Options::default())
}

/// Choices of `compile_with` beyond the target.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Weights as exported, writable symbols `NAME__wI` (I the index in `Program::weights`)
    /// instead of local read-only data: for the latency profiler, which compiles with zero
    /// weights (no file space) and writes them before timing, so that every weight page is
    /// real memory and not the shared zero page.
    pub writable_weights: bool,
}

/// `compile` with `Options`.
pub fn compile_with(
    g: &Graph,
    target: &Target,
    name: &str,
    opts: &Options,
) -> Result<Compiled, CodegenError> {
    let program = lower(g)?;
    let (mut module, cfg, mut asm) = new_module(target, name)?;
    let call_conv = module.isa().default_call_conv();
    let fe = module.isa().frontend_config();

    // weights in read-only data
    let mut weight_ids: Vec<DataId> = Vec::new();
    for (i, w) in program.weights.iter().enumerate() {
        let (linkage, writable) = if opts.writable_weights {
            (Linkage::Export, true)
        } else {
            (Linkage::Local, false)
        };
        let id = module
            .declare_data(&format!("{name}__w{i}"), linkage, writable, false)
            .map_err(cl_err)?;
        let mut d = DataDescription::new();
        if w.data.iter().all(|v| v.to_bits() == 0) {
            // all +0.0: zero-initialised data takes no space in the file
            d.define_zeroinit(w.data.len() * 4);
        } else {
            let bytes: Vec<u8> = w.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            d.define(bytes.into_boxed_slice());
        }
        d.set_align(64);
        module.define_data(id, &d).map_err(cl_err)?;
        weight_ids.push(id);
    }

    let mut fctx = module.make_context();
    let mut fbc = FunctionBuilderContext::new();
    let mut kernels: BTreeMap<String, FuncId> = BTreeMap::new();
    let mut step_funcs: Vec<FuncId> = Vec::new();
    let mut instructions = 0usize;
    let mut all_steps: Vec<Step> = program.steps.clone();
    if program.output_per_token() {
        all_steps.push(Step::Scatter { x: program.output });
    }
    for step in &all_steps {
        let key = kernel_key(step, &program);
        if let Some(&id) = kernels.get(&key) {
            step_funcs.push(id);
            continue;
        }
        let fname = format!("{name}__k{}", kernels.len());
        let id = module
            .declare_function(&fname, Linkage::Local, &sig_n(call_conv, 4))
            .map_err(cl_err)?;
        fctx.func.signature = sig_n(call_conv, 4);
        let micro_refs = asm.refs_for(&mut module, &mut fctx.func, Some(step))?;
        {
            let mut b = FunctionBuilder::new(&mut fctx.func, &mut fbc);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let params: Vec<Value> = b.block_params(entry).to_vec();
            let mut e = Emit::new(b, cfg.lanes, cfg.fma);
            let nargs = step_arg_count(step);
            let args: Vec<Value> = (0..nargs)
                .map(|i| {
                    e.b.ins()
                        .load(types::I64, emit::mem(), params[0], (i * 8) as i32)
                })
                .collect();
            emit_step(
                &mut e,
                step,
                &program,
                &args,
                [params[1], params[2], params[3]],
                &cfg,
                &micro_refs,
            );
            e.b.ins().return_(&[]);
            e.b.finalize(fe);
        }
        instructions += fctx.func.dfg.num_insts();
        module
            .define_function(id, &mut fctx)
            .map_err(|e| CodegenError::Cranelift(format!("{fname}: {e:?}")))?;
        module.clear_context(&mut fctx);
        kernels.insert(key, id);
        step_funcs.push(id);
    }

    // the thread pool's parallel-for, defined in the C glue
    let par = module
        .declare_function(
            &format!("{name}__parallel"),
            Linkage::Import,
            &sig_n(call_conv, 4),
        )
        .map_err(cl_err)?;
    // the entry: NAME__forward(ctx)
    let fwd = module
        .declare_function(
            &format!("{name}__forward"),
            Linkage::Export,
            &sig_n(call_conv, 1),
        )
        .map_err(cl_err)?;
    fctx.func.signature = sig_n(call_conv, 1);
    {
        let wrefs: Vec<_> = weight_ids
            .iter()
            .map(|&d| module.declare_data_in_func(d, &mut fctx.func))
            .collect();
        let frefs: Vec<_> = step_funcs
            .iter()
            .map(|&f| module.declare_func_in_func(f, &mut fctx.func))
            .collect();
        let par_ref = module.declare_func_in_func(par, &mut fctx.func);
        let mut b = FunctionBuilder::new(&mut fctx.func, &mut fbc);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let c = b.block_params(entry)[0];
        let mut e = Emit::new(b, cfg.lanes, cfg.fma);
        let field = |e: &mut Emit, off: i32| e.b.ins().load(types::I64, emit::mem(), c, off);
        let batch = field(&mut e, ctx::BATCH);
        let seq = field(&mut e, ctx::SEQ);
        let ids = field(&mut e, ctx::IDS);
        let mask = field(&mut e, ctx::MASK);
        let typ = field(&mut e, ctx::TYPES);
        let ws = field(&mut e, ctx::WS);
        let out = field(&mut e, ctx::OUT);
        let pool = field(&mut e, ctx::POOL);
        let tokens = field(&mut e, ctx::TOKENS);
        let tok_src = field(&mut e, ctx::TOK_SRC);
        let seq_start = field(&mut e, ctx::SEQ_START);
        let padded = e.b.ins().imul(batch, seq);
        let pad_bytes = e.b.ins().imul_imm_s(padded, 4);
        let bufs: Vec<Value> = program
            .buffers
            .iter()
            .enumerate()
            .map(|(i, buf)| {
                if i == program.output && !program.output_per_token() {
                    out
                } else {
                    let o = e.b.ins().imul_imm_s(pad_bytes, buf.offset as i64);
                    e.b.ins().iadd(ws, o)
                }
            })
            .collect();
        let so =
            e.b.ins()
                .imul_imm_s(pad_bytes, program.scratch_offset as i64);
        let scratch = e.b.ins().iadd(ws, so);
        let weights: Vec<Value> = wrefs
            .iter()
            .map(|&w| e.b.ins().symbol_value(types::I64, w))
            .collect();
        let slot =
            e.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 16 * 8, 3));
        let rows = |r: Rows| match r {
            Rows::Tokens => tokens,
            Rows::Seqs => batch,
        };
        for (step, &fref) in all_steps.iter().zip(&frefs) {
            let row_tasks = |e: &mut Emit, rows: Value| {
                let r = e.b.ins().iadd_imm_s(rows, kernels::ROW_BLOCK - 1);
                e.b.ins().udiv_imm_u(r, kernels::ROW_BLOCK)
            };
            let (args, tasks): (Vec<Value>, Value) = match *step {
                Step::Embedding {
                    out,
                    word,
                    pos,
                    typ: t,
                    ..
                } => {
                    let tw = t.map_or(weights[word], |t| weights[t]);
                    (
                        vec![
                            ids,
                            typ,
                            mask,
                            seq_start,
                            bufs[out],
                            seq,
                            weights[word],
                            weights[pos],
                            tw,
                        ],
                        batch,
                    )
                }
                Step::LayerNorm {
                    x,
                    out,
                    gamma,
                    beta,
                    ..
                } => {
                    let r = rows(program.buffers[x].rows);
                    (
                        vec![bufs[x], bufs[out], r, weights[gamma], weights[beta]],
                        row_tasks(&mut e, r),
                    )
                }
                Step::Linear {
                    x,
                    out,
                    packed,
                    n,
                    residual,
                    ..
                } => {
                    let r = rows(program.buffers[x].rows);
                    let t = kernels::linear_task_count(&mut e, r, n, gemm_mr(&cfg));
                    let res = residual.map_or(bufs[x], |b| bufs[b]);
                    (vec![bufs[x], bufs[out], r, weights[packed], res], t)
                }
                Step::Act { x, out, .. } => {
                    let r = rows(program.buffers[x].rows);
                    (vec![bufs[x], bufs[out], r], row_tasks(&mut e, r))
                }
                Step::Add { a, b: bb, out } => {
                    let r = rows(program.buffers[a].rows);
                    (vec![bufs[a], bufs[bb], bufs[out], r], row_tasks(&mut e, r))
                }
                Step::Attention {
                    q,
                    k,
                    v,
                    out,
                    heads,
                    ..
                } => {
                    let t = e.b.ins().imul_imm_s(batch, heads as i64);
                    // the scratch of one thread (GEMM attention) or of one task (portable)
                    let stride = match attn_dims(&program) {
                        Some(dims) if cfg.avx2 => {
                            let sc = AttnScratch::new(dims);
                            let l = e.b.ins().iadd_imm_s(seq, PANEL as i64 - 1);
                            let l = e.b.ins().band_imm_s(l, -(PANEL as i64));
                            let f = e.b.ins().imul_imm_s(l, sc.per_l() as i64);
                            let f = e.b.ins().iadd_imm_s(f, sc.fixed() as i64);
                            e.b.ins().imul_imm_s(f, 4)
                        }
                        _ => e.b.ins().imul_imm_s(seq, 4),
                    };
                    let g = program.attn_geom(step).expect("an attention step");
                    let qp = e.b.ins().iadd_imm_s(bufs[q], g.q_off as i64 * 4);
                    let kp = e.b.ins().iadd_imm_s(bufs[k], g.k_off as i64 * 4);
                    let vp = e.b.ins().iadd_imm_s(bufs[v], g.v_off as i64 * 4);
                    let args = vec![qp, kp, vp, bufs[out], seq_start, scratch, seq, stride];
                    (args, t)
                }
                Step::Cls { x, out } | Step::MeanPool { x, out } => {
                    (vec![bufs[x], bufs[out], seq_start], batch)
                }
                Step::Scatter { x } => (
                    vec![bufs[x], out, tok_src, tokens],
                    row_tasks(&mut e, tokens),
                ),
            };
            for (i, &a) in args.iter().enumerate() {
                e.b.ins().stack_store(types::I64, a, slot, (i * 8) as i32);
            }
            let args_ptr = e.b.ins().stack_addr(types::I64, slot, 0);
            let fp = e.b.ins().func_addr(types::I64, fref);
            e.b.ins().call(par_ref, &[pool, fp, args_ptr, tasks]);
        }
        e.b.ins().return_(&[]);
        e.b.finalize(fe);
    }
    instructions += fctx.func.dfg.num_insts();
    module
        .define_function(fwd, &mut fctx)
        .map_err(|e| CodegenError::Cranelift(format!("forward: {e:?}")))?;
    module.clear_context(&mut fctx);
    let product = module.finish();
    let object = product.emit().map_err(cl_err)?;
    let scratch_floats_c = match attn_dims(&program) {
        Some(dims) if cfg.avx2 => {
            let sc = AttnScratch::new(dims);
            format!(
                "(size_t)threads * ((((size_t)seq + {}) / {PANEL} * {PANEL}) * {} + {})",
                PANEL - 1,
                sc.per_l(),
                sc.fixed()
            )
        }
        Some(_) => format!("(size_t)batch * (size_t)seq * {}", program.max_heads),
        None => "0".to_string(),
    };
    Ok(Compiled {
        object,
        program,
        uses_avx2: cfg.avx2,
        uses_avx512: cfg.avx512,
        instructions,
        scratch_floats_c,
    })
}

/// The largest per-head q/k and v widths of the attention steps.
fn attn_dims(p: &Program) -> Option<(usize, usize)> {
    p.steps
        .iter()
        .filter_map(|s| match (s, p.attn_geom(s)) {
            (Step::Attention { heads, .. }, Some(g)) => {
                Some((g.qk_width / heads, g.v_width / heads))
            }
            _ => None,
        })
        .reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)))
}

/// Rows per GEMM tile for the target.
fn gemm_mr(cfg: &Cfg) -> usize {
    if cfg.avx512 {
        x86::AVX512_MR
    } else if cfg.avx2 {
        x86::AVX2_MR
    } else {
        kernels::portable_mr(cfg.lanes, cfg.regs)
    }
}

fn step_arg_count(step: &Step) -> usize {
    match step {
        Step::Embedding { .. } => 9,
        Step::LayerNorm { .. } => 5,
        Step::Linear { .. } => 5,
        Step::Add { .. } | Step::Scatter { .. } => 4,
        Step::Act { .. } | Step::Cls { .. } | Step::MeanPool { .. } => 3,
        Step::Attention { .. } => 8,
    }
}

/// A key that identifies a kernel's code (constants, not buffers).
fn kernel_key(step: &Step, p: &Program) -> String {
    let w = |b: usize| p.buffers[b].width;
    match step {
        Step::Embedding {
            positions,
            types,
            width,
            ..
        } => format!("emb {positions:?} {types:?} {width}"),
        Step::LayerNorm { x, eps, .. } => format!("ln {} {eps:e}", w(*x)),
        Step::Linear {
            k,
            n,
            act,
            residual,
            ..
        } => format!("linear {k} {n} {act:?} {}", residual.is_some()),
        Step::Act { x, act, .. } => format!("act {act:?} {}", w(*x)),
        Step::Add { a, .. } => format!("add {}", w(*a)),
        Step::Attention { heads, scale, .. } => {
            format!("attn {:?} {heads} {scale:e}", p.attn_geom(step))
        }
        Step::Cls { x, .. } => format!("cls {}", w(*x)),
        Step::MeanPool { x, .. } => format!("mean {}", w(*x)),
        Step::Scatter { x } => format!("scatter {}", w(*x)),
    }
}

fn emit_step(
    e: &mut Emit,
    step: &Step,
    p: &Program,
    a: &[Value],
    [begin, end, tid]: [Value; 3],
    cfg: &Cfg,
    micro: &AsmRefs,
) {
    let range = [begin, end];
    let w = |b: usize| p.buffers[b].width;
    match step {
        Step::Embedding {
            positions,
            types,
            width,
            ..
        } => kernels::embedding(
            e,
            [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]],
            range,
            *positions,
            *types,
            *width,
        ),
        Step::LayerNorm { x, eps, .. } => {
            kernels::layer_norm(e, [a[0], a[1], a[2], a[3], a[4]], range, w(*x), *eps)
        }
        Step::Linear {
            k,
            n,
            act,
            residual,
            ..
        } => {
            let epi = kernels::Epilogue {
                act: *act,
                residual: residual.map(|_| a[4]),
            };
            emit_linear(e, [a[0], a[1], a[2], a[3]], range, *k, *n, cfg, micro, &epi);
        }
        Step::Act { x, act, .. } => kernels::activation(e, [a[0], a[1], a[2]], range, w(*x), *act),
        Step::Add { a: x, .. } => kernels::add(e, [a[0], a[1], a[2], a[3]], range, w(*x)),
        Step::Attention {
            heads, scale, out, ..
        } => {
            let g = p.attn_geom(step).expect("an attention step");
            let shape = kernels::AttnShape {
                heads: *heads,
                ldq: g.ldq,
                ldk: g.ldk,
                ldv: g.ldv,
                ldo: w(*out),
                dq: g.qk_width / heads,
                dv: g.v_width / heads,
                scale: *scale,
            };
            let args = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]];
            if cfg.avx2 {
                let layout = AttnScratch::new(attn_dims(p).unwrap_or((shape.dq, shape.dv)));
                attention_gemm(e, args, range, tid, &shape, &layout, micro);
            } else {
                kernels::attention(e, args, range, &shape)
            }
        }
        Step::Cls { x, .. } => kernels::cls(e, [a[0], a[1], a[2]], range, w(*x)),
        Step::MeanPool { x, .. } => kernels::mean_pool(e, [a[0], a[1], a[2]], range, w(*x)),
        Step::Scatter { x } => kernels::scatter(e, [a[0], a[1], a[2], a[3]], range, w(*x)),
    }
}

/// A linear step's tasks: AVX2 microkernel tiles where the target has them, portable
/// Cranelift tiles elsewhere, then the epilogue.
#[allow(clippy::too_many_arguments)]
fn emit_linear(
    e: &mut Emit,
    args: [Value; 4],
    range: [Value; 2],
    k: usize,
    n: usize,
    cfg: &Cfg,
    micro: &AsmRefs,
    epi: &kernels::Epilogue,
) {
    let mr = gemm_mr(cfg);
    if cfg.avx2 {
        // full panels run the epilogue in the microkernel's registers
        let fused = !micro.fused.is_empty();
        let tile = |e: &mut Emit, t: &kernels::Tile| avx2_tile(e, t, k, n, micro, fused);
        kernels::linear_tasks(e, args, range, k, n, mr, &tile, epi, fused);
    } else {
        let tile = |e: &mut Emit, t: &kernels::Tile| kernels::portable_tile(e, t, k, n);
        kernels::linear_tasks(e, args, range, k, n, mr, &tile, epi, false);
    }
}

/// One tile through the AVX2 microkernels: straight into the output for a full panel (with
/// the epilogue in registers when `fused`), through a stack tile for a partial last panel.
fn avx2_tile(e: &mut Emit, t: &kernels::Tile, k: usize, n: usize, micro: &AsmRefs, fused: bool) {
    let lda = e.i(k as i64 * 4);
    let ldc = e.i(n as i64 * 4);
    let kk = e.i(k as i64);
    if t.ncols == PANEL {
        // tiles that prefetch (a share of) the next panel run the prefetching variant
        let (with, without) = if fused {
            (&micro.fused_pf, &micro.fused)
        } else {
            (&micro.plain_pf, &micro.plain)
        };
        let mut args = vec![t.a, lda, t.bp, t.c, ldc, kk];
        if fused {
            args.extend(t.res);
        }
        let plain = |e: &mut Emit| {
            e.b.ins().call(without[t.m - 1], &args);
        };
        match t.prefetch {
            Some(pf) if !with.is_empty() => {
                let mut pf_args = args.clone();
                pf_args.extend([pf.addr, pf.step]);
                let prefetching = |e: &mut Emit| {
                    e.b.ins().call(with[t.m - 1], &pf_args);
                };
                match pf.when {
                    Some(cond) => e.if_else(cond, prefetching, plain),
                    None => prefetching(e),
                }
            }
            _ => plain(e),
        }
        return;
    }
    avx2_tile_ld(e, t, lda, kk, ldc, micro);
}

/// The per-thread scratch of the GEMM attention, for the widest heads `d` (q/k) and `dv` of the
/// program, in floats, with `L` the sequence length rounded up to 16: the scores of one tile
/// of queries (`ATTN_TILE x L`), K packed in 16-key panels (`L x (d + 1)`: a zero bias row per
/// panel), V packed in 16-column panels (`(L + 1) x dv16`), and the tile's softmax
/// normalisations (`ATTN_TILE`), in that order. `per_l() * L + fixed()` floats.
struct AttnScratch {
    d: usize,
    dv16: usize,
}

impl AttnScratch {
    fn new((d, dv): (usize, usize)) -> Self {
        AttnScratch {
            d,
            dv16: dv.div_ceil(PANEL) * PANEL,
        }
    }

    fn per_l(&self) -> usize {
        ATTN_TILE + self.d + 1 + self.dv16
    }

    fn fixed(&self) -> usize {
        self.dv16 + ATTN_TILE
    }
}

/// Queries per attention tile: the scores of one tile (`ATTN_TILE x L` floats, 24 KiB at
/// L = 128, 96 KiB at 512) stay in L2 while K and V are swept once each per tile.
pub const ATTN_TILE: usize = 48;

/// Attention as two GEMMs per (sequence, head) task on the AVX2 microkernels: K of the head
/// packed transposed into 16-key panels and V into 16-column panels, then for each tile of
/// `ATTN_TILE` queries: the scores `Q Kᵀ` against every key panel, the AVX2 softmax of those
/// rows (scaled), and `P V` straight into the output, scaled by the softmax's 1/sum. Only one
/// tile of scores exists at a time. Each thread has its own scratch (`tid` selects it), laid
/// out as `layout` says (sized for the widest heads of any step).
#[allow(clippy::too_many_arguments)]
fn attention_gemm(
    e: &mut Emit,
    [q, k, v, out, seq_start, scratch, seq, stride]: [Value; 8],
    [begin, end]: [Value; 2],
    tid: Value,
    a: &kernels::AttnShape,
    layout: &AttnScratch,
    micro: &AsmRefs,
) {
    use cranelift_codegen::ir::condcodes::IntCC;
    let (d, dv) = (a.dq, a.dv);
    let lp = e.b.ins().iadd_imm_s(seq, PANEL as i64 - 1);
    let lp = e.b.ins().band_imm_s(lp, -(PANEL as i64));
    let base = e.b.ins().imul(tid, stride);
    let sbuf = e.b.ins().iadd(scratch, base);
    let ll = e.b.ins().imul_imm_s(lp, ATTN_TILE as i64);
    let kp = e.addr(sbuf, ll, 4);
    let kd = e.b.ins().imul_imm_s(lp, layout.d as i64 + 1);
    let vp = e.addr(kp, kd, 4);
    let lp1 = e.b.ins().iadd_imm_s(lp, 1);
    let vfl = e.b.ins().imul_imm_s(lp1, layout.dv16 as i64);
    let inv = e.addr(vp, vfl, 4);
    let ld_s = e.b.ins().imul_imm_s(lp, 4);
    let lda_q = e.i(a.ldq as i64 * 4);
    let ldc_o = e.i(a.ldo as i64 * 4);
    let dk = e.i(d as i64);
    let panel_k = (PANEL * (d + 1) * 4) as i64;
    let vpanels = dv.div_ceil(PANEL);
    e.for_range(begin, end, 1, |e, task| {
        let (h, s0, s1) = kernels::attention_task(e, task, seq_start, a.heads);
        let len = e.b.ins().isub(s1, s0);
        let len16 = e.b.ins().iadd_imm_s(len, PANEL as i64 - 1);
        let kpanels = e.b.ins().udiv_imm_u(len16, PANEL as i64);
        // pack Kᵀ: panel p holds keys 16p..16p+15: [16 zeros][d rows of 16]
        let kbytes = e.b.ins().imul_imm_s(kpanels, panel_k);
        e.zero_bytes(kp, kbytes);
        let z = e.i(0);
        e.for_range(z, len, 1, |e, j| {
            let src = e.b.ins().iadd(s0, j);
            let krow = e.addr(k, src, a.ldk as i64 * 4);
            let krow = e.addr(krow, h, d as i64 * 4);
            let p = e.b.ins().ushr_imm_u(j, 4);
            let jj = e.b.ins().band_imm_s(j, 15);
            let dst = e.addr(kp, p, panel_k);
            let dst = e.addr(dst, jj, 4);
            for c in 0..d {
                let x =
                    e.b.ins()
                        .load(types::F32, emit::mem(), krow, (c * 4) as i32);
                e.b.ins()
                    .store(emit::mem(), x, dst, ((PANEL + c * PANEL) * 4) as i32);
            }
        });
        // pack V: panel p holds value columns 16p..: [16 zeros][len rows of 16]
        let len1 = e.b.ins().iadd_imm_s(len, 1);
        let vpanel_bytes = e.b.ins().imul_imm_s(len1, (PANEL * 4) as i64);
        let vbytes = e.b.ins().imul_imm_s(vpanel_bytes, vpanels as i64);
        e.zero_bytes(vp, vbytes);
        let z = e.i(0);
        e.for_range(z, len, 1, |e, j| {
            let src = e.b.ins().iadd(s0, j);
            let vrow = e.addr(v, src, a.ldv as i64 * 4);
            let vrow = e.addr(vrow, h, dv as i64 * 4);
            let j1 = e.b.ins().iadd_imm_s(j, 1);
            for p in 0..vpanels {
                let dst = e.b.ins().imul_imm_s(vpanel_bytes, p as i64);
                let dst = e.b.ins().iadd(vp, dst);
                let dst = e.addr(dst, j1, (PANEL * 4) as i64);
                let cols = (dv - p * PANEL).min(PANEL);
                let mut c = 0;
                while c < cols {
                    if c + 4 <= cols {
                        let x = e.load(emit::Shape::Vector, vrow, ((p * PANEL + c) * 4) as i32);
                        e.store(x, dst, (c * 4) as i32);
                        c += 4;
                    } else {
                        let x = e.b.ins().load(
                            types::F32,
                            emit::mem(),
                            vrow,
                            ((p * PANEL + c) * 4) as i32,
                        );
                        e.b.ins().store(emit::mem(), x, dst, (c * 4) as i32);
                        c += 1;
                    }
                }
            }
        });
        // per tile of ATTN_TILE queries: scores against every key panel (6 queries at a
        // time), softmax of the tile's rows, then P V into the output
        let ntiles = e.b.ins().iadd_imm_s(len, ATTN_TILE as i64 - 1);
        let ntiles = e.b.ins().udiv_imm_u(ntiles, ATTN_TILE as i64);
        let z = e.i(0);
        e.for_range(z, ntiles, 1, |e, qt| {
            let t0 = e.b.ins().imul_imm_s(qt, ATTN_TILE as i64);
            let tleft = e.b.ins().isub(len, t0);
            let tmax = e.i(ATTN_TILE as i64);
            let tlen = e.b.ins().smin(tleft, tmax);
            let blocks = kernels::RowBlocks::new(e, tlen, x86::AVX2_MR);
            let rows6 = blocks.count;
            // the blocks of up to 6 rows of the tile: (rows, first query, its score row, its
            // first row in the tile)
            let block = |e: &mut Emit, rb: Value| {
                let (i0, m) = blocks.block(e, rb);
                let qi = e.b.ins().iadd(s0, t0);
                let qi = e.b.ins().iadd(qi, i0);
                let srow = e.b.ins().imul(i0, ld_s);
                let srow = e.b.ins().iadd(sbuf, srow);
                (m, qi, srow, i0)
            };
            let z = e.i(0);
            e.for_range(z, rows6, 1, |e, rb| {
                let (m, qi, srow, _) = block(e, rb);
                let qa = e.addr(q, qi, a.ldq as i64 * 4);
                let qa = e.addr(qa, h, d as i64 * 4);
                let z = e.i(0);
                e.for_range(z, kpanels, 1, |e, p| {
                    let bp = e.addr(kp, p, panel_k);
                    let c = e.addr(srow, p, (PANEL * 4) as i64);
                    for mm in 1..=x86::AVX2_MR {
                        let is = e.b.ins().icmp_imm_s(IntCC::Equal, m, mm as i64);
                        e.if_nonzero(is, |e| {
                            e.b.ins()
                                .call(micro.plain[mm - 1], &[qa, lda_q, bp, c, ld_s, dk]);
                        });
                    }
                });
            });
            // softmax over each row's first len scores (scaled)
            let sm = micro
                .softmax
                .expect("attention kernels declare the softmax");
            e.b.ins().call(sm, &[sbuf, ld_s, tlen, len, inv]);
            let z = e.i(0);
            e.for_range(z, rows6, 1, |e, rb| {
                let (m, qi, srow, i0) = block(e, rb);
                let orow = e.addr(out, qi, a.ldo as i64 * 4);
                let orow = e.addr(orow, h, dv as i64 * 4);
                for p in 0..vpanels {
                    let bp = e.b.ins().imul_imm_s(vpanel_bytes, p as i64);
                    let bp = e.b.ins().iadd(vp, bp);
                    let c = e.b.ins().iadd_imm_s(orow, (p * PANEL * 4) as i64);
                    let cols = (dv - p * PANEL).min(PANEL);
                    for mm in 1..=x86::AVX2_MR {
                        let is = e.b.ins().icmp_imm_s(IntCC::Equal, m, mm as i64);
                        e.if_nonzero(is, |e| {
                            let t = kernels::Tile {
                                a: srow,
                                c,
                                bp,
                                m: mm,
                                ncols: cols,
                                res: None,
                                prefetch: None,
                            };
                            avx2_tile_ld(e, &t, ld_s, len, ldc_o, micro);
                        });
                    }
                }
                // the softmax's normalisation, on dv outputs instead of len probabilities
                let z = e.i(0);
                e.for_range(z, m, 1, |e, i| {
                    let o = e.addr(orow, i, a.ldo as i64 * 4);
                    let ti = e.b.ins().iadd(i0, i);
                    let ia = e.addr(inv, ti, 4);
                    let s = e.b.ins().load(types::F32, emit::mem(), ia, 0);
                    e.row(dv, |e, off, sh| {
                        let pa = e.b.ins().iadd(o, off);
                        let x = e.load(sh, pa, 0);
                        let sv = e.splat(sh, s);
                        let y = e.b.ins().fmul(x, sv);
                        e.store(y, pa, 0);
                    });
                });
            });
        });
    });
}

/// Like `avx2_tile` with runtime strides and depth: `lda`, `k` and `ldc` are values.
fn avx2_tile_ld(
    e: &mut Emit,
    t: &kernels::Tile,
    lda: Value,
    k: Value,
    ldc: Value,
    micro: &AsmRefs,
) {
    if t.ncols == PANEL {
        e.b.ins()
            .call(micro.plain[t.m - 1], &[t.a, lda, t.bp, t.c, ldc, k]);
        return;
    }
    let tile = e.b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        (x86::AVX512_MR.max(x86::AVX2_MR) * PANEL * 4) as u32,
        6,
    ));
    let tp = e.b.ins().stack_addr(types::I64, tile, 0);
    let tld = e.i((PANEL * 4) as i64);
    e.b.ins()
        .call(micro.plain[t.m - 1], &[t.a, lda, t.bp, tp, tld, k]);
    for i in 0..t.m {
        let row = e.b.ins().imul_imm_s(ldc, i as i64);
        let row = e.b.ins().iadd(t.c, row);
        for j in 0..t.ncols {
            let v =
                e.b.ins()
                    .stack_load(types::I64, types::F32, tile, ((i * PANEL + j) * 4) as i32);
            e.b.ins().store(emit::mem(), v, row, (j * 4) as i32);
        }
    }
}

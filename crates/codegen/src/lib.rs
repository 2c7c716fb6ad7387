//! Code generation: a raised graph with one selected output becomes one relocatable object
//! (Cranelift, position independent) holding the weights in read-only data, one function per
//! distinct kernel, hand-assembled GEMM microkernels on x86-64 with AVX2, and the entry
//! `NAME__forward(ctx)` that runs the kernels in order over a caller-provided workspace.
//! `shim` writes the C glue (argument checks, the public ABI, the executable's I/O).

mod attention;
mod bench;
mod emit;
mod gemm;
mod isa;
mod kernels;
mod linear;
mod lower;
mod micro;
mod program;
mod qkernels;
pub mod shim;
mod text;
pub mod tokenizer;

use std::collections::BTreeMap;
use std::str::FromStr;

use bertc_targets::Target;
use cranelift_codegen::ir::{
    types, AbiParam, InstBuilder, Signature, StackSlotData, StackSlotKind, Value,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};

pub use bench::compile_gemm_bench;
pub use isa::Isa;
pub use lower::{
    lower, pack_linear, pack_qlinear, quant_row_floats, quantized_row, Act, CodegenError,
    LayoutKind, LinearWeights, Program, QFormat, QuantRows, Rows, Step, Weight, WeightLayout,
    PANEL,
};

use attention::attention_gemm;
use bertc_ir::{DType, Graph};
use emit::Emit;
use gemm::emit_linear;
use micro::{Asm, AsmRefs};
pub use text::lowered_text;

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

/// A builder for `func` positioned in its sealed entry block, and the entry's parameters.
fn entry_block<'a>(
    func: &'a mut cranelift_codegen::ir::Function,
    fbc: &'a mut FunctionBuilderContext,
) -> (FunctionBuilder<'a>, Vec<Value>) {
    let mut b = FunctionBuilder::new(func, fbc);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let params = b.block_params(entry).to_vec();
    (b, params)
}

/// The object and what the glue needs to know about it.
pub struct Compiled {
    pub object: Vec<u8>,
    pub program: Program,
    /// The instruction set the kernels were chosen for (`Isa::name`).
    pub isa: &'static str,
    /// The GEMM microkernel families the linears run on (f32, then int8 if the program has
    /// int8 linears), where the ISA has them.
    pub gemm_families: Vec<&'static str>,
    pub instructions: usize,
    /// A C expression of `batch`, `seq` and `threads`: the floats of attention scratch the
    /// workspace needs after the activations.
    pub scratch_floats_c: String,
    /// The most real tokens one forward runs (`Program::chunk_tokens` for the target's caches).
    pub chunk_tokens: usize,
}

fn cl_err(e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Cranelift(e.to_string())
}

/// Defines the function built in `fctx` as `id` (`what` names it in an error) and clears the
/// context for the next one.
fn define(
    module: &mut ObjectModule,
    id: FuncId,
    fctx: &mut cranelift_codegen::Context,
    what: &str,
) -> Result<(), CodegenError> {
    module
        .define_function(id, fctx)
        .map_err(|e| CodegenError::Cranelift(format!("{what}: {e:?}")))?;
    module.clear_context(fctx);
    Ok(())
}

fn isa_for(
    target: &Target,
) -> Result<(std::sync::Arc<dyn cranelift_codegen::isa::TargetIsa>, Isa), CodegenError> {
    let mut flags = settings::builder();
    flags.set("opt_level", "none").map_err(cl_err)?;
    flags.set("is_pic", "true").map_err(cl_err)?;
    let triple = target_lexicon::Triple::from_str(&target.triple)
        .map_err(|e| CodegenError::Cranelift(format!("triple '{}': {e}", target.triple)))?;
    let mut isa = cranelift_codegen::isa::lookup(triple).map_err(cl_err)?;
    for flag in target.cranelift_flags() {
        isa.set(flag, "true").map_err(cl_err)?;
    }
    let kernels = Isa::for_target(target);
    let isa = isa.finish(settings::Flags::new(flags)).map_err(cl_err)?;
    Ok((isa, kernels))
}

/// A module for `target`, and its hand-assembled kernels when the target has them.
fn new_module(target: &Target, name: &str) -> Result<(ObjectModule, Isa, Asm), CodegenError> {
    let (isa, kernels) = isa_for(target)?;
    let builder = ObjectBuilder::new(
        isa,
        name.as_bytes().to_vec(),
        cranelift_module::default_libcall_names(),
    )
    .map_err(cl_err)?;
    let module = ObjectModule::new(builder);
    let asm = Asm::new(name, &kernels);
    Ok((module, kernels, asm))
}

fn sig_n(cc: cranelift_codegen::isa::CallConv, n: usize) -> Signature {
    let mut s = Signature::new(cc);
    for _ in 0..n {
        s.params.push(AbiParam::new(types::I64));
    }
    s
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
    let (mut module, isa, mut asm) = new_module(target, name)?;
    let program = lower(g, isa.int8_format())?;
    asm.attention_key_blocks = attention::program_key_blocks(&program, &isa).is_some();
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
        if w.bytes.iter().all(|&b| b == 0) {
            // all zero bits: zero-initialised data takes no space in the file
            d.define_zeroinit(w.bytes.len());
        } else {
            d.define(w.bytes.clone().into_boxed_slice());
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
            let (b, params) = entry_block(&mut fctx.func, &mut fbc);
            let mut e = Emit::new(b, isa.lanes, isa.fma);
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
                &isa,
                &micro_refs,
            );
            e.b.ins().return_(&[]);
            e.b.finalize(fe);
        }
        instructions += fctx.func.dfg.num_insts();
        define(&mut module, id, &mut fctx, &fname)?;
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
        let (b, params) = entry_block(&mut fctx.func, &mut fbc);
        let c = params[0];
        let mut e = Emit::new(b, isa.lanes, isa.fma);
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
        // every buffer has at most a row a real token (`Program::ws_per_token`)
        let row_bytes = e.b.ins().imul_imm_s(tokens, 4);
        let bufs: Vec<Value> = program
            .buffers
            .iter()
            .enumerate()
            .map(|(i, buf)| {
                if i == program.output && !program.output_per_token() {
                    out
                } else {
                    let o = e.b.ins().imul_imm_s(row_bytes, buf.offset as i64);
                    e.b.ins().iadd(ws, o)
                }
            })
            .collect();
        let so =
            e.b.ins()
                .imul_imm_s(row_bytes, program.scratch_offset as i64);
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
        let mut calls: Vec<(Vec<Value>, Value)> = Vec::new();
        let mut longest = None;
        for (step, &fref) in all_steps.iter().zip(&frefs) {
            let row_tasks = |e: &mut Emit, rows: Value| {
                let r = e.b.ins().iadd_imm_s(rows, kernels::ROW_BLOCK - 1);
                e.b.ins().udiv_imm_u(r, kernels::ROW_BLOCK)
            };
            let (args, tasks): (Vec<Value>, Value) = match *step {
                Step::Embedding {
                    out,
                    word,
                    word_scale,
                    pos,
                    typ: t,
                    ..
                } => {
                    let tw = t.map_or(weights[word], |t| weights[t]);
                    let mut args = vec![
                        ids,
                        typ,
                        mask,
                        seq_start,
                        bufs[out],
                        seq,
                        weights[word],
                        weights[pos],
                        tw,
                    ];
                    args.extend(word_scale.map(|s| weights[s]));
                    (args, batch)
                }
                Step::LayerNorm {
                    x,
                    out,
                    gamma,
                    beta,
                    quantized,
                    ..
                } => {
                    let r = rows(program.buffers[x].rows);
                    let mut args = vec![bufs[x], bufs[out], r, weights[gamma], weights[beta]];
                    if let Some((q, qr)) = quantized {
                        args.push(bufs[q]);
                        args.extend(qr.smooth.map(|m| weights[m]));
                    }
                    (args, row_tasks(&mut e, r))
                }
                Step::Linear {
                    x,
                    out,
                    packed,
                    n,
                    residual,
                    weights: w,
                    ..
                } => {
                    let r = rows(program.buffers[x].rows);
                    let t = gemm::linear_task_count(&mut e, r, n, w, &isa);
                    let res = residual.map_or(bufs[x], |b| bufs[b]);
                    (vec![bufs[x], bufs[out], r, weights[packed], res], t)
                }
                Step::Quantize {
                    x, out, rows: qr, ..
                } => {
                    let r = rows(program.buffers[x].rows);
                    let mut args = vec![bufs[x], bufs[out], r];
                    args.extend(qr.smooth.map(|m| weights[m]));
                    (args, row_tasks(&mut e, r))
                }
                Step::Act { x, out, .. } => {
                    let r = rows(program.buffers[x].rows);
                    (vec![bufs[x], bufs[out], r], row_tasks(&mut e, r))
                }
                Step::QuantRange { x, scale, zero } => {
                    (vec![bufs[x], bufs[scale], bufs[zero], seq_start], batch)
                }
                Step::Pool { x, out, .. } => {
                    (vec![bufs[x], bufs[out], seq_start, tok_src, seq], batch)
                }
                Step::Attention {
                    q,
                    k,
                    v,
                    out,
                    heads,
                    ..
                } => {
                    let g = program.attn_geom(step).expect("an attention step");
                    let qkvo = [
                        e.b.ins().iadd_imm_s(bufs[q], g.q_off as i64 * 4),
                        e.b.ins().iadd_imm_s(bufs[k], g.k_off as i64 * 4),
                        e.b.ins().iadd_imm_s(bufs[v], g.v_off as i64 * 4),
                        bufs[out],
                    ];
                    let mut c = attention::forward_calls(
                        &mut e,
                        (&program, &isa, step, heads),
                        qkvo,
                        [seq_start, scratch, batch, seq, tokens],
                        &mut longest,
                    );
                    let last = c.pop().expect("a call");
                    calls.extend(c);
                    last
                }
                Step::Cls { x, out }
                | Step::MeanPool { x, out }
                | Step::MaxPool { x, out }
                | Step::Normalize { x, out } => (vec![bufs[x], bufs[out], seq_start], batch),
                Step::Concat { a, b: bb, out } => (vec![bufs[a], bufs[bb], bufs[out]], batch),
                Step::Scatter { x } => (
                    vec![bufs[x], out, tok_src, tokens],
                    row_tasks(&mut e, tokens),
                ),
                Step::Map {
                    ref inputs,
                    ref seq_inputs,
                    rows: ref consts,
                    out,
                    ..
                } => {
                    let r = rows(program.buffers[out].rows);
                    let mut args: Vec<Value> = inputs.iter().map(|&b| bufs[b]).collect();
                    args.extend([bufs[out], r]);
                    args.extend(consts.iter().map(|&w| weights[w]));
                    args.extend(seq_inputs.iter().map(|&b| bufs[b]));
                    args.extend([tok_src, seq]);
                    (args, row_tasks(&mut e, r))
                }
            };
            calls.push((args, tasks));
            for (args, tasks) in calls.drain(..) {
                for (i, &a) in args.iter().enumerate() {
                    e.b.ins().stack_store(types::I64, a, slot, (i * 8) as i32);
                }
                let args_ptr = e.b.ins().stack_addr(types::I64, slot, 0);
                let fp = e.b.ins().func_addr(types::I64, fref);
                e.b.ins().call(par_ref, &[pool, fp, args_ptr, tasks]);
            }
        }
        e.b.ins().return_(&[]);
        e.b.finalize(fe);
    }
    instructions += fctx.func.dfg.num_insts();
    define(&mut module, fwd, &mut fctx, "forward")?;
    let product = module.finish();
    let object = product.emit().map_err(cl_err)?;
    let scratch_floats_c = attention::scratch_floats_c(&program, &isa);
    // the f32 family and the int8 families the linears use, in that order
    let mut int8_formats: Vec<QFormat> = program
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Linear {
                weights: LinearWeights::Int8(f),
                ..
            } => Some(*f),
            _ => None,
        })
        .collect();
    int8_formats.sort();
    int8_formats.dedup();
    let gemm_families = isa
        .gemm_f32()
        .into_iter()
        .chain(
            int8_formats
                .iter()
                .filter_map(|&f| isa.gemm(DType::I8, LayoutKind::QPanels(f))),
        )
        .map(|k| k.family)
        .collect();
    let chunk_tokens = program.chunk_tokens(&isa.caches);
    Ok(Compiled {
        object,
        program,
        isa: isa.name,
        gemm_families,
        instructions,
        scratch_floats_c,
        chunk_tokens,
    })
}

/// The largest per-head q/k and v widths of the attention steps.
pub(crate) fn attn_dims(p: &Program) -> Option<(usize, usize)> {
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

fn step_arg_count(step: &Step) -> usize {
    match step {
        Step::Embedding { word_scale, .. } => 9 + usize::from(word_scale.is_some()),
        Step::LayerNorm { quantized, .. } => match quantized {
            Some((_, q)) => 6 + usize::from(q.smooth.is_some()),
            None => 5,
        },
        Step::Quantize { rows, .. } => 3 + usize::from(rows.smooth.is_some()),
        Step::Linear { .. } => 5,
        Step::Scatter { .. } => 4,
        Step::Pool { .. } => 5,
        Step::QuantRange { .. } => 4,
        Step::Act { .. }
        | Step::Cls { .. }
        | Step::MeanPool { .. }
        | Step::MaxPool { .. }
        | Step::Normalize { .. }
        | Step::Concat { .. } => 3,
        Step::Attention { .. } => 10,
        Step::Map {
            inputs,
            seq_inputs,
            rows,
            ..
        } => inputs.len() + 2 + rows.len() + seq_inputs.len() + 2,
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
            word_scale,
            sum_qdq,
            ..
        } => format!(
            "emb {positions:?} {types:?} {width} {} {sum_qdq:?}",
            word_scale.is_some()
        ),
        Step::LayerNorm {
            x, eps, quantized, ..
        } => match quantized {
            Some((_, q)) => format!("ln {} {eps:e} {q:?}", w(*x)),
            None => format!("ln {} {eps:e}", w(*x)),
        },
        Step::Linear {
            k,
            n,
            act,
            residual,
            weights,
            ..
        } => {
            let op = match weights {
                LinearWeights::F32 => "linear",
                LinearWeights::Int8(QFormat::Pairs) => "qlinear",
                LinearWeights::Int8(QFormat::Quads) => "qlinear4",
                LinearWeights::Int8(QFormat::Octs) => "qlinear8",
            };
            format!("{op} {k} {n} {act:?} {}", residual.is_some())
        }
        Step::Quantize { k, rows, .. } => format!("quantize {k} {rows:?}"),
        Step::Act { x, act, .. } => format!("act {act:?} {}", w(*x)),
        Step::Attention {
            heads,
            scale,
            quant,
            ..
        } => {
            format!("attn {:?} {heads} {scale:e} {quant:?}", p.attn_geom(step))
        }
        Step::Cls { x, .. } => format!("cls {}", w(*x)),
        Step::MeanPool { x, .. } => format!("mean {}", w(*x)),
        Step::MaxPool { x, .. } => format!("max {}", w(*x)),
        Step::Pool { x, mode, .. } => format!("pool {} {mode:?}", w(*x)),
        Step::Normalize { x, .. } => format!("normalize {}", w(*x)),
        Step::Concat { a, b, .. } => format!("concat {} {}", w(*a), w(*b)),
        Step::QuantRange { x, .. } => format!("quant_range {} {:?}", w(*x), p.buffers[*x].rows),
        Step::Scatter { x } => format!("scatter {}", w(*x)),
        Step::Map { out, expr, .. } => {
            format!("map {} {:?} {expr:?}", w(*out), p.buffers[*out].rows)
        }
    }
}

fn emit_step(
    e: &mut Emit,
    step: &Step,
    p: &Program,
    a: &[Value],
    [begin, end, tid]: [Value; 3],
    isa: &Isa,
    micro: &AsmRefs,
) {
    let range = [begin, end];
    let w = |b: usize| p.buffers[b].width;
    match step {
        Step::Embedding {
            positions,
            types,
            width,
            word_scale,
            sum_qdq,
            ..
        } => kernels::embedding(
            e,
            [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]],
            range,
            (*positions, *types, *sum_qdq),
            *width,
            word_scale.map(|_| a[9]),
        ),
        Step::LayerNorm {
            x, eps, quantized, ..
        } => {
            let args = [a[0], a[1], a[2], a[3], a[4]];
            kernels::layer_norm(e, args, range, (w(*x), *eps), micro.layer_norm);
            // the task's normalised rows, still in cache, quantized for the int8 linears
            if let Some((_, qr)) = quantized {
                let q = [a[1], a[5], a[2]];
                let m = qr.smooth.map(|_| a[6]);
                qkernels::quantize_rows(e, q, range, w(*x), (*qr, m), micro.quantize);
            }
        }
        Step::Linear {
            k,
            n,
            act,
            residual,
            weights,
            ..
        } => {
            let epi = linear::Epilogue {
                act: *act,
                residual: residual.map(|_| a[4]),
            };
            let args = [a[0], a[1], a[2], a[3]];
            emit_linear(e, args, range, *k, *n, *weights, isa, micro, &epi);
        }
        Step::Quantize { k, rows, .. } => {
            let args = [a[0], a[1], a[2]];
            let m = rows.smooth.map(|_| a[3]);
            qkernels::quantize_rows(e, args, range, *k, (*rows, m), micro.quantize)
        }
        Step::Act { x, act, .. } => kernels::activation(e, [a[0], a[1], a[2]], range, w(*x), *act),
        Step::Attention {
            heads,
            scale,
            out,
            quant,
            ..
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
                quant: *quant,
            };
            if attention::on_gemm(step, isa) {
                let layout = attention::program_scratch(p).expect("an attention step");
                let kb = attention::program_key_blocks(p, isa);
                attention_gemm(
                    e,
                    [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]],
                    range,
                    tid,
                    &shape,
                    &layout,
                    kb,
                    micro,
                    isa.gemm_mr(),
                );
            } else {
                let args = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]];
                kernels::attention(e, args, range, tid, &shape)
            }
        }
        Step::Cls { x, .. } => kernels::cls(e, [a[0], a[1], a[2]], range, w(*x)),
        Step::MeanPool { x, .. } => kernels::mean_pool(e, [a[0], a[1], a[2]], range, w(*x)),
        Step::MaxPool { x, .. } => kernels::max_pool(e, [a[0], a[1], a[2]], range, w(*x)),
        Step::Pool { x, mode, .. } => {
            kernels::pool(e, [a[0], a[1], a[2], a[3], a[4]], range, w(*x), *mode)
        }
        Step::Normalize { x, .. } => kernels::l2_normalize(e, [a[0], a[1]], range, w(*x)),
        Step::Concat { a: x, b: y, .. } => {
            kernels::concat(e, [a[0], a[1], a[2]], range, (w(*x), w(*y)))
        }
        Step::QuantRange { x, .. } => qkernels::quant_range(
            e,
            [a[0], a[1], a[2], a[3]],
            range,
            w(*x),
            p.buffers[*x].rows == Rows::Tokens,
        ),
        Step::Scatter { x } => kernels::scatter(e, [a[0], a[1], a[2], a[3]], range, w(*x)),
        Step::Map {
            inputs,
            seq_inputs,
            rows,
            out,
            expr,
        } => {
            let counts = [inputs.len(), rows.len(), seq_inputs.len()];
            let per_token = p.buffers[*out].rows == Rows::Tokens;
            kernels::map(e, a, range, w(*out), (expr, counts, per_token))
        }
    }
}

//! Attention on the GEMM microkernels (when the ISA registers them and a softmax): per
//! sequence and head, K and V packed into panels once, then tiles of queries: scores by the
//! GEMM tiles, the hand-written softmax, P·V by the GEMM tiles again, normalised at the end.
//! Targets without them run `kernels::attention`, the portable row-by-row kernel.

use cranelift_codegen::ir::{types, InstBuilder, Value};

use crate::emit::{self, Emit};
use crate::gemm::{micro_tile_ld, stack_tile};
use crate::isa;
use crate::kernels;
use crate::linear;
use crate::lower::{Program, Step, PANEL};
use crate::micro::AsmRefs;
use bertc_targets::Caches;

/// The scratch of the GEMM attention, for the widest heads `d` (q/k) and `dv` of the program
/// and its most heads, in floats. First the packed keys and values of every (sequence, head)
/// of a forward, written by the pack phase and read by every thread's query tiles: for a
/// sequence of `len` real tokens, K in 16-key panels (`len` rounded up to 16, times `d + 1`:
/// a zero bias row a panel), then V in 16-column panels (`(len + 1) x dv16`), within
/// `len + 16` slots of `per_slot()` floats; sequence `b` (its first real token `s0`) has
/// `heads` such regions from slot `heads * (s0 + 16 b)`, so that the whole takes
/// `heads * (tokens + 16 batch)` slots, real tokens, not padded ones. Then each thread's own,
/// with `L` the padded length rounded up to 16: the scores of one tile of queries
/// (`ATTN_TILE x L`, of which a block of keys uses `ATTN_TILE x block`) and the tile's
/// online-softmax states (`ATTN_TILE x STATE_FLOATS`), `thread_per_l() * L + thread_fixed()`.
pub(crate) struct AttnScratch {
    d: usize,
    dv16: usize,
    heads: usize,
}

impl AttnScratch {
    pub(crate) fn new((d, dv): (usize, usize), heads: usize) -> Self {
        AttnScratch {
            d,
            dv16: dv.div_ceil(PANEL) * PANEL,
            heads,
        }
    }

    /// The most heads of an attention step: the pack region holds this many a sequence.
    pub(crate) fn heads(&self) -> usize {
        self.heads
    }

    /// Floats of a slot of the pack region (a key's K column and V row).
    pub(crate) fn per_slot(&self) -> usize {
        self.d + 1 + self.dv16
    }

    pub(crate) fn thread_per_l(&self) -> usize {
        ATTN_TILE
    }

    pub(crate) fn thread_fixed(&self) -> usize {
        STATE_FLOATS * ATTN_TILE
    }

    /// Keys per block of the online softmax for `caches`: as many 16-key panels as let a
    /// block's scores for a tile of queries and its K and V panels fill half of L2.
    pub(crate) fn key_block(&self, caches: &Caches) -> usize {
        let per_key = (self.thread_per_l() + self.per_slot()) * 4;
        (caches.l2 / 2 / per_key / PANEL * PANEL).max(PANEL)
    }

    /// The keys per block when sequences of up to `max_seq` tokens may need more than one
    /// (`None`: every sequence's scores fit one block, and the softmax is one pass over them).
    pub(crate) fn key_blocks(&self, caches: &Caches, max_seq: usize) -> Option<usize> {
        let kb = self.key_block(caches);
        (max_seq.div_ceil(PANEL) * PANEL > kb).then_some(kb)
    }

    /// The C expression of the scratch's floats for a forward of `batch` sequences of `seq`
    /// tokens, `tokens` of them real, on `threads` threads (the glue's `scratch_floats`).
    pub(crate) fn floats_c(&self) -> String {
        let l = format!("(((size_t)seq + {}) / {PANEL} * {PANEL})", PANEL - 1);
        format!(
            "(size_t){} * ((size_t)tokens + {PANEL} * (size_t)batch) * {} + (size_t)threads * ({l} * {} + {})",
            self.heads,
            self.per_slot(),
            self.thread_per_l(),
            self.thread_fixed()
        )
    }
}

/// The keys per block of program `p`'s GEMM attention on `isa` (`None`: one block, or the
/// portable kernel), from the scratch of its widest heads: what its code, its kernel set and
/// its lowered text all follow.
pub(crate) fn program_key_blocks(p: &Program, isa: &isa::Isa) -> Option<usize> {
    if !isa.gemm_attention() {
        return None;
    }
    program_scratch(p)?.key_blocks(&isa.caches, p.max_seq)
}

/// The GEMM attention's scratch layout for program `p` (`None` without attention).
pub(crate) fn program_scratch(p: &Program) -> Option<AttnScratch> {
    let dims = crate::attn_dims(p)?;
    let heads = p
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Attention { heads, .. } => Some(*heads),
            _ => None,
        })
        .max()?;
    Some(AttnScratch::new(dims, heads))
}

/// Whether attention step `step` runs on the GEMM microkernels on `isa` (else the portable
/// kernel: on ISAs without them, and for an attention with quantization points).
pub(crate) fn on_gemm(step: &Step, isa: &isa::Isa) -> bool {
    let quantized = matches!(step, Step::Attention { quant, .. } if !quant.is_none());
    isa.gemm_attention() && !quantized
}

/// Whether program `p` has an attention step that runs the portable kernel on `isa`.
fn any_portable(p: &Program, isa: &isa::Isa) -> bool {
    p.steps
        .iter()
        .any(|s| matches!(s, Step::Attention { .. }) && !on_gemm(s, isa))
}

/// The C expression (of `tokens`, `batch`, `seq` and `threads`) of the floats of attention scratch of
/// program `p` on `isa`: the GEMM attention's (`AttnScratch`), the portable kernel's (a score
/// row and the keys transposed a thread), or the larger of the two when the program has both.
pub(crate) fn scratch_floats_c(p: &Program, isa: &isa::Isa) -> String {
    let Some(sc) = program_scratch(p) else {
        return "0".to_string();
    };
    let portable = format!(
        "(size_t)threads * ((((size_t)seq + {}) / {PANEL} * {PANEL}) * {})",
        PANEL - 1,
        sc.d + 1
    );
    match (isa.gemm_attention(), any_portable(p, isa)) {
        (false, _) => portable,
        (true, false) => sc.floats_c(),
        (true, true) => {
            let g = sc.floats_c();
            format!("(({g}) > ({portable}) ? ({g}) : ({portable}))")
        }
    }
}

/// The parallel calls of attention step `step` (of `heads` heads) in the forward, as
/// (arguments, task count): for the GEMM attention phase 0 (a task per sequence and head)
/// then the phase of the query tiles (a task per tile of the longest sequence, for each
/// sequence and head), with the pack region at `scratch` and the threads'
/// scratch after it; for the portable kernel one call, a task per sequence and head, with the
/// threads' scratch at `scratch`. `qkvo` are the first q, k, v and output columns; `longest`
/// the forward's longest sequence, computed by the first GEMM attention step that needs it.
pub(crate) fn forward_calls(
    e: &mut Emit,
    (p, isa, step, heads): (&Program, &isa::Isa, &Step, usize),
    qkvo: [Value; 4],
    [seq_start, scratch, batch, seq, tokens]: [Value; 5],
    longest: &mut Option<Value>,
) -> Vec<(Vec<Value>, Value)> {
    let sc = program_scratch(p).expect("an attention step");
    let t = e.b.ins().imul_imm_s(batch, heads as i64);
    let l = e.b.ins().iadd_imm_s(seq, PANEL as i64 - 1);
    let l = e.b.ins().band_imm_s(l, -(PANEL as i64));
    let args = |threads_at: Value, stride: Value, phase: Value| {
        let mut a = qkvo.to_vec();
        a.extend([seq_start, threads_at, seq, stride, scratch, phase]);
        a
    };
    let zero = e.i(0);
    if !on_gemm(step, isa) {
        let stride = e.b.ins().imul_imm_s(l, (sc.d as i64 + 1) * 4);
        return vec![(args(scratch, stride, zero), t)];
    }
    let slots = e.b.ins().imul_imm_s(batch, PANEL as i64);
    let slots = e.b.ins().iadd(slots, tokens);
    let slots = e.b.ins().imul_imm_s(slots, sc.heads() as i64);
    let threads_at = e.addr(scratch, slots, sc.per_slot() as i64 * 4);
    let f = e.b.ins().imul_imm_s(l, sc.thread_per_l() as i64);
    let f = e.b.ins().iadd_imm_s(f, sc.thread_fixed() as i64);
    let stride = e.b.ins().imul_imm_s(f, 4);
    // the query tiles of the longest sequence (not of the padded length: a batch padded far
    // beyond its sequences would be mostly empty tasks)
    let most = *longest.get_or_insert_with(|| longest_sequence(e, seq_start, batch));
    let qt = e.b.ins().iadd_imm_s(most, ATTN_TILE as i64 - 1);
    let qt = e.b.ins().udiv_imm_u(qt, ATTN_TILE as i64);
    let tiles = e.b.ins().imul(t, qt);
    vec![
        (args(threads_at, stride, zero), t),
        (args(threads_at, stride, qt), tiles),
    ]
}

/// The real tokens of the longest of the forward's `batch` sequences (from `seq_start`).
fn longest_sequence(e: &mut Emit, seq_start: Value, batch: Value) -> Value {
    let z = e.i(0);
    let longest = e.var(types::I64, z);
    e.for_range(z, batch, 1, |e, b| {
        let sa = e.addr(seq_start, b, 4);
        let s0 = e.load_i32(sa, 0);
        let s1 = e.load_i32(sa, 4);
        let len = e.b.ins().isub(s1, s0);
        let cur = e.b.use_var(longest);
        let most = e.b.ins().smax(cur, len);
        e.b.def_var(longest, most);
    });
    e.b.use_var(longest)
}

/// Floats of a query row's online-softmax state: its running maximum, sum and the last
/// block's rescaling factor alpha, and a pad.
pub const STATE_FLOATS: usize = 4;

/// Queries per attention tile: the scores of one tile (`ATTN_TILE x L` floats, 24 KiB at
/// L = 128, 96 KiB at 512) stay in L2 while K and V are swept once each per tile.
pub const ATTN_TILE: usize = 48;

/// Attention as two GEMMs per query tile on the microkernels, in two phases (two parallel
/// steps over the same function). Phase 0 (`phase` 0), a task per (sequence, head): K of the
/// head packed transposed into 16-key panels and V into 16-column panels, in the shared pack
/// region (`AttnScratch`). Phase 1 (`phase` the query tiles of the longest sequence, at
/// least 1), a task per (sequence, head, tile of `ATTN_TILE` queries), numbered so that one
/// head's tiles are consecutive (a tile past its sequence's end does nothing): for each block of keys the
/// scores `Q Kᵀ` against the block's key panels, the hand-written online softmax of the
/// tile's rows (scaled), and `P V` into the output (a later block's added to the earlier ones'
/// rescaled by alpha), scaled by 1/l at the end. A query tile is the unit of work, not a
/// head: a single sequence has as many tasks as tiles, which the threads share evenly. With
/// `key_block` `None` a sequence's keys are one block (its scores for a tile fit L2);
/// otherwise blocks of that many keys, so that a block's scores and K and V panels stay in L2
/// however long the sequence (flash attention's schedule). Each thread has its own scores and
/// states (`tid` selects them, `stride` bytes each). The tiles are `mr` rows high (the f32
/// family's), and two panels wide where the family has such tiles and two full panels are
/// left (pairs of key panels for the scores, of V's column panels for `P V`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_gemm(
    e: &mut Emit,
    [q, k, v, out, seq_start, scratch, seq, stride, pack, phase]: [Value; 10],
    [begin, end]: [Value; 2],
    tid: Value,
    a: &kernels::AttnShape,
    layout: &AttnScratch,
    key_block: Option<usize>,
    micro: &AsmRefs,
    mr: usize,
) {
    use cranelift_codegen::ir::condcodes::IntCC;
    let lp = e.b.ins().iadd_imm_s(seq, PANEL as i64 - 1);
    let lp = e.b.ins().band_imm_s(lp, -(PANEL as i64));
    // the packed K and V of (sequence, head) `bh` (`AttnScratch`): its K panels from slot
    // `heads (s0 + 16 b) + h (len + 16)`, its V panels after them
    let slot_bytes = (layout.per_slot() * 4) as i64;
    let heads = a.heads;
    let packed = move |e: &mut Emit, bh: Value, [h, s0, s1]: [Value; 3]| {
        let b = e.b.ins().udiv_imm_u(bh, heads as i64);
        let first = e.b.ins().imul_imm_s(b, PANEL as i64);
        let first = e.b.ins().iadd(first, s0);
        let first = e.b.ins().imul_imm_s(first, heads as i64);
        let len = e.b.ins().isub(s1, s0);
        let span = e.b.ins().iadd_imm_s(len, PANEL as i64);
        let within = e.b.ins().imul(h, span);
        let slot = e.b.ins().iadd(first, within);
        let kp = e.addr(pack, slot, slot_bytes);
        let len16 = e.b.ins().iadd_imm_s(len, PANEL as i64 - 1);
        let len16 = e.b.ins().band_imm_s(len16, -(PANEL as i64));
        let vp = e.addr(kp, len16, (layout.d as i64 + 1) * 4);
        (kp, vp)
    };
    let is_pack = e.b.ins().icmp_imm_s(IntCC::Equal, phase, 0);
    e.if_else(
        is_pack,
        |e| {
            e.for_range(begin, end, 1, |e, task| {
                let (h, s0, s1) = kernels::attention_task(e, task, seq_start, a.heads);
                let (kp, vp) = packed(e, task, [h, s0, s1]);
                pack_kv(e, [k, v], [h, s0, s1], [kp, vp], a);
            })
        },
        |e| {
            // phase 1's argument is the query tiles a (sequence, head)
            let qtiles = phase;
            let base = e.b.ins().imul(tid, stride);
            let sbuf = e.b.ins().iadd(scratch, base);
            let ll = e.b.ins().imul_imm_s(lp, ATTN_TILE as i64);
            let state = e.addr(sbuf, ll, 4);
            let tiles = Tiles {
                key_block,
                micro,
                mr,
                lp,
            };
            e.for_range(begin, end, 1, |e, task| {
                let bh = e.b.ins().udiv(task, qtiles);
                let first = e.b.ins().imul(bh, qtiles);
                let qt = e.b.ins().isub(task, first);
                let (h, s0, s1) = kernels::attention_task(e, bh, seq_start, a.heads);
                let (kp, vp) = packed(e, bh, [h, s0, s1]);
                attend_tile(
                    e,
                    [q, out],
                    [h, s0, s1, qt],
                    [kp, vp, sbuf, state],
                    a,
                    &tiles,
                );
            })
        },
    );
}

/// Phase 0 of `attention_gemm` for one (sequence, head): head `h` of keys `k` and values `v`
/// for the packed tokens `s0..s1`, into K panels at `kp` and V panels at `vp`.
fn pack_kv(
    e: &mut Emit,
    [k, v]: [Value; 2],
    [h, s0, s1]: [Value; 3],
    [kp, vp]: [Value; 2],
    a: &kernels::AttnShape,
) {
    let (d, dv) = (a.dq, a.dv);
    let panel_k = (PANEL * (d + 1) * 4) as i64;
    let vpanels = dv.div_ceil(PANEL);
    let len = e.b.ins().isub(s1, s0);
    let len16 = e.b.ins().iadd_imm_s(len, PANEL as i64 - 1);
    let kpanels = e.b.ins().udiv_imm_u(len16, PANEL as i64);
    // pack Kᵀ: panel p holds keys 16p..16p+15: [16 zeros][d rows of 16]; only what the
    // keys do not overwrite is zeroed: each panel's bias row, and the last panel (its keys
    // past the sequence)
    let z = e.i(0);
    let row_bytes = e.i((PANEL * 4) as i64);
    e.for_range(z, kpanels, 1, |e, p| {
        let at = e.addr(kp, p, panel_k);
        e.zero_bytes(at, row_bytes);
    });
    let last = e.b.ins().iadd_imm_s(kpanels, -1);
    let last = e.addr(kp, last, panel_k);
    let whole = e.i(panel_k);
    e.zero_bytes(last, whole);
    // key j's row of the head, and where its column of the panel starts
    let key = |e: &mut Emit, j: Value| {
        let src = e.b.ins().iadd(s0, j);
        let krow = e.addr(k, src, a.ldk as i64 * 4);
        let krow = e.addr(krow, h, d as i64 * 4);
        let p = e.b.ins().ushr_imm_u(j, 4);
        let jj = e.b.ins().band_imm_s(j, 15);
        let dst = e.addr(kp, p, panel_k);
        (krow, e.addr(dst, jj, 4))
    };
    let scalar = |e: &mut Emit, krow: Value, dst: Value, dims: std::ops::Range<usize>| {
        for c in dims {
            let x =
                e.b.ins()
                    .load(types::F32, emit::mem(), krow, (c * 4) as i32);
            e.b.ins()
                .store(emit::mem(), x, dst, ((PANEL + c * PANEL) * 4) as i32);
        }
    };
    // four keys at a time (in one panel: 16 is a multiple of 4) in 4 x 4 transposes of
    // vectors, then the keys and dimensions left one float at a time
    let z = e.i(0);
    let quads = if e.lanes == 4 { d / 4 * 4 } else { 0 };
    let len4 = if quads > 0 {
        e.b.ins().band_imm_s(len, -4)
    } else {
        e.i(0)
    };
    e.for_range(z, len4, 4, |e, j| {
        let (krow, dst) = key(e, j);
        let rows: Vec<Value> = (0..4)
            .map(|i| e.b.ins().iadd_imm_s(krow, i * a.ldk as i64 * 4))
            .collect();
        for c in (0..quads).step_by(4) {
            let v = [0, 1, 2, 3].map(|i| e.load(emit::Shape::Vector, rows[i], (c * 4) as i32));
            for (t, col) in e.transpose4(v).into_iter().enumerate() {
                e.store(col, dst, ((PANEL + (c + t) * PANEL) * 4) as i32);
            }
        }
        for (i, &row) in rows.iter().enumerate() {
            let di = e.b.ins().iadd_imm_s(dst, i as i64 * 4);
            scalar(e, row, di, quads..d);
        }
    });
    e.for_range(len4, len, 1, |e, j| {
        let (krow, dst) = key(e, j);
        scalar(e, krow, dst, 0..d);
    });
    // pack V: panel p holds value columns 16p..: [16 zeros][len rows of 16] (`P V` reads
    // the sequence's rows only); only what the rows do not overwrite is zeroed: each
    // panel's bias row and, when the head's width is not a multiple of 16, the last panel
    let len1 = e.b.ins().iadd_imm_s(len, 1);
    let vpanel_bytes = e.b.ins().imul_imm_s(len1, (PANEL * 4) as i64);
    for p in 0..vpanels {
        let at = e.b.ins().imul_imm_s(vpanel_bytes, p as i64);
        let at = e.b.ins().iadd(vp, at);
        let bytes = if p + 1 == vpanels && dv % PANEL != 0 {
            vpanel_bytes
        } else {
            row_bytes
        };
        e.zero_bytes(at, bytes);
    }
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
                    let x =
                        e.b.ins()
                            .load(types::F32, emit::mem(), vrow, ((p * PANEL + c) * 4) as i32);
                    e.b.ins().store(emit::mem(), x, dst, (c * 4) as i32);
                    c += 1;
                }
            }
        }
    });
}

/// What phase 1 of `attention_gemm` shares across its tiles.
struct Tiles<'a> {
    key_block: Option<usize>,
    micro: &'a AsmRefs,
    mr: usize,
    /// the sequence length rounded up to 16
    lp: Value,
}

/// Phase 1 of `attention_gemm` for one tile: queries `ATTN_TILE qt..` of head `h` of the
/// sequence of packed tokens `s0..s1`, against its K panels at `kp` and V panels at `vp`,
/// with the thread's scores at `sbuf` and softmax states at `state`.
fn attend_tile(
    e: &mut Emit,
    [q, out]: [Value; 2],
    [h, s0, s1, qt]: [Value; 4],
    [kp, vp, sbuf, state]: [Value; 4],
    a: &kernels::AttnShape,
    t: &Tiles,
) {
    use cranelift_codegen::ir::condcodes::IntCC;
    let (d, dv) = (a.dq, a.dv);
    let Tiles {
        key_block,
        micro,
        mr,
        lp,
    } = *t;
    // keys per block (a runtime value: the whole padded sequence without blocking), and the
    // scores' row stride
    let kbv = match key_block {
        Some(kb) => {
            let kb = e.i(kb as i64);
            e.b.ins().smin(lp, kb)
        }
        None => lp,
    };
    let ld_s = e.b.ins().imul_imm_s(kbv, 4);
    let lda_q = e.i(a.ldq as i64 * 4);
    let ldc_o = e.i(a.ldo as i64 * 4);
    let dk = e.i(d as i64);
    let panel_k = (PANEL * (d + 1) * 4) as i64;
    let vpanels = dv.div_ceil(PANEL);
    let st = stack_tile(e);
    let wide = !micro.wide_start.plain.is_empty();
    let len = e.b.ins().isub(s1, s0);
    let len1 = e.b.ins().iadd_imm_s(len, 1);
    let vpanel_bytes = e.b.ins().imul_imm_s(len1, (PANEL * 4) as i64);
    // the tile's queries (none when the tile starts past the sequence), per block of
    // keys: scores against the block's key panels (mr queries at a time), the online
    // softmax of the tile's rows, then P V into the output (the first block's from V's
    // zero bias row, a later block's added to the output rescaled by alpha); 1 / l at the
    // end
    let t0 = e.b.ins().imul_imm_s(qt, ATTN_TILE as i64);
    let some = e.b.ins().icmp(IntCC::SignedLessThan, t0, len);
    e.if_nonzero(some, |e| {
        let tleft = e.b.ins().isub(len, t0);
        let tmax = e.i(ATTN_TILE as i64);
        let tlen = e.b.ins().smin(tleft, tmax);
        // the blocks of keys (here len >= 1, so the padded length and kbv >= 16)
        let kblocks = match key_block {
            Some(_) => {
                let n = e.b.ins().iadd(len, kbv);
                let n = e.b.ins().iadd_imm_s(n, -1);
                e.b.ins().udiv(n, kbv)
            }
            None => e.i(1),
        };
        let blocks = linear::RowBlocks::new(e, tlen, mr);
        let rows6 = blocks.count;
        // the blocks of up to mr rows of the tile: (rows, first query, its score row, its
        // first row in the tile)
        let block = |e: &mut Emit, rb: Value| {
            let (i0, m) = blocks.block(e, rb);
            let qi = e.b.ins().iadd(s0, t0);
            let qi = e.b.ins().iadd(qi, i0);
            let srow = e.b.ins().imul(i0, ld_s);
            let srow = e.b.ins().iadd(sbuf, srow);
            (m, qi, srow, i0)
        };
        // each row's running maximum and sum start at f32::MIN and 0
        let z = e.i(0);
        e.for_range(z, tlen, 1, |e, i| {
            let sa = e.addr(state, i, STATE_FLOATS as i64 * 4);
            let lowest = e.b.ins().f32const(f32::MIN);
            let zero = e.b.ins().f32const(0.0);
            e.b.ins().store(emit::mem(), lowest, sa, 0);
            e.b.ins().store(emit::mem(), zero, sa, 4);
        });
        let z = e.i(0);
        e.for_range(z, kblocks, 1, |e, kb| {
            let k0 = e.b.ins().imul(kb, kbv);
            let kleft = e.b.ins().isub(len, k0);
            let klen = e.b.ins().smin(kleft, kbv);
            let kl16 = e.b.ins().iadd_imm_s(klen, PANEL as i64 - 1);
            let npanels = e.b.ins().udiv_imm_u(kl16, PANEL as i64);
            let p0 = e.b.ins().udiv_imm_u(k0, PANEL as i64);
            let z = e.i(0);
            e.for_range(z, rows6, 1, |e, rb| {
                let (m, qi, srow, _) = block(e, rb);
                let qa = e.addr(q, qi, a.ldq as i64 * 4);
                let qa = e.addr(qa, h, d as i64 * 4);
                // the scores against key panel p, and p + 1 with two-panel tiles
                let scores = |e: &mut Emit, p: Value, two: bool| {
                    let kpanel = e.b.ins().iadd(p0, p);
                    let bp = e.addr(kp, kpanel, panel_k);
                    let c = e.addr(srow, p, (PANEL * 4) as i64);
                    let mut args = vec![qa, lda_q, bp, c, ld_s, dk];
                    let set = if two {
                        args.push(e.i(panel_k));
                        &micro.wide_start
                    } else {
                        &micro.start
                    };
                    e.dispatch_rows(m, mr, |e, mm| {
                        e.b.ins().call(set.plain[mm - 1], &args);
                    });
                };
                let z = e.i(0);
                if wide {
                    e.for_range(z, npanels, 2, |e, p| {
                        let q = e.b.ins().iadd_imm_s(p, 1);
                        let pair = e.b.ins().icmp(IntCC::SignedLessThan, q, npanels);
                        e.if_else(pair, |e| scores(e, p, true), |e| scores(e, p, false));
                    });
                } else {
                    e.for_range(z, npanels, 1, |e, p| scores(e, p, false));
                }
            });
            // the online softmax over each row's klen scores of the block (scaled)
            let sm = micro
                .softmax
                .expect("attention kernels declare the softmax");
            e.b.ins().call(sm, &[sbuf, ld_s, tlen, klen, state]);
            let first = e.b.ins().icmp_imm_s(IntCC::Equal, kb, 0);
            let z = e.i(0);
            e.for_range(z, rows6, 1, |e, rb| {
                let (m, qi, srow, i0) = block(e, rb);
                let orow = e.addr(out, qi, a.ldo as i64 * 4);
                let orow = e.addr(orow, h, dv as i64 * 4);
                // P V of the block: the first from the bias row, a later one added to
                // the output so far, which is first rescaled by alpha
                let pv = |e: &mut Emit, accumulate: bool| {
                    let mut p = 0;
                    while p < vpanels {
                        let bp = e.b.ins().imul_imm_s(vpanel_bytes, p as i64);
                        let bp = e.b.ins().iadd(vp, bp);
                        let bp = if accumulate {
                            let skip = e.b.ins().iadd_imm_s(k0, 1);
                            e.addr(bp, skip, (PANEL * 4) as i64)
                        } else {
                            bp
                        };
                        let c = e.b.ins().iadd_imm_s(orow, (p * PANEL * 4) as i64);
                        if wide && dv >= (p + 2) * PANEL {
                            // two full panels of V's columns
                            let set = if accumulate {
                                &micro.wide_acc
                            } else {
                                &micro.wide_start
                            };
                            let args = [srow, ld_s, bp, c, ldc_o, klen, vpanel_bytes];
                            e.dispatch_rows(m, mr, |e, mm| {
                                e.b.ins().call(set.plain[mm - 1], &args);
                            });
                            p += 2;
                            continue;
                        }
                        let cols = (dv - p * PANEL).min(PANEL);
                        let set = if accumulate { &micro.acc } else { &micro.start };
                        e.dispatch_rows(m, mr, |e, mm| {
                            let t = linear::Tile {
                                a: srow,
                                c,
                                bp,
                                m: mm,
                                ncols: cols,
                                res: None,
                                prefetch: None,
                                // the depth (the block's keys) is passed at run time
                                block: linear::KBlock {
                                    steps: 0,
                                    accumulate,
                                    last: true,
                                },
                            };
                            micro_tile_ld(e, &t, ld_s, klen, ldc_o, set, st);
                        });
                        p += 1;
                    }
                };
                if key_block.is_some() {
                    e.if_else(
                        first,
                        |e| pv(e, false),
                        |e| {
                            scale_rows(e, [orow, state], [i0, m], (a.ldo, dv), Factor::Alpha);
                            pv(e, true)
                        },
                    );
                } else {
                    pv(e, false);
                }
            });
        });
        // the softmax's normalisation 1 / l, on dv outputs instead of len probabilities
        let z = e.i(0);
        e.for_range(z, rows6, 1, |e, rb| {
            let (m, qi, _, i0) = block(e, rb);
            let orow = e.addr(out, qi, a.ldo as i64 * 4);
            let orow = e.addr(orow, h, dv as i64 * 4);
            scale_rows(e, [orow, state], [i0, m], (a.ldo, dv), Factor::InverseSum);
        });
    });
}

/// What `scale_rows` multiplies a row by: its softmax state's alpha (before a later block's
/// `P V` is added), or 1 / its sum (at the end).
#[derive(Clone, Copy)]
enum Factor {
    Alpha,
    InverseSum,
}

/// Multiplies each of the `m` output rows from `orow` (stride `ldo` floats, `dv` of them) by
/// `factor` of its tile row's softmax state (tile row `i0 + i`).
fn scale_rows(
    e: &mut Emit,
    [orow, state]: [Value; 2],
    [i0, m]: [Value; 2],
    (ldo, dv): (usize, usize),
    factor: Factor,
) {
    let z = e.i(0);
    e.for_range(z, m, 1, |e, i| {
        let ti = e.b.ins().iadd(i0, i);
        let sa = e.addr(state, ti, STATE_FLOATS as i64 * 4);
        let s = match factor {
            Factor::Alpha => e.b.ins().load(types::F32, emit::mem(), sa, 8),
            Factor::InverseSum => {
                let l = e.b.ins().load(types::F32, emit::mem(), sa, 4);
                let one = e.b.ins().f32const(1.0);
                e.b.ins().fdiv(one, l)
            }
        };
        let o = e.addr(orow, i, ldo as i64 * 4);
        e.row(dv, |e, off, sh| {
            let pa = e.b.ins().iadd(o, off);
            let x = e.load(sh, pa, 0);
            let sv = e.splat(sh, s);
            let y = e.b.ins().fmul(x, sv);
            e.store(y, pa, 0);
        });
    });
}

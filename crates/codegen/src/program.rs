//! The lowered program: steps over activation buffers of token or sequence rows (f32, or rows
//! quantized for int8 linears), typed weights in the layouts the kernels read (and the
//! packings that make them), and what code generation asks of it (attention geometry, flops).

use bertc_ir::{AttnQuant, BinaryOp, DType, GeluApprox, Positions, Qdq, TokenTypes, UnaryOp};

/// What the rows of a buffer are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// One row per token: `batch * seq` rows.
    Tokens,
    /// One row per sequence: `batch` rows.
    Seqs,
}

/// What a buffer's rows hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    /// `width` f32 values.
    F32,
    /// A row of `k` values quantized for an int8 linear (`Step::Quantize`) in `format`;
    /// `width` is `quant_row_floats(k, format)`.
    Quantized {
        k: usize,
        abits: u8,
        format: QFormat,
    },
}

/// How a step quantizes rows for an int8 linear: to `abits` bits in rows of `format`, each
/// row first multiplied per channel by the weight `smooth` (f32 `[k]`) when there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuantRows {
    pub abits: u8,
    pub format: QFormat,
    pub smooth: Option<WeightId>,
}

/// The deepest linear whose `Quads` sums fit an i32: `255 · 127 · k <= i32::MAX`.
pub const QUADS_MAX_K: usize = (i32::MAX as usize) / (255 * 127);

/// How an int8 linear groups k, in its quantized rows and in its weight panels: what the
/// ISA's int8 microkernels read (`Isa::int8_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QFormat {
    /// k in pairs: a row's integers as i16 (`k` rounded up to even, a zero pad), then its f32
    /// scale; a panel's weights as signed bytes, two a column (`vpmaddwd`, the portable tile).
    Pairs,
    /// k in fours: a row's integers as i8 (`k` rounded up to a multiple of 4, a zero pad),
    /// then `-128 · Σ xq` as i32, then its f32 scale; a panel's weights as unsigned bytes
    /// `w + 128`, four a column (`vpdpbusd`: `Σ (w + 128) xq - 128 Σ xq = Σ w xq`).
    Quads,
    /// k in eights: a row as in `Quads` but `k` rounded up to a multiple of 8 (the sum term
    /// is written, not read); a panel's weights as signed bytes, eight a column, so that 16
    /// bytes hold two adjacent columns' eight values (Arm's `smmla`: a 2 x 8 by 8 x 2 signed
    /// matrix product into a 2 x 2 block of i32).
    Octs,
}

impl QFormat {
    /// The format of a linear of depth `k` whose activations have `abits` bits, on an ISA
    /// whose rows of 8-bit activations are in `narrow`: fours hold bytes only, and their
    /// unsigned sums `Σ (w + 128) xq` (up to `255 · 127` a product) must fit an i32.
    pub fn for_bits(narrow: QFormat, abits: u8, k: usize) -> QFormat {
        if abits <= 8 && k <= QUADS_MAX_K {
            narrow
        } else {
            QFormat::Pairs
        }
    }

    /// Values of k one step of the microkernels reads.
    pub fn group(self) -> usize {
        match self {
            QFormat::Pairs => 2,
            QFormat::Quads => 4,
            QFormat::Octs => 8,
        }
    }

    /// Bytes of one quantized value in a row.
    pub fn value_bytes(self) -> usize {
        match self {
            QFormat::Pairs => 2,
            QFormat::Quads | QFormat::Octs => 1,
        }
    }

    /// Whether a row holds the term `-128 · Σ xq` after its values (the rows of bytes).
    pub fn has_sum_term(self) -> bool {
        self.value_bytes() == 1
    }

    /// Byte offset of a row's f32 scale (after its values and the sum term, if it has one).
    pub fn scale_offset(self, k: usize) -> usize {
        let values = k.next_multiple_of(self.group()) * self.value_bytes();
        values + 4 * usize::from(self.has_sum_term())
    }
}

/// An activation buffer: `rows x width` f32 (or a quantized row's bytes in `width` floats).
#[derive(Clone, Debug)]
pub struct Buffer {
    pub rows: Rows,
    pub width: usize,
    pub elem: Elem,
    /// Offset in the workspace, in floats per token (the workspace holds `tokens` of each).
    pub offset: usize,
}

/// Floats a quantized row of `k` values takes in `format` (its values, the sum term of
/// `Quads`, the scale), rounded up to 16 floats so that rows (and the buffers after them) stay
/// 64-byte aligned.
pub fn quant_row_floats(k: usize, format: QFormat) -> usize {
    (format.scale_offset(k) / 4 + 1).next_multiple_of(16)
}

/// One quantized row's bytes (`quant_row_floats(k, format) * 4` of them) for the integers
/// `xq` (each within i8) and the row's scale, as the quantizers write it: for tests and
/// benchmarks that feed the int8 kernels directly.
pub fn quantized_row(xq: &[i32], scale: f32, format: QFormat) -> Vec<u8> {
    let k = xq.len();
    let mut row = vec![0u8; quant_row_floats(k, format) * 4];
    for (i, &v) in xq.iter().enumerate() {
        match format {
            QFormat::Pairs => row[2 * i..2 * i + 2].copy_from_slice(&(v as i16).to_le_bytes()),
            QFormat::Quads | QFormat::Octs => row[i] = v as i8 as u8,
        }
    }
    let at = format.scale_offset(k);
    if format.has_sum_term() {
        let sum: i32 = xq.iter().sum();
        row[at - 4..at].copy_from_slice(&(-128 * sum).to_le_bytes());
    }
    row[at..at + 4].copy_from_slice(&scale.to_le_bytes());
    row
}

pub type BufId = usize;
pub type WeightId = usize;

/// How a weight's elements are arranged for the kernels that read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// The tensor as it is, row-major (embedding tables, LayerNorm parameters).
    Dense,
    /// A linear's `[n, k]` weights and its bias in panels of `PANEL` columns (`pack_linear`),
    /// read by the GEMM kernels.
    Panels { n: usize, k: usize },
    /// An int8 linear's `[n, k]` weights with their per-column scales and the bias, in panels
    /// of `PANEL` columns with k grouped as `format` says (`pack_qlinear`), read by the int8
    /// GEMM kernels.
    QPanels { n: usize, k: usize, format: QFormat },
}

/// The weights a linear step multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearWeights {
    /// f32 panels over f32 rows.
    F32,
    /// int8 panels over quantized rows, k grouped as the format says.
    Int8(QFormat),
}

impl LinearWeights {
    pub fn dtype(self) -> DType {
        match self {
            LinearWeights::F32 => DType::F32,
            LinearWeights::Int8(_) => DType::I8,
        }
    }

    pub fn layout(self) -> LayoutKind {
        match self {
            LinearWeights::F32 => LayoutKind::Panels,
            LinearWeights::Int8(f) => LayoutKind::QPanels(f),
        }
    }
}

/// A layout without its dimensions: what kernels are registered for (`isa::GemmKernels`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutKind {
    Dense,
    Panels,
    QPanels(QFormat),
}

impl WeightLayout {
    pub fn kind(&self) -> LayoutKind {
        match self {
            WeightLayout::Dense => LayoutKind::Dense,
            WeightLayout::Panels { .. } => LayoutKind::Panels,
            WeightLayout::QPanels { format, .. } => LayoutKind::QPanels(*format),
        }
    }
}

/// A weight in the artifact's data: its element type, layout and little-endian bytes.
#[derive(Clone, Debug)]
pub struct Weight {
    pub name: String,
    pub dtype: DType,
    pub layout: WeightLayout,
    pub bytes: Vec<u8>,
}

impl Weight {
    /// An f32 weight.
    pub fn f32(name: String, layout: WeightLayout, data: &[f32]) -> Weight {
        Weight {
            name,
            dtype: DType::F32,
            layout,
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// Its number of elements.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Elementwise functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Act {
    Gelu(GeluApprox),
    Tanh,
    Relu,
}

#[derive(Clone, Debug)]
pub enum Step {
    /// The word table in f32, or in int8 rows times `word_scale` (`dequantize_rows`).
    Embedding {
        out: BufId,
        word: WeightId,
        word_scale: Option<WeightId>,
        pos: WeightId,
        typ: Option<WeightId>,
        positions: Positions,
        types: TokenTypes,
        width: usize,
        /// `Op::Embedding`'s quantization point of the word and type rows' sum.
        sum_qdq: Option<Qdq>,
    },
    /// With `quantized`, each normalised row is also quantized (as `Quantize` does, to those
    /// bits) into that buffer while it is in cache, for the int8 linears that read it.
    LayerNorm {
        x: BufId,
        out: BufId,
        gamma: WeightId,
        beta: WeightId,
        eps: f32,
        quantized: Option<(BufId, QuantRows)>,
    },
    /// `out = act(x @ wᵀ + b) (+ residual)`, the activation and the residual applied to each
    /// tile in cache. With `weights` f32: `x` f32 rows, the weight packed in panels of 16
    /// columns (`[bias 16][k x 16]`, `pack_linear`); int8: `x` a quantized buffer and the
    /// weights, scales and bias in `QPanels` (`pack_qlinear`), `act(fma(x · wq, s_x · w_scale,
    /// b))` with the products summed exactly in i32, as `Op::QLinear` defines it.
    Linear {
        x: BufId,
        out: BufId,
        packed: WeightId,
        k: usize,
        n: usize,
        act: Option<Act>,
        residual: Option<BufId>,
        weights: LinearWeights,
    },
    /// Each row of `x` (`k` f32) quantized for an int8 linear as `Op::QLinear` defines it
    /// (`rows`: bits, format, smoothing), into `out` (`Elem::Quantized`).
    Quantize {
        x: BufId,
        out: BufId,
        k: usize,
        rows: QuantRows,
    },
    Act {
        x: BufId,
        out: BufId,
        act: Act,
    },
    /// `q`, `k` and `v` are one buffer when `qk` is set: its columns `0..qk` are q, `qk..2qk`
    /// are k and the rest v (`qkv_attention`).
    Attention {
        q: BufId,
        k: BufId,
        v: BufId,
        out: BufId,
        heads: usize,
        scale: f32,
        qk: Option<usize>,
        /// Static quantization points (`Op::Attention`'s): such an attention runs the
        /// portable kernel, which has them.
        quant: AttnQuant,
    },
    /// `out = expr(inputs)` elementwise over rows of `width` floats: the graph's elementwise
    /// ops (a static QDQ file's bias adds, decomposed GELU, residual adds, quantization
    /// points) fused into one pass, each op one f32 operation as the interpreter does it.
    /// The inputs have `out`'s rows and width; `seq_inputs` one float a sequence, broadcast
    /// over its rows; `rows` are constant vectors of `width` floats broadcast over the rows
    /// (biases).
    Map {
        inputs: Vec<BufId>,
        seq_inputs: Vec<BufId>,
        rows: Vec<WeightId>,
        out: BufId,
        expr: Vec<MapOp>,
    },
    /// The first token's row of each sequence.
    Cls {
        x: BufId,
        out: BufId,
    },
    MeanPool {
        x: BufId,
        out: BufId,
    },
    /// The elementwise maximum of each sequence's rows.
    MaxPool {
        x: BufId,
        out: BufId,
    },
    /// One of sentence-transformers' other poolings of each sequence's rows.
    Pool {
        x: BufId,
        out: BufId,
        mode: bertc_ir::PoolMode,
    },
    /// Each pooled row of `a` followed by `b`'s (`[batch, wa]` and `[batch, wb]` into
    /// `[batch, wa + wb]`: sentence-transformers' concatenated pooling modes).
    Concat {
        a: BufId,
        b: BufId,
        out: BufId,
    },
    /// Each pooled row divided by its L2 norm (at least 1e-12).
    Normalize {
        x: BufId,
        out: BufId,
    },
    /// The scale and zero point (one float a sequence each) of `x` quantized to uint8 as
    /// `Op::DynamicQuantize` defines them, one task a sequence (its range over its rows, which
    /// are its real tokens); a map's `MapOp::Centered` makes the integers.
    QuantRange {
        x: BufId,
        scale: BufId,
        zero: BufId,
    },
    /// Packed token rows back to the padded `[batch, seq]` layout of the caller's output (added
    /// by code generation after the last step when the output is per token).
    Scatter {
        x: BufId,
    },
}

/// One instruction of a `Step::Map` expression, in postfix order over a stack of values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MapOp {
    /// The element of input buffer `i` (an index into the step's `inputs`).
    Input(usize),
    /// The element of constant row `i` (an index into the step's `rows`).
    Row(usize),
    /// The value of per-sequence input `i` (an index into `seq_inputs`) for the row's
    /// sequence.
    SeqInput(usize),
    Const(f32),
    Unary(UnaryOp),
    Binary(BinaryOp),
    Qdq(Qdq),
    /// `min(max(round_ne(x / s) + zp, 0), 255) - zp` with the scale and zero point of
    /// per-sequence inputs `s` and `zp` (`Op::DynamicQuantize`'s integers; rounding by
    /// `ROUND_MAGIC` is exact, every `x / s` being at most 255 in magnitude).
    Centered(usize, usize),
    /// `x^n` for a constant exponent 2 or 3, as repeated f32 multiplications (`(x · x) · x`,
    /// as the interpreter computes `pow` by those exponents).
    Powi(u8),
}

impl MapOp {
    /// The unary ops a map computes as the interpreter does (IEEE operations and
    /// `bertc_numerics`' recipes).
    pub const UNARY: [UnaryOp; 6] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Sqrt,
        UnaryOp::Erf,
        UnaryOp::Tanh,
        UnaryOp::Round,
    ];
    /// The binary ops a map computes as the interpreter does.
    pub const BINARY: [BinaryOp; 4] = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div];
}

/// Columns per packed weight panel.
pub const PANEL: usize = 16;

/// The fewest real tokens `Program::chunk_tokens` gives a forward: enough rows that each
/// chunk's pass over the weights (from L3 or memory) is shared by hundreds of tokens (four
/// times the rows up to which the GEMMs stream their weights).
pub const MIN_CHUNK_TOKENS: usize = 256;

/// A thread's unit of work when the threads run whole forwards side by side (a batch of at
/// least `UNITS_PER_THREAD` units a thread): whole sequences with at most this many real
/// tokens, one sequence at least. Small, because the threads' wait at the end is half a unit
/// on average; big enough that one thread's GEMMs run at their rate (on all-MiniLM-L6-v2, one
/// thread ran 1 x 128 and 6 x 128 at the same tokens per second; BENCHMARKS.md).
pub const THREAD_UNIT_TOKENS: usize = 128;

/// Units a thread a batch needs for the threads to run whole forwards side by side: with
/// fewer, the wait at the end outweighs what running side by side gains (measured on
/// all-MiniLM-L6-v2, 2 threads: two single-thread forwards side by side ran 7% more tokens a
/// second than one forward on both threads; BENCHMARKS.md).
pub const UNITS_PER_THREAD: usize = 8;

/// A model lowered for code generation.
#[derive(Clone, Debug)]
pub struct Program {
    pub steps: Vec<Step>,
    pub buffers: Vec<Buffer>,
    pub weights: Vec<Weight>,
    pub output: BufId,
    /// Floats of workspace per real token of a forward (the activations, packed; every buffer
    /// has at most a row a real token: a per-sequence one has a row a sequence, and each
    /// sequence has a real token at least).
    pub ws_per_token: usize,
    /// Offset of the attention scratch, after the activations, in floats per real token.
    pub scratch_offset: usize,
    /// The most heads of any attention step.
    pub max_heads: usize,
    pub vocab: usize,
    pub type_vocab: usize,
    pub max_seq: usize,
    pub token_types: TokenTypes,
    pub has_mask: bool,
}

impl Program {
    pub fn output_width(&self) -> usize {
        self.buffers[self.output].width
    }
    pub fn output_per_token(&self) -> bool {
        self.buffers[self.output].rows == Rows::Tokens
    }
}

/// Packs `w[n, k]` (row-major) and `b[n]` into panels of `PANEL` columns: for each panel,
/// `PANEL` bias values, then `k` rows of `PANEL` weights (`w[j, kk]` at `[kk][j % PANEL]`),
/// zero beyond `n`.
pub fn pack_linear(w: &[f32], b: Option<&[f32]>, n: usize, k: usize) -> Vec<f32> {
    let panels = n.div_ceil(PANEL);
    let mut out = vec![0f32; panels * PANEL * (k + 1)];
    for p in 0..panels {
        let base = p * PANEL * (k + 1);
        for c in 0..PANEL {
            let j = p * PANEL + c;
            if j >= n {
                continue;
            }
            out[base + c] = b.map_or(0.0, |b| b[j]);
            for kk in 0..k {
                out[base + PANEL + kk * PANEL + c] = w[j * k + kk];
            }
        }
    }
    out
}

/// Bytes before the weights of an int8 panel: `PANEL` f32 biases, then `PANEL` f32 scales.
pub const QPANEL_HEADER: usize = PANEL * 8;

/// Bytes of one int8 panel for depth `k` in `format`.
pub fn qpanel_bytes(k: usize, format: QFormat) -> usize {
    QPANEL_HEADER + PANEL * k.next_multiple_of(format.group())
}

/// Packs int8 weights `wq[n, k]` (row-major), their per-row scales and the bias into panels
/// of `PANEL` columns: for each panel, `PANEL` biases and `PANEL` scales (f32), then for each
/// group of k (`format.group()` values: `ceil(k / group)` groups) the panel's columns in
/// order, a group's bytes each (`Pairs`, `Octs`: the signed bytes; `Quads`: `w + 128` as unsigned
/// bytes); zero bytes beyond `n` and `k` (the quantized rows are zero there).
pub fn pack_qlinear(
    wq: &[i8],
    scales: &[f32],
    bias: &[f32],
    n: usize,
    k: usize,
    format: QFormat,
) -> Vec<u8> {
    let panels = n.div_ceil(PANEL);
    let pb = qpanel_bytes(k, format);
    let gs = format.group();
    let mut out = vec![0u8; panels * pb];
    for j in 0..n {
        let (p, c) = (j / PANEL, j % PANEL);
        let base = p * pb;
        out[base + 4 * c..base + 4 * c + 4].copy_from_slice(&bias[j].to_le_bytes());
        let so = base + 4 * (PANEL + c);
        out[so..so + 4].copy_from_slice(&scales[j].to_le_bytes());
        for kk in 0..k {
            let at = base + QPANEL_HEADER + (kk / gs) * PANEL * gs + gs * c + kk % gs;
            let w = wq[j * k + kk];
            out[at] = match format {
                QFormat::Pairs | QFormat::Octs => w as u8,
                QFormat::Quads => (i16::from(w) + 128) as u8,
            };
        }
    }
    out
}

/// Where an attention step reads q, k and v: offsets of the first column in floats, row
/// strides in floats, and the q/k and v widths (all heads).
#[derive(Clone, Copy, Debug)]
pub struct AttnGeom {
    pub q_off: usize,
    pub k_off: usize,
    pub v_off: usize,
    pub ldq: usize,
    pub ldk: usize,
    pub ldv: usize,
    pub qk_width: usize,
    pub v_width: usize,
}

impl Program {
    /// The most real tokens one forward runs: the artifact splits a bigger batch into chunks
    /// of whole sequences, so that a chunk's workspace (`ws_per_token` floats a token) fills
    /// at most half of the shared cache `caches.l3` and its activations are read back from
    /// there, not from memory; at least `MIN_CHUNK_TOKENS`. Measured on all-MiniLM-L6-v2
    /// (BENCHMARKS.md): 32 x 128 in chunks of 4 sequences ran 16% faster (int8) and 4% (fp32)
    /// than in one forward.
    pub fn chunk_tokens(&self, caches: &bertc_targets::Caches) -> usize {
        (caches.l3 / 2 / (self.ws_per_token * 4).max(1)).max(MIN_CHUNK_TOKENS)
    }

    /// Floating-point operations (a multiply-add counts two) of the steps that do arithmetic:
    /// `(per real token, per sequence, per (query, key) pair of a sequence)`.
    pub fn flop_counts(&self) -> (u64, u64, u64) {
        let (mut tok, mut seq, mut pair) = (0u64, 0u64, 0u64);
        for s in &self.steps {
            match s {
                Step::Linear { x, k, n, .. } => {
                    let f = 2 * (*k as u64) * (*n as u64);
                    match self.buffers[*x].rows {
                        Rows::Tokens => tok += f,
                        Rows::Seqs => seq += f,
                    }
                }
                Step::Attention { .. } => {
                    let g = self.attn_geom(s).expect("an attention step");
                    pair += 2 * (g.qk_width + g.v_width) as u64;
                }
                _ => {}
            }
        }
        (tok, seq, pair)
    }

    /// The geometry of attention step `s` (`None` for other steps).
    pub fn attn_geom(&self, s: &Step) -> Option<AttnGeom> {
        let Step::Attention { q, k, v, qk, .. } = *s else {
            return None;
        };
        let w = |b: usize| self.buffers[b].width;
        Some(match qk {
            Some(qk) => AttnGeom {
                q_off: 0,
                k_off: qk,
                v_off: 2 * qk,
                ldq: w(q),
                ldk: w(q),
                ldv: w(q),
                qk_width: qk,
                v_width: w(q) - 2 * qk,
            },
            None => AttnGeom {
                q_off: 0,
                k_off: 0,
                v_off: 0,
                ldq: w(q),
                ldk: w(k),
                ldv: w(v),
                qk_width: w(q),
                v_width: w(v),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fours hold 8-bit activations only, and only as deep as their unsigned sums fit an
    /// i32 (the worst case of `Σ (w + 128) xq`, computed here in i64).
    #[test]
    fn fours_only_where_their_sums_fit() {
        let worst = |k: usize| 255i64 * 127 * k as i64;
        assert!(worst(QUADS_MAX_K) <= i32::MAX as i64);
        assert!(worst(QUADS_MAX_K + 1) > i32::MAX as i64);
        let q = QFormat::Quads;
        assert_eq!(QFormat::for_bits(q, 8, QUADS_MAX_K), QFormat::Quads);
        assert_eq!(QFormat::for_bits(q, 8, QUADS_MAX_K + 1), QFormat::Pairs);
        assert_eq!(QFormat::for_bits(q, 9, 384), QFormat::Pairs);
        assert_eq!(QFormat::for_bits(QFormat::Pairs, 8, 384), QFormat::Pairs);
        // a row's bytes: values, the pad, the sum term, the scale
        let row = quantized_row(&[1, -2, 3], 0.5, q);
        assert_eq!(&row[..4], &[1, 0xfe, 3, 0]);
        assert_eq!(i32::from_le_bytes(row[4..8].try_into().unwrap()), -128 * 2);
        assert_eq!(f32::from_le_bytes(row[8..12].try_into().unwrap()), 0.5);
    }
}

//! The op set: ONNX-level ops as importers produce them, their static-shape forms after
//! canonicalisation, and the encoder-level ops that raising produces.

use super::types::{DType, Dim, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Abs,
    Sqrt,
    Reciprocal,
    Exp,
    Log,
    Erf,
    Tanh,
    Sigmoid,
    Relu,
    Not,
    /// To the nearest integer, ties to even (ONNX `Round`, and the rounding of quantization).
    Round,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Min,
    Max,
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
}

impl BinaryOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Equal
                | BinaryOp::Less
                | BinaryOp::LessOrEqual
                | BinaryOp::Greater
                | BinaryOp::GreaterOrEqual
        )
    }

    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Mean,
    Sum,
    Max,
}

/// The poolings of `Op::Pool` (sentence-transformers' modes beyond mean, max and CLS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolMode {
    /// The row of the last real token (zeros when there is none).
    LastToken,
    /// The sum of the real tokens' rows over the square root of their count.
    MeanSqrtLen,
    /// The mean of the real tokens' rows weighted by their position plus one (position in
    /// the padded sequence).
    WeightedMean,
}

impl PoolMode {
    /// The name in the text form (and sentence-transformers').
    pub fn name(self) -> &'static str {
        match self {
            PoolMode::LastToken => "lasttoken",
            PoolMode::MeanSqrtLen => "mean_sqrt_len_tokens",
            PoolMode::WeightedMean => "weightedmean",
        }
    }

    pub const ALL: [PoolMode; 3] = [
        PoolMode::LastToken,
        PoolMode::MeanSqrtLen,
        PoolMode::WeightedMean,
    ];
}

/// GELU variants: the exact erf form and the tanh approximation (`gelu_new`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GeluApprox {
    Erf,
    Tanh,
}

/// The text form: `input`, `zero` or `absent`.
impl std::fmt::Display for TokenTypes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenTypes::Input => "input",
            TokenTypes::Zero => "zero",
            TokenTypes::Absent => "absent",
        })
    }
}

/// An activation fused into a linear's epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FusedAct {
    Gelu(GeluApprox),
    Tanh,
    Relu,
}

/// How an `Embedding` computes position ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Positions {
    /// `offset + t` for token `t` (BERT: offset 0).
    Arange { offset: i64 },
    /// RoBERTa: `pad + 1 + (number of non-pad tokens up to t)` for non-pad tokens, `pad` for pads.
    PaddingAware { pad: i64 },
}

impl Positions {
    /// The longest sequence a position table of `rows` rows serves: token `t`'s position is
    /// `offset + t`, or at most `pad + 1 + t` (0 when the table is too small).
    pub fn max_seq(self, rows: usize) -> usize {
        let used = match self {
            Positions::Arange { offset } => offset,
            Positions::PaddingAware { pad } => pad + 1,
        };
        (rows as i64 - used).max(0) as usize
    }
}

/// The text form: `arange(offset=N)` or `padding_aware(pad=N)`.
impl std::fmt::Display for Positions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Positions::Arange { offset } => write!(f, "arange(offset={offset})"),
            Positions::PaddingAware { pad } => write!(f, "padding_aware(pad={pad})"),
        }
    }
}

/// Where an `Embedding` takes its token type ids from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenTypes {
    /// A graph input of token type ids (second operand).
    Input,
    /// No input: every token has type 0 (RoBERTa's single-row table).
    Zero,
    /// The model has no token type table (DistilBERT).
    Absent,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph input.
    Input {
        name: String,
    },
    /// A constant owned by the graph (weights, shape constants).
    Const {
        name: String,
        value: Tensor,
    },

    Unary(UnaryOp),
    Binary(BinaryOp),
    /// `where(cond, a, b)`.
    Where,
    Cast {
        to: DType,
    },
    /// The shape of the operand as a 1-D i64 tensor (`start..end` of its dims).
    Shape {
        start: i64,
        end: Option<i64>,
    },
    /// `reshape(x, shape)`: shape from a tensor (ONNX semantics for 0 and -1).
    Reshape {
        allowzero: bool,
    },
    /// `expand(x, shape)`: bidirectional broadcast to a shape from a tensor.
    Expand,
    /// A tensor of the given scalar, with the shape from a tensor.
    ConstantOfShape {
        value: Tensor,
    },
    /// `range(start, limit, delta)`.
    Range,
    /// `slice(data, starts, ends, axes?, steps?)`.
    Slice,
    Unsqueeze {
        axes: Vec<i64>,
    },
    Squeeze {
        axes: Vec<i64>,
    },
    Concat {
        axis: i64,
    },
    Gather {
        axis: i64,
    },
    /// ONNX `GatherND(data, indices)`: the last axis of `indices` addresses the first axes of
    /// `data` after `batch_dims` shared leading axes.
    GatherNd {
        batch_dims: usize,
    },
    GatherElements {
        axis: i64,
    },
    Transpose {
        perm: Vec<usize>,
    },
    Flatten {
        axis: i64,
    },
    CumSum {
        axis: i64,
        exclusive: bool,
        reverse: bool,
    },
    MatMul,
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    Softmax {
        axis: i64,
    },
    Reduce {
        kind: ReduceKind,
        axes: Vec<i64>,
        keepdims: bool,
    },
    /// ONNX `LayerNormalization(x, scale, bias?)` normalising over the axes from `axis` on.
    LayerNormalization {
        axis: i64,
        epsilon: f32,
    },

    // Static-shape forms, produced by canonicalisation when shapes are known.
    ReshapeTo {
        shape: Vec<Dim>,
    },
    ExpandTo {
        shape: Vec<Dim>,
    },
    /// A tensor of one scalar value (a one-element constant tensor) with a static shape.
    Fill {
        shape: Vec<Dim>,
        value: Tensor,
    },
    /// `start, start + step, ...` (`len` values).
    Arange {
        dtype: DType,
        start: i64,
        step: i64,
        len: Dim,
    },
    /// Slicing with resolved bounds: on each axis, elements `start..end` with step 1.
    SliceTo {
        axes: Vec<usize>,
        starts: Vec<Dim>,
        ends: Vec<Dim>,
    },

    // Encoder-level ops, produced by raising (or directly by the Hugging Face importer).
    /// `embedding(ids, type_ids?, word, pos, type?)`: word + token type + position rows,
    /// summed in that order; with `sum_qdq` (a static QDQ file), the word and type rows' sum
    /// goes through that quantization point before the position row is added.
    Embedding {
        positions: Positions,
        types: TokenTypes,
        sum_qdq: Option<Qdq>,
    },
    /// `layer_norm(x, gamma, beta)` over the last axis.
    LayerNorm {
        eps: f32,
    },
    /// `linear(x, w[n,k], b[n]?)`: `x @ wᵀ + b` over the last axis.
    Linear,
    /// `fused_linear(x, w[n,k], b[n], residual?)`: `act(x @ wᵀ + b) (+ residual)`, the
    /// activation and the residual add done on each output tile while it is in cache.
    FusedLinear {
        act: Option<FusedAct>,
        residual: bool,
    },
    /// `qlinear(x, wq[n,k], w_scale[n], b[n], residual?, smooth[k]?)`: a linear on int8
    /// weights, symmetric per output channel (`w ≈ wq · w_scale`), with each row of `x` (with
    /// `smooth`, each row times it, `x · smooth` in f32: SmoothQuant's migration of a channel's
    /// range into the weights, which then hold `w / smooth`) quantized at run time to
    /// `abits`-bit integers (`q = 2^(abits-1) - 1`, `inv = q / max|x_row|`,
    /// `xq = clamp(round_ne(x · inv), -q, q)`, `s = max|x_row| / q`, all in f32; a row whose
    /// maximum is 0, infinite or NaN is all zeros with `s = 0`), the products summed exactly in
    /// i32, then `act(fma(acc, s · w_scale, b)) (+ residual)` (one rounding for the multiply-add).
    /// `abits` is 2 to 16 and at most `qlinear_max_abits(k)`, so that the sums cannot overflow.
    QLinear {
        act: Option<FusedAct>,
        residual: bool,
        abits: u8,
        smooth: bool,
    },
    /// `dequantize_rows(q[r, c], scale[r])`: int8 rows times their f32 scales,
    /// `q[i, j] as f32 · scale[i]` (an embedding table stored in int8).
    DequantizeRows,
    Gelu {
        approx: GeluApprox,
    },
    /// `attention(q, k, v, mask?)` over `[batch, seq, heads*d]` projections: per head
    /// `softmax(q kᵀ · scale, keys with mask 0 excluded) v`, heads concatenated; with
    /// quantization points (`AttnQuant`, a static QDQ file), the scores and probabilities go
    /// through them.
    Attention {
        heads: usize,
        scale: f32,
        quant: AttnQuant,
    },
    /// `qkv_attention(qkv, mask?)`: `attention` over one `[batch, seq, 2*qk + v]` tensor whose
    /// columns are q (`0..qk`), k (`qk..2qk`) and v (the rest): the output of the three
    /// projections fused into one linear.
    QkvAttention {
        heads: usize,
        scale: f32,
        qk: usize,
    },
    /// `mean_pool(x[b,s,h], mask[b,s])`: mean of the rows with mask 1.
    MeanPool,
    /// `max_pool(x[b,s,h], mask[b,s])`: elementwise maximum of the rows with mask 1.
    MaxPool,
    /// `pool(x[b,s,h], mask[b,s]) mode=...`: the other poolings of sentence-transformers
    /// (`PoolMode`), over the rows with mask 1.
    Pool {
        mode: PoolMode,
    },
    /// `l2_normalize(x)`: `x / max(|x|, 1e-12)` along the last axis (PyTorch's
    /// `F.normalize`, sentence-transformers' `Normalize`).
    L2Normalize,
    /// `dynamic_quantize(x, mask?) part=centered|scale`: each sequence of `x` (`[batch, seq, k]`,
    /// or `[batch, k]`) quantized to uint8 as ONNX's `DynamicQuantizeLinear` quantizes a
    /// tensor, in f32: `hi = max(max x, 0)`, `lo = min(-max(-x), 0)`, `s = (hi - lo) / 255`
    /// (1 when `hi == lo`), `zp = round_ne(min(max(-(lo / s), 0), 255))`, the maxima over the
    /// sequence's rows (with `mask`, `[batch, seq]`, its real tokens only). `centered` is
    /// `min(max(round_ne(x / s) + zp, 0), 255) - zp` (integers, as f32, in `x`'s shape), `scale`
    /// is `s` (`[batch, 1, 1]`, or `[batch, 1]`). A sequence's result is thus what the file
    /// computes for it alone, whatever else is in the batch.
    DynamicQuantize {
        part: QuantPart,
    },
    /// `qdq(x)`: a static quantization point (see `Qdq`), elementwise.
    Qdq(Qdq),
}

/// Which part of a dynamic quantization `Op::DynamicQuantize` gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantPart {
    /// The integers less the zero point.
    Centered,
    /// Each sequence's scale.
    Scale,
}

impl QuantPart {
    pub fn name(self) -> &'static str {
        match self {
            QuantPart::Centered => "centered",
            QuantPart::Scale => "scale",
        }
    }
}

/// A static quantization point: ONNX's `QuantizeLinear` then `DequantizeLinear` with one scale
/// and zero point for the whole tensor, as ONNX Runtime's static QDQ files put them around
/// activations: `y = (min(max(round_ne(x / scale) + zero, lo), hi) - zero) · scale`, each step
/// one f32 operation (`bertc_numerics::qdq`), `lo..hi` the range of `to` (u8, i8 or i16).
/// Text form `scale/zero/to`, e.g. `0.0123/-3/i8`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Qdq {
    pub scale: f32,
    pub zero: i32,
    pub to: DType,
}

impl Qdq {
    /// A quantization point, if `scale` is finite and positive, `to` a type of quantized
    /// activations and `zero` within its range.
    pub fn new(scale: f32, zero: i32, to: DType) -> Result<Qdq, String> {
        let q = Qdq { scale, zero, to };
        let (lo, hi) = q
            .range()
            .ok_or_else(|| format!("quantization to {to} is not supported (u8, i8, i16)"))?;
        if !(scale.is_finite() && scale > 0.0) {
            return Err(format!(
                "quantization scale {scale} is not finite and positive"
            ));
        }
        if !(lo..=hi).contains(&(zero as f32)) {
            return Err(format!("zero point {zero} is outside the range of {to}"));
        }
        Ok(q)
    }

    /// The integer range of `to`, as f32.
    pub fn range(self) -> Option<(f32, f32)> {
        Some(match self.to {
            DType::U8 => (0.0, 255.0),
            DType::I8 => (-128.0, 127.0),
            DType::I16 => (-32768.0, 32767.0),
            _ => return None,
        })
    }
}

impl std::fmt::Display for Qdq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:e}/{}/{}", self.scale, self.zero, self.to)
    }
}

impl std::str::FromStr for Qdq {
    type Err = String;

    fn from_str(s: &str) -> Result<Qdq, String> {
        let bad = || format!("'{s}' is not a quantization point (scale/zero/type)");
        let mut it = s.split('/');
        let (Some(scale), Some(zero), Some(to), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(bad());
        };
        let to = DType::ALL
            .into_iter()
            .find(|d| d.name() == to)
            .ok_or_else(bad)?;
        Qdq::new(
            scale.parse().map_err(|_| bad())?,
            zero.parse().map_err(|_| bad())?,
            to,
        )
    }
}

/// The static quantization points inside attention (each optional): `scores` on `q · k`,
/// `scaled` after the scale, `masked` after the mask is added (0 on every key attention
/// keeps, so on the score itself), `probs` on the softmax's probabilities, which are then
/// `exp / sum` before `P V` (not scaled by `1 / sum` after it).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttnQuant {
    pub scores: Option<Qdq>,
    pub scaled: Option<Qdq>,
    pub masked: Option<Qdq>,
    pub probs: Option<Qdq>,
}

impl AttnQuant {
    /// The points with their names in the text form, in the order they apply.
    pub fn points(&self) -> [(&'static str, Option<Qdq>); 4] {
        [
            ("qdq_scores", self.scores),
            ("qdq_scaled", self.scaled),
            ("qdq_masked", self.masked),
            ("qdq_probs", self.probs),
        ]
    }

    pub fn is_none(&self) -> bool {
        self.points().iter().all(|(_, p)| p.is_none())
    }
}

/// The family an op belongs to: type inference (`infer/`) and the interpreter have one file
/// per family, and dispatch on this, so that an op's family is stated once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpFamily {
    /// Graph inputs and constants: no rule, no evaluation.
    Leaf,
    Elementwise,
    Shape,
    Linalg,
    Reduce,
    Encoder,
}

/// The most activation bits a `qlinear` of depth `k` may use: the largest `b <= 16` whose
/// integers (`|xq| <= 2^(b-1) - 1`) times int8 weights (`|wq| <= 127`) sum over `k` within i32.
pub fn qlinear_max_abits(k: usize) -> u8 {
    (2..=16u8)
        .rev()
        .find(|b| (k as u128) * ((1u128 << (b - 1)) - 1) * 127 <= i32::MAX as u128)
        .unwrap_or(2)
}

impl Op {
    pub fn family(&self) -> OpFamily {
        match self {
            Op::Input { .. } | Op::Const { .. } => OpFamily::Leaf,
            Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast { .. } | Op::Qdq(_) => {
                OpFamily::Elementwise
            }
            Op::Shape { .. }
            | Op::Reshape { .. }
            | Op::ReshapeTo { .. }
            | Op::Expand
            | Op::ExpandTo { .. }
            | Op::ConstantOfShape { .. }
            | Op::Fill { .. }
            | Op::Range
            | Op::Arange { .. }
            | Op::Slice
            | Op::SliceTo { .. }
            | Op::Unsqueeze { .. }
            | Op::Squeeze { .. }
            | Op::Concat { .. }
            | Op::Gather { .. }
            | Op::GatherElements { .. }
            | Op::GatherNd { .. }
            | Op::Transpose { .. }
            | Op::Flatten { .. } => OpFamily::Shape,
            Op::MatMul
            | Op::Gemm { .. }
            | Op::Linear
            | Op::FusedLinear { .. }
            | Op::QLinear { .. }
            | Op::DequantizeRows => OpFamily::Linalg,
            Op::CumSum { .. }
            | Op::Softmax { .. }
            | Op::Reduce { .. }
            | Op::LayerNormalization { .. }
            | Op::LayerNorm { .. }
            | Op::MeanPool
            | Op::MaxPool
            | Op::Pool { .. }
            | Op::L2Normalize
            | Op::DynamicQuantize { .. } => OpFamily::Reduce,
            Op::Embedding { .. }
            | Op::Gelu { .. }
            | Op::Attention { .. }
            | Op::QkvAttention { .. } => OpFamily::Encoder,
        }
    }

    /// The name used in the text form.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Const { .. } => "const",
            Op::Unary(u) => match u {
                UnaryOp::Neg => "neg",
                UnaryOp::Abs => "abs",
                UnaryOp::Sqrt => "sqrt",
                UnaryOp::Reciprocal => "reciprocal",
                UnaryOp::Exp => "exp",
                UnaryOp::Log => "log",
                UnaryOp::Erf => "erf",
                UnaryOp::Tanh => "tanh",
                UnaryOp::Sigmoid => "sigmoid",
                UnaryOp::Round => "round",
                UnaryOp::Relu => "relu",
                UnaryOp::Not => "not",
            },
            Op::Binary(b) => match b {
                BinaryOp::Add => "add",
                BinaryOp::Sub => "sub",
                BinaryOp::Mul => "mul",
                BinaryOp::Div => "div",
                BinaryOp::Pow => "pow",
                BinaryOp::Min => "min",
                BinaryOp::Max => "max",
                BinaryOp::Equal => "equal",
                BinaryOp::Less => "less",
                BinaryOp::LessOrEqual => "less_or_equal",
                BinaryOp::Greater => "greater",
                BinaryOp::GreaterOrEqual => "greater_or_equal",
                BinaryOp::And => "and",
                BinaryOp::Or => "or",
            },
            Op::Where => "where",
            Op::Cast { .. } => "cast",
            Op::Shape { .. } => "shape",
            Op::Reshape { .. } => "reshape",
            Op::Expand => "expand",
            Op::ConstantOfShape { .. } => "constant_of_shape",
            Op::Range => "range",
            Op::Slice => "slice",
            Op::Unsqueeze { .. } => "unsqueeze",
            Op::Squeeze { .. } => "squeeze",
            Op::Concat { .. } => "concat",
            Op::Gather { .. } => "gather",
            Op::GatherElements { .. } => "gather_elements",
            Op::GatherNd { .. } => "gather_nd",
            Op::Transpose { .. } => "transpose",
            Op::Flatten { .. } => "flatten",
            Op::CumSum { .. } => "cumsum",
            Op::MatMul => "matmul",
            Op::Gemm { .. } => "gemm",
            Op::Softmax { .. } => "softmax",
            Op::Reduce { kind, .. } => match kind {
                ReduceKind::Mean => "reduce_mean",
                ReduceKind::Sum => "reduce_sum",
                ReduceKind::Max => "reduce_max",
            },
            Op::LayerNormalization { .. } => "layer_normalization",
            Op::ReshapeTo { .. } => "reshape",
            Op::ExpandTo { .. } => "expand",
            Op::Fill { .. } => "fill",
            Op::Arange { .. } => "arange",
            Op::SliceTo { .. } => "slice",
            Op::Embedding { .. } => "embedding",
            Op::LayerNorm { .. } => "layer_norm",
            Op::Linear => "linear",
            Op::FusedLinear { .. } => "fused_linear",
            Op::QLinear { .. } => "qlinear",
            Op::DequantizeRows => "dequantize_rows",
            Op::Gelu { .. } => "gelu",
            Op::Attention { .. } => "attention",
            Op::QkvAttention { .. } => "qkv_attention",
            Op::MeanPool => "mean_pool",
            Op::MaxPool => "max_pool",
            Op::Pool { .. } => "pool",
            Op::L2Normalize => "l2_normalize",
            Op::DynamicQuantize { .. } => "dynamic_quantize",
            Op::Qdq(_) => "qdq",
        }
    }

    /// The number of operands the op accepts: `(min, max)`.
    pub fn arity(&self) -> (usize, usize) {
        match self {
            Op::Input { .. } | Op::Const { .. } => (0, 0),
            Op::Fill { .. } | Op::Arange { .. } => (0, 0),
            Op::Unary(_)
            | Op::Cast { .. }
            | Op::Qdq(_)
            | Op::Shape { .. }
            | Op::ConstantOfShape { .. }
            | Op::Unsqueeze { .. }
            | Op::Squeeze { .. }
            | Op::Transpose { .. }
            | Op::Flatten { .. }
            | Op::Softmax { .. }
            | Op::Reduce { .. }
            | Op::ReshapeTo { .. }
            | Op::ExpandTo { .. }
            | Op::SliceTo { .. }
            | Op::L2Normalize
            | Op::Gelu { .. } => (1, 1),
            Op::Binary(_)
            | Op::Reshape { .. }
            | Op::Expand
            | Op::Gather { .. }
            | Op::GatherElements { .. }
            | Op::GatherNd { .. }
            | Op::CumSum { .. }
            | Op::MatMul
            | Op::DequantizeRows
            | Op::MeanPool
            | Op::MaxPool
            | Op::Pool { .. } => (2, 2),
            Op::Where | Op::Range | Op::LayerNorm { .. } => (3, 3),
            Op::Concat { .. } => (1, usize::MAX),
            Op::Slice => (3, 5),
            Op::Gemm { .. } => (2, 3),
            Op::DynamicQuantize { .. } => (1, 2),
            Op::LayerNormalization { .. } => (2, 3),
            Op::Linear => (2, 3),
            Op::FusedLinear { .. } => (3, 4),
            Op::QLinear { .. } => (4, 6),
            Op::Attention { .. } => (3, 4),
            Op::QkvAttention { .. } => (1, 2),
            Op::Embedding { .. } => (3, 5),
        }
    }
}

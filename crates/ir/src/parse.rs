//! The parser of the IR's text form, the inverse of `Graph::to_text`: printing a parsed graph
//! gives the text back (tested on every shared model, raw and raised). Used by the `.bir`
//! filetests, and by anyone who wants to write a graph by hand.
//!
//! The text does not hold the weights (`@name:f32[n,k]` gives only name and type), so the
//! parser makes them: floats pseudo-random in [-0.1, 0.1) from a hash of the name (the same
//! graph text always gives the same weights), integers 0. Small constants are written out and
//! parse to their values. Every error names the line and what was expected.

use std::collections::HashMap;

use crate::graph::{Graph, NodeId};
use crate::op::{
    AttnQuant, BinaryOp, FusedAct, GeluApprox, Op, PoolMode, Positions, QuantPart, ReduceKind,
    TokenTypes, UnaryOp,
};
use crate::types::{DType, Dim, Tensor, TensorType};
use crate::IrError;

impl Graph {
    /// Parses the text form (see the module documentation).
    pub fn from_text(text: &str) -> Result<Graph, IrError> {
        Parser::default().parse(text)
    }
}

#[derive(Default)]
struct Parser {
    g: Graph,
    /// `%name` of inputs and `%N` of nodes.
    values: HashMap<String, NodeId>,
    /// Weights by name (a weight used twice is one node).
    weights: HashMap<String, NodeId>,
    consts: usize,
    line: usize,
}

/// A cursor over one line.
struct Cur<'a> {
    s: &'a str,
    pos: usize,
}

type PResult<T> = Result<T, String>;

impl<'a> Cur<'a> {
    fn new(s: &'a str) -> Self {
        Cur { s, pos: 0 }
    }
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }
    fn ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }
    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }
    fn eat(&mut self, t: &str) -> bool {
        if self.rest().starts_with(t) {
            self.pos += t.len();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, t: &str) -> PResult<()> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(format!("expected '{t}' at '{}'", self.rest()))
        }
    }
    /// A name: letters, digits, `_`, `.`, `-`, `/`, `:` excluded.
    fn name(&mut self) -> PResult<&'a str> {
        let r = self.rest();
        let n = r
            .find(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')))
            .unwrap_or(r.len());
        if n == 0 {
            return Err(format!("expected a name at '{r}'"));
        }
        self.pos += n;
        Ok(&r[..n])
    }
    /// Up to (not including) the first of `stops` outside brackets and parentheses.
    fn until(&mut self, stops: &[char]) -> &'a str {
        let r = self.rest();
        let mut depth = 0i32;
        for (i, c) in r.char_indices() {
            match c {
                '[' | '(' => depth += 1,
                ']' | ')' if depth > 0 => depth -= 1,
                _ if depth == 0 && stops.contains(&c) => {
                    self.pos += i;
                    return &r[..i];
                }
                _ => {}
            }
        }
        self.pos += r.len();
        r
    }
}

fn dtype(s: &str) -> PResult<DType> {
    DType::ALL
        .into_iter()
        .find(|d| d.name() == s)
        .ok_or_else(|| format!("unknown dtype '{s}'"))
}

/// A dimension: a product of integers, `batch`, `seq`, each with an optional `^power`.
fn dim(s: &str) -> PResult<Dim> {
    let bad = || format!("bad dimension '{s}'");
    let mut d = Dim::c(1);
    for term in s.split('*') {
        let (base, pow) = match term.split_once('^') {
            Some((b, p)) => (b, p.parse::<u32>().map_err(|_| bad())?),
            None => (term, 1),
        };
        let f = match base {
            "batch" => Dim::BATCH,
            "seq" => Dim::SEQ,
            n => Dim::c(n.parse::<i64>().map_err(|_| bad())?),
        };
        for _ in 0..pow {
            d = d.checked_mul(f).ok_or_else(bad)?;
        }
    }
    Ok(d)
}

/// `[d,d,...]` (brackets included).
fn dims(s: &str) -> PResult<Vec<Dim>> {
    let inner = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| format!("expected [dims], got '{s}'"))?;
    if inner.is_empty() {
        return Ok(vec![]);
    }
    inner.split(',').map(dim).collect()
}

fn ints(s: &str) -> PResult<Vec<i64>> {
    dims(s)?
        .into_iter()
        .map(|d| {
            d.as_const()
                .ok_or_else(|| format!("expected integers in '{s}'"))
        })
        .collect()
}

/// `dtype[dims]`.
fn tensor_type(s: &str) -> PResult<TensorType> {
    let open = s
        .find('[')
        .ok_or_else(|| format!("expected a type, got '{s}'"))?;
    Ok(TensorType::new(dtype(&s[..open])?, dims(&s[open..])?))
}

fn static_shape(t: &TensorType) -> PResult<Vec<usize>> {
    t.shape
        .iter()
        .map(|d| {
            d.as_const()
                .filter(|&c| c >= 0)
                .map(|c| c as usize)
                .ok_or_else(|| format!("a constant needs a static shape, not {t}"))
        })
        .collect()
}

/// A tensor of `dtype` from the text of its values.
fn tensor_of(dtype: DType, shape: Vec<usize>, vals: &[&str]) -> PResult<Tensor> {
    let n: usize = shape.iter().product();
    if vals.len() != n {
        return Err(format!("{} values for shape {shape:?}", vals.len()));
    }
    let mut b: Vec<u8> = Vec::with_capacity(n * dtype.size());
    for v in vals {
        let bad = || format!("'{v}' is not a {dtype}");
        if dtype.is_float() {
            let x: f64 = v.parse().map_err(|_| bad())?;
            match dtype {
                DType::F32 => b.extend((v.parse::<f32>().map_err(|_| bad())?).to_le_bytes()),
                DType::F64 => b.extend(x.to_le_bytes()),
                DType::F16 => b.extend(half::f16::from_f64(x).to_le_bytes()),
                _ => b.extend(half::bf16::from_f64(x).to_le_bytes()),
            }
        } else {
            let x: i64 = v.parse().map_err(|_| bad())?;
            match dtype {
                DType::I64 => b.extend(x.to_le_bytes()),
                DType::I32 => b.extend((x as i32).to_le_bytes()),
                DType::I16 => b.extend((x as i16).to_le_bytes()),
                DType::I8 | DType::U8 => b.push(x as u8),
                _ => b.push((x != 0) as u8),
            }
        }
    }
    Tensor::new(dtype, shape, b.into()).ok_or_else(|| "bad constant".into())
}

/// The stand-in values of a weight whose data the text does not hold.
fn weight_of(name: &str, t: &TensorType) -> PResult<Tensor> {
    let shape = static_shape(t)?;
    let n: usize = shape.iter().product();
    // FNV-1a of the name seeds a xorshift stream
    let mut s = name
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
            (h ^ c as u64).wrapping_mul(0x100_0000_01b3)
        })
        .max(1);
    let vals: Vec<String> = (0..n)
        .map(|_| {
            if !t.dtype.is_float() {
                return "0".to_string();
            }
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f64 / (1u64 << 24) as f64;
            format!("{}", ((u - 0.5) * 0.2) as f32)
        })
        .collect();
    let refs: Vec<&str> = vals.iter().map(String::as_str).collect();
    tensor_of(t.dtype, shape, &refs)
}

/// The attributes after an op's operands: `key=value` and bare flags.
struct Attrs {
    items: Vec<(String, Option<String>)>,
}

impl Attrs {
    fn parse(s: &str) -> Attrs {
        let items = s
            .split_whitespace()
            .map(|t| match t.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (t.to_string(), None),
            })
            .collect();
        Attrs { items }
    }
    fn take(&mut self, key: &str) -> Option<String> {
        let i = self
            .items
            .iter()
            .position(|(k, v)| k == key && v.is_some())?;
        self.items.remove(i).1
    }
    fn need(&mut self, key: &str) -> PResult<String> {
        self.take(key).ok_or_else(|| format!("missing {key}="))
    }
    fn flag(&mut self, key: &str) -> bool {
        match self.items.iter().position(|(k, v)| k == key && v.is_none()) {
            Some(i) => {
                self.items.remove(i);
                true
            }
            None => false,
        }
    }
    fn has(&self, key: &str) -> bool {
        self.items.iter().any(|(k, _)| k == key)
    }
    /// A bare word (the dtype of `arange`).
    fn word(&mut self) -> PResult<String> {
        match self.items.iter().position(|(_, v)| v.is_none()) {
            Some(i) => Ok(self.items.remove(i).0),
            None => Err("missing dtype".into()),
        }
    }
    fn num<T: std::str::FromStr>(&mut self, key: &str) -> PResult<T> {
        let v = self.need(key)?;
        v.parse().map_err(|_| format!("{key}={v}: not a number"))
    }
    fn done(self) -> PResult<()> {
        match self.items.first() {
            None => Ok(()),
            Some((k, _)) => Err(format!("unknown attribute '{k}'")),
        }
    }
}

const UNARY: [(&str, UnaryOp); 12] = [
    ("neg", UnaryOp::Neg),
    ("abs", UnaryOp::Abs),
    ("sqrt", UnaryOp::Sqrt),
    ("reciprocal", UnaryOp::Reciprocal),
    ("exp", UnaryOp::Exp),
    ("log", UnaryOp::Log),
    ("erf", UnaryOp::Erf),
    ("tanh", UnaryOp::Tanh),
    ("sigmoid", UnaryOp::Sigmoid),
    ("round", UnaryOp::Round),
    ("relu", UnaryOp::Relu),
    ("not", UnaryOp::Not),
];

const BINARY: [(&str, BinaryOp); 14] = [
    ("add", BinaryOp::Add),
    ("sub", BinaryOp::Sub),
    ("mul", BinaryOp::Mul),
    ("div", BinaryOp::Div),
    ("pow", BinaryOp::Pow),
    ("min", BinaryOp::Min),
    ("max", BinaryOp::Max),
    ("equal", BinaryOp::Equal),
    ("less", BinaryOp::Less),
    ("less_or_equal", BinaryOp::LessOrEqual),
    ("greater", BinaryOp::Greater),
    ("greater_or_equal", BinaryOp::GreaterOrEqual),
    ("and", BinaryOp::And),
    ("or", BinaryOp::Or),
];

impl Parser {
    fn parse(mut self, text: &str) -> Result<Graph, IrError> {
        let mut lines = text.lines().enumerate().filter(|(_, l)| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        });
        let mut state = 0; // 0: header, 1: body, 2: after return, 3: closed
        for (i, line) in &mut lines {
            self.line = i + 1;
            let err = |msg: String| IrError::Parse { line: i + 1, msg };
            let t = line.trim();
            let r = match state {
                0 => self.header(t).map(|_| state = 1),
                1 if t.starts_with("return") => self.ret(t).map(|_| state = 2),
                1 => self.node(t),
                2 if t == "}" => {
                    state = 3;
                    Ok(())
                }
                _ => Err(format!("unexpected '{t}'")),
            };
            r.map_err(err)?;
        }
        if state != 3 {
            return Err(IrError::Parse {
                line: self.line,
                msg: "the graph does not end with 'return ...' and '}'".into(),
            });
        }
        self.g.verify()?;
        Ok(self.g)
    }

    fn header(&mut self, t: &str) -> PResult<()> {
        let mut c = Cur::new(t);
        c.expect("graph(")?;
        c.ws();
        while !c.eat(")") {
            c.expect("%")?;
            let name = c.name()?;
            c.expect(":")?;
            c.ws();
            let ty = tensor_type(c.until(&[',', ')']))?;
            let n = self.g.add_input(name, ty);
            if self.values.insert(format!("%{name}"), n).is_some() {
                return Err(format!("input %{name} twice"));
            }
            c.eat(",");
            c.ws();
        }
        c.ws();
        if c.eat("max_seq=") {
            let v = c.until(&[' ']);
            self.g.max_seq = Some(v.parse().map_err(|_| format!("max_seq={v}"))?);
            c.ws();
        }
        c.expect("{")?;
        if !c.rest().trim().is_empty() {
            return Err(format!("unexpected '{}' after '{{'", c.rest()));
        }
        Ok(())
    }

    fn ret(&mut self, t: &str) -> PResult<()> {
        let rest = t["return".len()..].trim();
        for item in rest.split(',') {
            let (name, v) = item
                .trim()
                .split_once('=')
                .ok_or_else(|| format!("expected name=%value, got '{item}'"))?;
            let n = *self
                .values
                .get(v)
                .ok_or_else(|| format!("unknown value {v}"))?;
            self.g.outputs.push((name.to_string(), n));
        }
        Ok(())
    }

    fn operand(&mut self, s: &str) -> PResult<NodeId> {
        if s.starts_with('%') {
            return self
                .values
                .get(s)
                .copied()
                .ok_or_else(|| format!("unknown value {s}"));
        }
        if let Some(w) = s.strip_prefix('@') {
            let (name, ty) = w
                .rsplit_once(':')
                .ok_or_else(|| format!("expected @name:type, got '{s}'"))?;
            let ty = tensor_type(ty)?;
            if let Some(&n) = self.weights.get(name) {
                if self.g.ty(n) != &ty {
                    return Err(format!("weight @{name} with two types"));
                }
                return Ok(n);
            }
            let n = self.g.add_const(name, weight_of(name, &ty)?);
            self.weights.insert(name.to_string(), n);
            return Ok(n);
        }
        let value = self.constant(s)?;
        self.consts += 1;
        Ok(self.g.add_const(&format!("c{}", self.consts), value))
    }

    /// A written-out constant: `v:dtype` or `[v,...]:dtype[shape]`.
    fn constant(&self, s: &str) -> PResult<Tensor> {
        let (vals, ty) = s
            .rsplit_once("]:")
            .map(|(v, t)| (v.strip_prefix('[').unwrap_or(v), t))
            .filter(|(_, t)| t.contains('['))
            .map(|(v, t)| (v, Some(t)))
            .unwrap_or((s, None));
        match ty {
            Some(t) => {
                let ty = tensor_type(t)?;
                let vals: Vec<&str> = if vals.is_empty() {
                    vec![]
                } else {
                    vals.split(',').collect()
                };
                tensor_of(ty.dtype, static_shape(&ty)?, &vals)
            }
            None => {
                let (v, d) = s
                    .rsplit_once(':')
                    .ok_or_else(|| format!("expected an operand, got '{s}'"))?;
                tensor_of(dtype(d)?, vec![], &[v])
            }
        }
    }

    fn node(&mut self, t: &str) -> PResult<()> {
        let t = match t.find("  #") {
            Some(i) => &t[..i],
            None => t,
        };
        let mut c = Cur::new(t);
        c.expect("%")?;
        let id = format!("%{}", c.name()?);
        c.expect(":")?;
        let ty = tensor_type(c.until(&[' ']))?;
        c.ws();
        c.expect("=")?;
        c.ws();
        let mnemonic = c.name()?;
        c.expect("(")?;
        let mut operands = Vec::new();
        loop {
            c.ws();
            if c.eat(")") {
                break;
            }
            let a = c.until(&[',', ')']);
            operands.push(self.operand(a.trim())?);
            c.eat(",");
            if c.peek().is_none() {
                return Err("unclosed '('".into());
            }
        }
        let op = op_of(mnemonic, Attrs::parse(c.rest()), operands.len())?;
        let n = self
            .g
            .add(op, &operands, &id)
            .map_err(|e| format!("{mnemonic}: {e}"))?;
        if self.g.ty(n) != &ty {
            return Err(format!(
                "{id} is written {ty}, but its operands give {}",
                self.g.ty(n)
            ));
        }
        if self.values.insert(id.clone(), n).is_some() {
            return Err(format!("{id} defined twice"));
        }
        Ok(())
    }
}

/// The op a mnemonic and its attributes name (`arity` tells the dynamic and static forms of
/// `reshape`, `expand` and `slice` apart where the attributes do not).
fn op_of(m: &str, mut a: Attrs, arity: usize) -> PResult<Op> {
    let gelu = |s: &str| match s {
        "erf" => Ok(GeluApprox::Erf),
        "tanh" => Ok(GeluApprox::Tanh),
        _ => Err(format!("unknown GELU approximation '{s}'")),
    };
    let op = if let Some(&(_, u)) = UNARY.iter().find(|(n, _)| *n == m) {
        Op::Unary(u)
    } else if let Some(&(_, b)) = BINARY.iter().find(|(n, _)| *n == m) {
        Op::Binary(b)
    } else {
        match m {
            "where" => Op::Where,
            "cast" => Op::Cast {
                to: dtype(&a.need("to")?)?,
            },
            "shape" => Op::Shape {
                start: a
                    .take("start")
                    .map_or(Ok(0), |v| v.parse())
                    .map_err(|_| "start")?,
                end: a
                    .take("end")
                    .map(|v| v.parse())
                    .transpose()
                    .map_err(|_| "end")?,
            },
            "reshape" if a.has("shape") => Op::ReshapeTo {
                shape: dims(&a.need("shape")?)?,
            },
            "reshape" => Op::Reshape {
                allowzero: a.flag("allowzero"),
            },
            "expand" if a.has("shape") || arity == 1 => Op::ExpandTo {
                shape: dims(&a.need("shape")?)?,
            },
            "expand" => Op::Expand,
            "constant_of_shape" => Op::ConstantOfShape {
                value: Parser::default().constant(&a.need("value")?)?,
            },
            "range" => Op::Range,
            "slice" if a.has("axes") || arity == 1 => Op::SliceTo {
                axes: ints(&a.need("axes")?)?
                    .into_iter()
                    .map(|x| x as usize)
                    .collect(),
                starts: dims(&a.need("starts")?)?,
                ends: dims(&a.need("ends")?)?,
            },
            "slice" => Op::Slice,
            "unsqueeze" => Op::Unsqueeze {
                axes: ints(&a.need("axes")?)?,
            },
            "squeeze" => Op::Squeeze {
                axes: ints(&a.need("axes")?)?,
            },
            "concat" => Op::Concat {
                axis: a.num("axis")?,
            },
            "gather" => Op::Gather {
                axis: a.num("axis")?,
            },
            "gather_elements" => Op::GatherElements {
                axis: a.num("axis")?,
            },
            "gather_nd" => Op::GatherNd {
                batch_dims: a.num("batch_dims")?,
            },
            "flatten" => Op::Flatten {
                axis: a.num("axis")?,
            },
            "softmax" => Op::Softmax {
                axis: a.num("axis")?,
            },
            "cumsum" => Op::CumSum {
                axis: a.num("axis")?,
                exclusive: a.flag("exclusive"),
                reverse: a.flag("reverse"),
            },
            "transpose" => Op::Transpose {
                perm: ints(&a.need("perm")?)?
                    .into_iter()
                    .map(|x| x as usize)
                    .collect(),
            },
            "matmul" => Op::MatMul,
            "gemm" => Op::Gemm {
                alpha: a
                    .take("alpha")
                    .map_or(Ok(1.0), |v| v.parse())
                    .map_err(|_| "alpha")?,
                beta: a
                    .take("beta")
                    .map_or(Ok(1.0), |v| v.parse())
                    .map_err(|_| "beta")?,
                trans_a: a.flag("trans_a"),
                trans_b: a.flag("trans_b"),
            },
            "reduce_mean" | "reduce_sum" | "reduce_max" => Op::Reduce {
                kind: match m {
                    "reduce_mean" => ReduceKind::Mean,
                    "reduce_sum" => ReduceKind::Sum,
                    _ => ReduceKind::Max,
                },
                axes: ints(&a.need("axes")?)?,
                keepdims: a.flag("keepdims"),
            },
            "layer_normalization" => Op::LayerNormalization {
                axis: a.num("axis")?,
                epsilon: a.num("eps")?,
            },
            "fill" => Op::Fill {
                shape: dims(&a.need("shape")?)?,
                value: Parser::default().constant(&a.need("value")?)?,
            },
            "arange" => Op::Arange {
                dtype: dtype(&a.word()?)?,
                start: a.num("start")?,
                step: a.num("step")?,
                len: dim(&a.need("len")?)?,
            },
            "embedding" => Op::Embedding {
                positions: positions(&a.need("positions")?)?,
                types: match a.need("types")?.as_str() {
                    "input" => TokenTypes::Input,
                    "zero" => TokenTypes::Zero,
                    "absent" => TokenTypes::Absent,
                    t => return Err(format!("unknown token types '{t}'")),
                },
                sum_qdq: a.take("qdq_word_type").map(|v| v.parse()).transpose()?,
            },
            "layer_norm" => Op::LayerNorm { eps: a.num("eps")? },
            "linear" => Op::Linear,
            "dequantize_rows" => Op::DequantizeRows,
            "fused_linear" => Op::FusedLinear {
                act: fused_act(a.take("act"))?,
                residual: a.flag("residual"),
            },
            "qlinear" => Op::QLinear {
                act: fused_act(a.take("act"))?,
                residual: a.flag("residual"),
                abits: a.num("abits")?,
                smooth: a.flag("smooth"),
            },
            "gelu" => Op::Gelu {
                approx: gelu(&a.need("approx")?)?,
            },
            "attention" => Op::Attention {
                heads: a.num("heads")?,
                scale: a.num("scale")?,
                quant: {
                    let mut q = AttnQuant::default();
                    for (name, p) in [
                        ("qdq_scores", &mut q.scores),
                        ("qdq_scaled", &mut q.scaled),
                        ("qdq_masked", &mut q.masked),
                        ("qdq_probs", &mut q.probs),
                    ] {
                        *p = a.take(name).map(|v| v.parse()).transpose()?;
                    }
                    q
                },
            },
            "qdq" => Op::Qdq(a.need("q")?.parse()?),
            "qkv_attention" => Op::QkvAttention {
                heads: a.num("heads")?,
                scale: a.num("scale")?,
                qk: a.num("qk")?,
            },
            "mean_pool" => Op::MeanPool,
            "max_pool" => Op::MaxPool,
            "pool" => {
                let name = a.need("mode")?;
                Op::Pool {
                    mode: PoolMode::ALL
                        .into_iter()
                        .find(|m| m.name() == name)
                        .ok_or_else(|| format!("unknown pooling mode '{name}'"))?,
                }
            }
            "l2_normalize" => Op::L2Normalize,
            "dynamic_quantize" => Op::DynamicQuantize {
                part: match a.need("part")?.as_str() {
                    "centered" => QuantPart::Centered,
                    "scale" => QuantPart::Scale,
                    p => return Err(format!("unknown part '{p}'")),
                },
            },
            _ => return Err(format!("unknown op '{m}'")),
        }
    };
    a.done().map(|_| op).map_err(|e| format!("{m}: {e}"))
}

fn fused_act(s: Option<String>) -> PResult<Option<FusedAct>> {
    Ok(match s.as_deref() {
        None => None,
        Some("gelu_erf") => Some(FusedAct::Gelu(GeluApprox::Erf)),
        Some("gelu_tanh") => Some(FusedAct::Gelu(GeluApprox::Tanh)),
        Some("tanh") => Some(FusedAct::Tanh),
        Some("relu") => Some(FusedAct::Relu),
        Some(x) => return Err(format!("unknown activation '{x}'")),
    })
}

fn positions(s: &str) -> PResult<Positions> {
    let num = |p: &str, key: &str| -> PResult<i64> {
        p.strip_prefix(key)
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("bad positions '{s}'"))
    };
    if s.starts_with("arange(") {
        Ok(Positions::Arange {
            offset: num(s, "arange(offset=")?,
        })
    } else {
        Ok(Positions::PaddingAware {
            pad: num(s, "padding_aware(pad=")?,
        })
    }
}

//! ONNX import: decodes a model file and builds the IR op for op, keeping the op soup of the
//! export as it is (raising is a pass). Weights come from `raw_data`, the typed fields or
//! external data files. Any op outside the supported set is an error naming the node.

mod compose;
mod contrib;
pub mod proto;
mod quant;
mod tensor;

use bytes::Bytes;
use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::ImportError;
use bertc_ir::{BinaryOp, DType, Dim, Graph, NodeId, Op, ReduceKind, Tensor, TensorType, UnaryOp};
pub use contrib::{CONTRIB_DOMAIN, CONTRIB_OPS};
use proto::{AttributeProto, NodeProto, TensorProto};
pub use quant::{interpreted_only_node, INTERPRETED_ONLY_OPS, QUANT_CONTRIB_OPS, QUANT_OPS};
use tensor::decode_tensor;
pub use tensor::read_tensor_file;

/// Opset versions of the default domain that the importer accepts.
pub const OPSETS: std::ops::RangeInclusive<i64> = 11..=28;

/// The op types of the default domain the importer claims: any other is an `UnsupportedOp`
/// error naming the node. `tests/onnx_conformance.rs` runs the `onnx` package's backend node
/// tests of exactly these through the importer and the interpreter.
pub const OPS: &[&str] = &[
    "Abs",
    "Add",
    "And",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "CumSum",
    "Div",
    "Dropout",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gelu",
    "Gemm",
    "Greater",
    "GreaterOrEqual",
    "Identity",
    "LayerNormalization",
    "Less",
    "LessOrEqual",
    "Log",
    "LpNormalization",
    "MatMul",
    "Max",
    "Min",
    "Mul",
    "Neg",
    "Not",
    "Or",
    "Pow",
    "Range",
    "Reciprocal",
    "ReduceL2",
    "ReduceMax",
    "ReduceMean",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Round",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Where",
];

/// Imports an ONNX file.
pub fn import_file(path: &Path) -> Result<Graph, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    import_bytes(Bytes::from(bytes), path)
}

/// Imports an ONNX model from memory; `path` names it in errors and locates external data.
pub fn import_bytes(bytes: Bytes, path: &Path) -> Result<Graph, ImportError> {
    let file = path.to_path_buf();
    let model = proto::ModelProto::decode(bytes).map_err(|e| ImportError::Decode {
        file: file.clone(),
        msg: e.to_string(),
    })?;
    let model_err = |msg: String| ImportError::Model {
        file: file.clone(),
        msg,
    };
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| model_err("the model imports no opset of the default ONNX domain".into()))?;
    if !OPSETS.contains(&opset) {
        return Err(model_err(format!(
            "opset {opset} is not supported (supported: {} to {})",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    let graph = model
        .graph
        .ok_or_else(|| model_err("the model has no graph".into()))?;
    if graph.node.is_empty() {
        return Err(model_err("the graph has no nodes".into()));
    }
    let mut b = Builder {
        file: file.clone(),
        dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        g: Graph::new(),
        values: HashMap::new(),
        inits: HashMap::new(),
        opset,
    };
    for t in graph.initializer {
        b.inits.insert(t.name.clone(), t);
    }
    b.add_inputs(&graph.input)?;
    for node in &graph.node {
        b.add_node(node)?;
    }
    for o in &graph.output {
        let id = b.value(&o.name).map_err(|e| match e {
            ValueErr::Msg(m) if b.values.contains_key(&o.name) => {
                model_err(format!("graph output '{}' {m}", o.name))
            }
            ValueErr::Load(l) => l,
            _ => model_err(format!("graph output '{}' is produced by no node", o.name)),
        })?;
        b.g.outputs.push((o.name.clone(), id));
    }
    if b.g.outputs.is_empty() {
        return Err(model_err("the graph has no outputs".into()));
    }
    b.g.remove_dead();
    b.g.verify()
        .map_err(|source| ImportError::Ir { file, source })?;
    Ok(b.g)
}

enum Slot {
    Node(NodeId),
    /// A secondary output of a multi-output node, which bertc does not support.
    Unsupported(String),
}

struct Builder {
    file: PathBuf,
    dir: PathBuf,
    g: Graph,
    values: HashMap<String, Slot>,
    inits: HashMap<String, TensorProto>,
    opset: i64,
}

impl Builder {
    fn add_inputs(&mut self, inputs: &[proto::ValueInfoProto]) -> Result<(), ImportError> {
        let mut params: HashMap<String, Dim> = HashMap::new();
        for vi in inputs {
            if self.inits.contains_key(&vi.name) {
                continue;
            }
            let bad = |msg: String| ImportError::Model {
                file: self.file.clone(),
                msg: format!("input '{}': {msg}", vi.name),
            };
            let tt = vi
                .r#type
                .as_ref()
                .and_then(|t| t.tensor_type.as_ref())
                .ok_or_else(|| bad("not a tensor".into()))?;
            let dtype = DType::from_onnx(tt.elem_type)
                .ok_or_else(|| bad(format!("unsupported element type {}", tt.elem_type)))?;
            let dims = tt.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or(&[]);
            let mut shape = Vec::new();
            for (i, d) in dims.iter().enumerate() {
                let dim = match (&d.dim_param, d.dim_value) {
                    (Some(p), _) if !p.is_empty() => {
                        let sym = match i {
                            0 => Dim::BATCH,
                            1 => Dim::SEQ,
                            _ => return Err(bad(format!("symbolic dimension '{p}' at axis {i} (only batch and sequence may be symbolic)"))),
                        };
                        match params.insert(p.clone(), sym) {
                            Some(prev) if prev != sym => {
                                return Err(bad(format!(
                                    "symbolic dimension '{p}' used for both batch and sequence"
                                )))
                            }
                            _ => sym,
                        }
                    }
                    (_, Some(v)) if v > 0 => Dim::c(v),
                    _ => match i {
                        0 => Dim::BATCH,
                        1 => Dim::SEQ,
                        _ => return Err(bad(format!("axis {i} has no size"))),
                    },
                };
                shape.push(dim);
            }
            let id = self.g.add_input(&vi.name, TensorType::new(dtype, shape));
            self.values.insert(vi.name.clone(), Slot::Node(id));
        }
        Ok(())
    }

    /// The node that produces `name`, creating constant nodes for initializers on first use.
    fn value(&mut self, name: &str) -> Result<NodeId, ValueErr> {
        match self.values.get(name) {
            Some(Slot::Node(n)) => return Ok(*n),
            Some(Slot::Unsupported(node)) => {
                let msg =
                    format!("uses output '{name}' of node '{node}', which bertc does not support");
                return Err(ValueErr::Msg(msg));
            }
            None => {}
        }
        let t = self.inits.get(name).ok_or_else(|| {
            ValueErr::Msg(format!(
                "uses '{name}', which no node or initializer produces"
            ))
        })?;
        let tensor = self.tensor(t).map_err(ValueErr::Load)?;
        let id = self.g.add_const(name, tensor);
        self.values.insert(name.to_string(), Slot::Node(id));
        Ok(id)
    }

    /// A tensor of the file. Half-precision weights and constants are widened to f32 (exactly):
    /// bertc computes with them in f32, as ONNX Runtime does on CPUs for most ops of a float16
    /// graph (ORT's O4 files); a `Cast` to float16 still rounds.
    fn tensor(&self, t: &TensorProto) -> Result<Tensor, ImportError> {
        let t = decode_tensor(t, &self.file, &self.dir)?;
        Ok(match t.dtype {
            DType::F16 | DType::BF16 => Tensor::from_f32(t.shape.clone(), &t.to_f32_vec()),
            _ => t,
        })
    }

    fn add_node(&mut self, node: &NodeProto) -> Result<(), ImportError> {
        let name = if node.name.is_empty() {
            node.output.first().cloned().unwrap_or_default()
        } else {
            node.name.clone()
        };
        let op_type = node.op_type.as_str();
        let file = self.file.clone();
        let node_err = |msg: String| ImportError::Node {
            file: file.clone(),
            node: name.clone(),
            op: op_type.to_string(),
            msg,
        };
        let default_domain = node.domain.is_empty() || node.domain == "ai.onnx";
        let in_contrib = node.domain == CONTRIB_DOMAIN;
        let quant = (default_domain && QUANT_OPS.contains(&op_type))
            || (in_contrib && QUANT_CONTRIB_OPS.contains(&op_type));
        // ONNX's Gelu (opset 20) is composed as ORT's is
        let contrib = quant
            || (in_contrib && CONTRIB_OPS.contains(&op_type))
            || (default_domain && op_type == "Gelu");
        if !(default_domain || contrib) {
            return Err(ImportError::UnsupportedOp {
                file: self.file.clone(),
                node: name,
                op: format!("{}::{}", node.domain, op_type),
            });
        }
        let out_name = node
            .output
            .first()
            .cloned()
            .ok_or_else(|| node_err("the node has no output".into()))?;
        // operands; empty names are absent optional inputs (only trailing ones are allowed,
        // but for Clip, whose min may be absent before its max)
        let mut present: Vec<Option<NodeId>> = Vec::new();
        for i in &node.input {
            if i.is_empty() {
                present.push(None);
                continue;
            }
            if present.iter().any(Option::is_none) && op_type != "Clip" && !contrib {
                return Err(node_err(
                    "an optional input is skipped before a given one".into(),
                ));
            }
            present.push(Some(self.value(i).map_err(|e| match e {
                ValueErr::Msg(m) => node_err(m),
                ValueErr::Load(l) => l,
            })?));
        }
        if contrib {
            let outs = if quant {
                self.add_quant(node, &name, present)?
            } else {
                self.add_contrib(node, &name, present)?
            };
            for (i, o) in node
                .output
                .iter()
                .enumerate()
                .filter(|(_, o)| !o.is_empty())
            {
                let slot = match outs.get(i).copied().flatten() {
                    Some(id) => Slot::Node(id),
                    None => Slot::Unsupported(name.clone()),
                };
                self.values.insert(o.clone(), slot);
            }
            return Ok(());
        }
        let operands: Vec<NodeId> = present.iter().flatten().copied().collect();
        let attrs = Attrs(&node.attribute);
        let add = |b: &mut Self, op: Op, ins: &[NodeId], name: &str| {
            b.g.add(op, ins, name).map_err(|e| match e {
                bertc_ir::IrError::Type { msg, .. } => node_err(msg),
                other => node_err(other.to_string()),
            })
        };
        let id = match op_type {
            "Clip" => {
                let x = present
                    .first()
                    .copied()
                    .flatten()
                    .ok_or_else(|| node_err("no operand".into()))?;
                let bound = |b: &mut Self, i: usize, attr: &str| -> Option<NodeId> {
                    if b.opset < 11 {
                        let v = attrs.float(attr)?;
                        Some(b.g.add_const(
                            &format!("{out_name}.{attr}"),
                            Tensor::from_f32(vec![], &[v]),
                        ))
                    } else {
                        present.get(i).copied().flatten()
                    }
                };
                let (lo, hi) = (bound(self, 1, "min"), bound(self, 2, "max"));
                let mut v = x;
                if let Some(lo) = lo {
                    v = add(
                        self,
                        Op::Binary(BinaryOp::Max),
                        &[v, lo],
                        &format!("{out_name}.lo"),
                    )?;
                }
                if let Some(hi) = hi {
                    v = add(self, Op::Binary(BinaryOp::Min), &[v, hi], &out_name)?;
                }
                v
            }
            "ReduceL2" | "LpNormalization" => {
                // the L2 norm as the ops it is made of: sqrt(sum(x * x))
                let x = *operands
                    .first()
                    .ok_or_else(|| node_err("no operand".into()))?;
                let sq = add(
                    self,
                    Op::Binary(BinaryOp::Mul),
                    &[x, x],
                    &format!("{out_name}.sq"),
                )?;
                let (reduce, ins) = if op_type == "ReduceL2" {
                    let mut ins = operands.clone();
                    ins[0] = sq;
                    self.op_of("ReduceSum", &attrs, ins)
                } else {
                    if attrs.int("p").unwrap_or(2) != 2 {
                        return Err(node_err("only p = 2 is supported".into()));
                    }
                    Ok((
                        Op::Reduce {
                            kind: ReduceKind::Sum,
                            axes: vec![attrs.int("axis").unwrap_or(-1)],
                            keepdims: true,
                        },
                        vec![sq],
                    ))
                }
                .map_err(|e| match e {
                    OpErr::Unsupported => node_err("unsupported".into()),
                    OpErr::Bad(m) => node_err(m),
                })?;
                let sum = add(self, reduce, &ins, &format!("{out_name}.sum"))?;
                if op_type == "ReduceL2" {
                    add(self, Op::Unary(UnaryOp::Sqrt), &[sum], &out_name)?
                } else {
                    // a zero vector stays zero (ONNX's definition): divide by at least the
                    // least normal float
                    let norm = add(
                        self,
                        Op::Unary(UnaryOp::Sqrt),
                        &[sum],
                        &format!("{out_name}.norm"),
                    )?;
                    let tiny = self.g.add_const(
                        &format!("{out_name}.tiny"),
                        Tensor::from_f32(vec![], &[f32::MIN_POSITIVE]),
                    );
                    let norm = add(
                        self,
                        Op::Binary(BinaryOp::Max),
                        &[norm, tiny],
                        &format!("{out_name}.clamped"),
                    )?;
                    add(self, Op::Binary(BinaryOp::Div), &[x, norm], &out_name)?
                }
            }
            "Dropout" if operands.len() > 2 => {
                // training_mode: inference only, so it must be a constant false
                let training = self
                    .g
                    .const_value(operands[2])
                    .map(|t| t.to_i64_vec().iter().any(|&v| v != 0));
                if training != Some(false) {
                    return Err(node_err(
                        "Dropout in training mode (or with a training_mode input that is not a constant false) is not supported: bertc compiles inference".into(),
                    ));
                }
                operands[0]
            }
            "Identity" | "Dropout" => *operands
                .first()
                .ok_or_else(|| node_err("no operand".into()))?,
            "Constant" => {
                let t = constant_value(&attrs).map_err(&node_err)?;
                let t = self.tensor(&t)?;
                self.g.add_const(&out_name, t)
            }
            _ => {
                let (op, operands) =
                    self.op_of(op_type, &attrs, operands).map_err(|e| match e {
                        OpErr::Unsupported => ImportError::UnsupportedOp {
                            file: self.file.clone(),
                            node: name.clone(),
                            op: op_type.to_string(),
                        },
                        OpErr::Bad(m) => node_err(m),
                    })?;
                self.g.add(op, &operands, &out_name).map_err(|e| match e {
                    bertc_ir::IrError::Type { msg, .. } => node_err(msg),
                    other => node_err(other.to_string()),
                })?
            }
        };
        self.values.insert(out_name, Slot::Node(id));
        for extra in node.output.iter().skip(1).filter(|o| !o.is_empty()) {
            self.values
                .insert(extra.clone(), Slot::Unsupported(name.clone()));
        }
        Ok(())
    }

    /// Values of a constant operand (shape or axes inputs folded into attributes).
    fn const_ints(&self, n: NodeId, what: &str) -> Result<Vec<i64>, OpErr> {
        self.g
            .const_value(n)
            .filter(|t| t.dtype.is_int())
            .map(|t| t.to_i64_vec())
            .ok_or_else(|| OpErr::Bad(format!("the {what} input must be an integer constant")))
    }

    fn op_of(
        &self,
        op_type: &str,
        a: &Attrs,
        mut ins: Vec<NodeId>,
    ) -> Result<(Op, Vec<NodeId>), OpErr> {
        let unary = |u| Ok((Op::Unary(u), ins.clone()));
        let binary = |b| Ok((Op::Binary(b), ins.clone()));
        match op_type {
            "Neg" => unary(UnaryOp::Neg),
            "Abs" => unary(UnaryOp::Abs),
            "Sqrt" => unary(UnaryOp::Sqrt),
            "Reciprocal" => unary(UnaryOp::Reciprocal),
            "Exp" => unary(UnaryOp::Exp),
            "Log" => unary(UnaryOp::Log),
            "Erf" => unary(UnaryOp::Erf),
            "Tanh" => unary(UnaryOp::Tanh),
            "Sigmoid" => unary(UnaryOp::Sigmoid),
            "Relu" => unary(UnaryOp::Relu),
            "Round" => unary(UnaryOp::Round),
            "Not" => unary(UnaryOp::Not),
            "Add" => binary(BinaryOp::Add),
            "Sub" => binary(BinaryOp::Sub),
            "Mul" => binary(BinaryOp::Mul),
            "Div" => binary(BinaryOp::Div),
            "Pow" => binary(BinaryOp::Pow),
            "Equal" => binary(BinaryOp::Equal),
            "Less" => binary(BinaryOp::Less),
            "LessOrEqual" => binary(BinaryOp::LessOrEqual),
            "Greater" => binary(BinaryOp::Greater),
            "GreaterOrEqual" => binary(BinaryOp::GreaterOrEqual),
            "And" => binary(BinaryOp::And),
            "Or" => binary(BinaryOp::Or),
            "Min" | "Max" if ins.len() == 2 => binary(if op_type == "Min" {
                BinaryOp::Min
            } else {
                BinaryOp::Max
            }),
            "Where" => Ok((Op::Where, ins)),
            "Cast" => {
                let to = a
                    .int("to")
                    .ok_or_else(|| OpErr::Bad("missing attribute 'to'".into()))?;
                let to = DType::from_onnx(to as i32)
                    .ok_or_else(|| OpErr::Bad(format!("unsupported cast target type {to}")))?;
                Ok((Op::Cast { to }, ins))
            }
            "Shape" => Ok((
                Op::Shape {
                    start: a.int("start").unwrap_or(0),
                    end: a.int("end"),
                },
                ins,
            )),
            "Reshape" => Ok((
                Op::Reshape {
                    allowzero: a.int("allowzero").unwrap_or(0) != 0,
                },
                ins,
            )),
            "Expand" => Ok((Op::Expand, ins)),
            "ConstantOfShape" => {
                let value = match a.get("value").and_then(|x| x.t.as_ref()) {
                    Some(t) => self.tensor(t).map_err(|e| OpErr::Bad(e.to_string()))?,
                    None => Tensor::from_f32(vec![1], &[0.0]),
                };
                if value.numel() != 1 {
                    return Err(OpErr::Bad(
                        "the value attribute must have one element".into(),
                    ));
                }
                let value = Tensor::new(value.dtype, vec![], value.data)
                    .ok_or_else(|| OpErr::Bad("bad value".into()))?;
                Ok((Op::ConstantOfShape { value }, ins))
            }
            "Range" => Ok((Op::Range, ins)),
            "Slice" => {
                if self.opset < 10 {
                    return Err(OpErr::Unsupported);
                }
                Ok((Op::Slice, ins))
            }
            "Unsqueeze" | "Squeeze" => {
                let axes = if ins.len() > 1 {
                    let axes = self.const_ints(ins[1], "axes")?;
                    ins.truncate(1);
                    axes
                } else {
                    a.ints("axes").unwrap_or_default()
                };
                if op_type == "Unsqueeze" {
                    if axes.is_empty() {
                        return Err(OpErr::Bad("unsqueeze needs axes".into()));
                    }
                    Ok((Op::Unsqueeze { axes }, ins))
                } else {
                    Ok((Op::Squeeze { axes }, ins))
                }
            }
            "Concat" => Ok((
                Op::Concat {
                    axis: a
                        .int("axis")
                        .ok_or_else(|| OpErr::Bad("missing attribute 'axis'".into()))?,
                },
                ins,
            )),
            "Gather" => Ok((
                Op::Gather {
                    axis: a.int("axis").unwrap_or(0),
                },
                ins,
            )),
            "GatherND" => {
                let b = a.int("batch_dims").unwrap_or(0);
                let batch_dims =
                    usize::try_from(b).map_err(|_| OpErr::Bad(format!("bad batch_dims {b}")))?;
                Ok((Op::GatherNd { batch_dims }, ins))
            }
            "GatherElements" => Ok((
                Op::GatherElements {
                    axis: a.int("axis").unwrap_or(0),
                },
                ins,
            )),
            "Transpose" => {
                let perm = a.ints("perm").unwrap_or_default();
                let perm = perm
                    .iter()
                    .map(|&p| {
                        usize::try_from(p).map_err(|_| OpErr::Bad(format!("bad perm {perm:?}")))
                    })
                    .collect::<Result<_, _>>()?;
                Ok((Op::Transpose { perm }, ins))
            }
            "Flatten" => Ok((
                Op::Flatten {
                    axis: a.int("axis").unwrap_or(1),
                },
                ins,
            )),
            "CumSum" => {
                if ins.len() != 2 {
                    return Err(OpErr::Bad("cumsum takes 2 inputs".into()));
                }
                let axis = self.const_ints(ins[1], "axis")?;
                let axis = *axis
                    .first()
                    .ok_or_else(|| OpErr::Bad("empty axis".into()))?;
                Ok((
                    Op::CumSum {
                        axis,
                        exclusive: a.int("exclusive").unwrap_or(0) != 0,
                        reverse: a.int("reverse").unwrap_or(0) != 0,
                    },
                    ins,
                ))
            }
            "MatMul" => Ok((Op::MatMul, ins)),
            "Gemm" => Ok((
                Op::Gemm {
                    alpha: a.float("alpha").unwrap_or(1.0),
                    beta: a.float("beta").unwrap_or(1.0),
                    trans_a: a.int("transA").unwrap_or(0) != 0,
                    trans_b: a.int("transB").unwrap_or(0) != 0,
                },
                ins,
            )),
            "Softmax" => {
                if self.opset < 13 {
                    // before opset 13 Softmax flattened the trailing axes: only the last axis agrees
                    let axis = a.int("axis").unwrap_or(1);
                    let rank = ins
                        .first()
                        .map(|&n| self.g.ty(n).rank() as i64)
                        .unwrap_or(0);
                    if axis != -1 && axis != rank - 1 {
                        return Err(OpErr::Bad(format!(
                            "opset {} softmax over axis {axis} of rank {rank} is not supported",
                            self.opset
                        )));
                    }
                    return Ok((Op::Softmax { axis: -1 }, ins));
                }
                Ok((
                    Op::Softmax {
                        axis: a.int("axis").unwrap_or(-1),
                    },
                    ins,
                ))
            }
            "ReduceMean" | "ReduceSum" | "ReduceMax" => {
                let kind = match op_type {
                    "ReduceMean" => ReduceKind::Mean,
                    "ReduceSum" => ReduceKind::Sum,
                    _ => ReduceKind::Max,
                };
                let axes = if ins.len() > 1 {
                    let axes = self.const_ints(ins[1], "axes")?;
                    ins.truncate(1);
                    axes
                } else {
                    a.ints("axes").unwrap_or_default()
                };
                if axes.is_empty() && a.int("noop_with_empty_axes").unwrap_or(0) != 0 {
                    return Err(OpErr::Bad("noop_with_empty_axes is not supported".into()));
                }
                Ok((
                    Op::Reduce {
                        kind,
                        axes,
                        keepdims: a.int("keepdims").unwrap_or(1) != 0,
                    },
                    ins,
                ))
            }
            "LayerNormalization" => {
                if a.int("stash_type").is_some_and(|s| s != 1) {
                    return Err(OpErr::Bad("only stash_type 1 (f32) is supported".into()));
                }
                Ok((
                    Op::LayerNormalization {
                        axis: a.int("axis").unwrap_or(-1),
                        epsilon: a.float("epsilon").unwrap_or(1e-5),
                    },
                    ins,
                ))
            }
            _ => Err(OpErr::Unsupported),
        }
    }
}

enum ValueErr {
    Msg(String),
    Load(ImportError),
}

enum OpErr {
    Unsupported,
    Bad(String),
}

struct Attrs<'a>(&'a [AttributeProto]);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.0.iter().find(|a| a.name == name)
    }
    fn int(&self, name: &str) -> Option<i64> {
        self.get(name).map(|a| a.i)
    }
    fn float(&self, name: &str) -> Option<f32> {
        self.get(name).map(|a| a.f)
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
}

fn constant_value(a: &Attrs) -> Result<TensorProto, String> {
    if let Some(t) = a.get("value").and_then(|x| x.t.clone()) {
        return Ok(t);
    }
    let mk = |dims: Vec<i64>, data_type: i32| TensorProto {
        dims,
        data_type,
        ..Default::default()
    };
    if let Some(x) = a.get("value_float") {
        return Ok(TensorProto {
            float_data: vec![x.f],
            ..mk(vec![], 1)
        });
    }
    if let Some(x) = a.get("value_floats") {
        return Ok(TensorProto {
            float_data: x.floats.clone(),
            ..mk(vec![x.floats.len() as i64], 1)
        });
    }
    if let Some(x) = a.get("value_int") {
        return Ok(TensorProto {
            int64_data: vec![x.i],
            ..mk(vec![], 7)
        });
    }
    if let Some(x) = a.get("value_ints") {
        return Ok(TensorProto {
            int64_data: x.ints.clone(),
            ..mk(vec![x.ints.len() as i64], 7)
        });
    }
    Err("constant has no supported value attribute".into())
}

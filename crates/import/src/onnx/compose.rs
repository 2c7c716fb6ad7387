//! `Composer`: builds the default-domain ops an ONNX node stands for (a contrib op, a
//! quantization op), naming the intermediate values after the node's first output and
//! reporting errors that name the node.

use bertc_ir::{BinaryOp, Dim, NodeId, Op, Tensor, UnaryOp};

use super::Builder;
use crate::ImportError;

/// One node being imported: names intermediate values after its first output and
/// reports errors naming it.
pub(super) struct Composer<'a> {
    pub(super) b: &'a mut Builder,
    pub(super) node: String,
    pub(super) op: String,
    pub(super) out: String,
    pub(super) ins: Vec<Option<NodeId>>,
}

impl Composer<'_> {
    pub(super) fn err(&self, msg: impl Into<String>) -> ImportError {
        ImportError::Node {
            file: self.b.file.clone(),
            node: self.node.clone(),
            op: self.op.clone(),
            msg: msg.into(),
        }
    }

    /// Operand `i`, if given.
    pub(super) fn opt(&self, i: usize) -> Option<NodeId> {
        self.ins.get(i).copied().flatten()
    }

    /// Operand `i`, which the op requires.
    pub(super) fn req(&self, i: usize, what: &str) -> Result<NodeId, ImportError> {
        self.opt(i)
            .ok_or_else(|| self.err(format!("input {i} ({what}) is required")))
    }

    /// Refuses a given operand that bertc does not implement.
    pub(super) fn absent(&self, i: usize, what: &str) -> Result<(), ImportError> {
        match self.opt(i) {
            Some(_) => Err(self.err(format!("input {i} ({what}) is not supported"))),
            None => Ok(()),
        }
    }

    pub(super) fn add(
        &mut self,
        op: Op,
        ins: &[NodeId],
        suffix: &str,
    ) -> Result<NodeId, ImportError> {
        let name = if suffix.is_empty() {
            self.out.clone()
        } else {
            format!("{}.{suffix}", self.out)
        };
        self.b.g.add(op, ins, &name).map_err(|e| match e {
            bertc_ir::IrError::Type { msg, .. } => self.err(msg),
            other => self.err(other.to_string()),
        })
    }

    pub(super) fn bin(
        &mut self,
        op: BinaryOp,
        a: NodeId,
        b: NodeId,
        s: &str,
    ) -> Result<NodeId, ImportError> {
        self.add(Op::Binary(op), &[a, b], s)
    }

    pub(super) fn un(&mut self, op: UnaryOp, a: NodeId, s: &str) -> Result<NodeId, ImportError> {
        self.add(Op::Unary(op), &[a], s)
    }

    pub(super) fn scalar(&mut self, v: f32, s: &str) -> NodeId {
        let name = format!("{}.{s}", self.out);
        self.b.g.add_const(&name, Tensor::from_f32(vec![], &[v]))
    }

    pub(super) fn dims(&self, n: NodeId) -> Vec<Dim> {
        self.b.g.ty(n).shape.clone()
    }

    /// `x + bias` when the bias is given.
    pub(super) fn plus(
        &mut self,
        x: NodeId,
        bias: Option<NodeId>,
        s: &str,
    ) -> Result<NodeId, ImportError> {
        match bias {
            Some(b) => self.bin(BinaryOp::Add, x, b, s),
            None => Ok(x),
        }
    }

    /// Peels integer casts off `n` (an `int64 → int32` cast of a mask or of ids).
    pub(super) fn uncast(&self, mut n: NodeId) -> NodeId {
        let g = &self.b.g;
        while matches!(g.op(n), Op::Cast { to } if to.is_int())
            && g.ty(g.operands(n)[0]).dtype.is_int()
        {
            n = g.operands(n)[0];
        }
        n
    }
}

impl<'a> Composer<'a> {
    pub(super) fn new(
        b: &'a mut Builder,
        node: &super::proto::NodeProto,
        name: &str,
        ins: Vec<Option<NodeId>>,
    ) -> Self {
        let out = node.output.first().cloned().unwrap_or_else(|| name.into());
        Composer {
            b,
            node: name.into(),
            op: node.op_type.clone(),
            out,
            ins,
        }
    }
}

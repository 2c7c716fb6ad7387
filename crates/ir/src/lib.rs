//! The IR: a graph of typed tensor ops over symbolic shapes (`batch`, `seq`), with weights as
//! constants owned by the graph, a verifier and a stable text form with its parser.

mod graph;
mod infer;
mod op;
mod parse;
mod text;
mod types;

pub use graph::{Graph, Node, NodeId};
pub use infer::{broadcast, known_of_tensor, resolve_bounds, MAX_KNOWN};
pub use op::{
    qlinear_max_abits, AttnQuant, BinaryOp, FusedAct, GeluApprox, Op, OpFamily, PoolMode,
    Positions, Qdq, QuantPart, ReduceKind, TokenTypes, UnaryOp,
};
pub use text::fmt_f;
pub use types::{Binding, DType, Dim, Tensor, TensorType};

/// A malformed graph, or an op whose operands do not fit it.
#[derive(Debug, thiserror::Error)]
pub enum IrError {
    #[error("node '{node}' ({op}): {msg}")]
    Type {
        node: String,
        op: &'static str,
        msg: String,
    },
    #[error("invalid graph at node '{node}' ({op}): {msg}")]
    Verify {
        node: String,
        op: &'static str,
        msg: String,
    },
    #[error("invalid graph: it has a cycle")]
    Cycle,
    #[error("line {line}: {msg}")]
    Parse { line: usize, msg: String },
    #[error("the model has no output '{0}'")]
    NoOutput(String),
}

//! bertc's passes: small, named `Graph -> Graph` transforms, each reporting what it did.
//!
//! `canonicalize` is the pipeline every model goes through after import: constant folding,
//! static shapes, simplification, then the raising of ONNX op soup into encoder-level ops
//! (`layer_norm`, `gelu`, `linear`, `attention`, `embedding`) and canonical weight names. A
//! pass never changes the numbers the model computes beyond float rounding; raising checks what
//! it cannot see structurally (mask and position arithmetic) by evaluating it on probes
//! (`raise-quantized` says where it departs from that: a quantization range per sequence;
//! `raise-attention`, for a static QDQ file: the masked keys dropped).
//!
//! The exception is `prune`, structured pruning (ZipLM), which removes attention heads and FFN
//! neurons on purpose: it calibrates, builds every pruning level with its error, searches the
//! levels that meet a latency budget, and rewrites the graph with the `prune-structures` pass.

mod fold;
mod fuse;
mod names;
pub mod obs;
mod output;
mod pattern;
mod probe;
pub mod prune;
mod quantize;
pub mod quantize_calib;
mod raise_attention;
mod raise_embedding;
mod raise_gelu;
mod raise_layer_norm;
mod raise_linear;
mod raise_pooling;
mod raise_qdq;
mod raise_quantized;
mod shapes;
mod simplify;

use bertc_ir::Graph;
use std::fmt;

pub use output::{
    select_embedding, select_output, supported_outputs, OutputKind, Pool, Projection,
};
pub use quantize::{quantize_rows, ActBits, LinearChoice, QuantizeInt8};

/// What one pass did, in one line for the user-facing report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassReport {
    pub pass: &'static str,
    pub summary: String,
}

impl fmt::Display for PassReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pass, self.summary)
    }
}

/// A pass failed: the graph it produced (or was given) is invalid.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("pass {pass}: {source}")]
    Ir {
        pass: &'static str,
        source: bertc_ir::IrError,
    },
    #[error("{0}")]
    Output(String),
}

/// A named transform of the graph.
pub trait Pass {
    fn name(&self) -> &'static str;
    /// Runs the pass; returns a one-line summary of what changed.
    fn run(&self, g: &mut Graph) -> Result<String, PassError>;
}

/// The passes of `canonicalize`, in order.
pub fn canonical_pipeline() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(fold::FoldConstants),
        Box::new(shapes::StaticShapes),
        Box::new(simplify::Simplify),
        Box::new(fold::FoldConstants),
        Box::new(raise_quantized::RaiseQuantized),
        Box::new(raise_qdq::RaiseQdq),
        Box::new(raise_layer_norm::RaiseLayerNorm),
        Box::new(raise_gelu::RaiseGelu),
        Box::new(raise_linear::RaiseLinear),
        Box::new(raise_attention::RaiseAttention),
        Box::new(raise_embedding::RaiseEmbedding),
        Box::new(raise_pooling::RaisePooling),
        Box::new(simplify::Simplify),
        Box::new(names::NameWeights),
    ]
}

/// Runs one pass, verifies the result and removes dead nodes.
pub fn run_pass(p: &dyn Pass, g: &mut Graph) -> Result<PassReport, PassError> {
    let summary = p.run(g)?;
    g.remove_dead();
    g.verify().map_err(|source| PassError::Ir {
        pass: p.name(),
        source,
    })?;
    Ok(PassReport {
        pass: p.name(),
        summary,
    })
}

/// Canonicalises and raises an imported graph (see the crate documentation).
pub fn canonicalize(g: &mut Graph) -> Result<Vec<PassReport>, PassError> {
    canonical_pipeline()
        .iter()
        .map(|p| run_pass(p.as_ref(), g))
        .collect()
}

/// The passes of `optimize`, in order.
pub fn optimize_pipeline() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(fuse::FuseQkv),
        Box::new(fuse::FuseLinearAct),
        Box::new(fuse::FuseResidual),
    ]
}

/// Fuses for code generation (after `canonicalize` and the output selection): the q, k and v
/// projections into one linear, activations and residual adds into the linears' epilogues.
pub fn optimize(g: &mut Graph) -> Result<Vec<PassReport>, PassError> {
    optimize_pipeline()
        .iter()
        .map(|p| run_pass(p.as_ref(), g))
        .collect()
}

/// Runs a single pass by name.
pub fn pass_by_name(name: &str) -> Option<Box<dyn Pass>> {
    let quantize: Box<dyn Pass> = Box::new(QuantizeInt8::default());
    canonical_pipeline()
        .into_iter()
        .chain(optimize_pipeline())
        .chain([quantize])
        .find(|p| p.name() == name)
}

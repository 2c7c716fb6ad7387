//! `select-output`: keeps the one output a compiled artifact returns, adding the pooling it
//! needs: the last hidden state, the pooler output, the masked mean or maximum of the last
//! hidden state, the first (CLS) token's hidden state, the classifier logits, or a
//! sentence-transformers embedding (a pooling, L2-normalized or not).

use bertc_ir::{Graph, NodeId, Op, PoolMode, Tensor};
use std::fmt;
use std::str::FromStr;

use crate::PassError;

/// What an artifact outputs, chosen at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    LastHiddenState,
    Pooler,
    Mean,
    Cls,
    Max,
    Logits,
    /// The model folder's sentence-transformers pipeline (`select_embedding`).
    Embedding,
}

impl OutputKind {
    pub const ALL: [OutputKind; 7] = [
        OutputKind::LastHiddenState,
        OutputKind::Pooler,
        OutputKind::Mean,
        OutputKind::Cls,
        OutputKind::Max,
        OutputKind::Logits,
        OutputKind::Embedding,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OutputKind::LastHiddenState => "last_hidden_state",
            OutputKind::Pooler => "pooler",
            OutputKind::Mean => "mean",
            OutputKind::Cls => "cls",
            OutputKind::Max => "max",
            OutputKind::Logits => "logits",
            OutputKind::Embedding => "embedding",
        }
    }
}

impl fmt::Display for OutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OutputKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        OutputKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown output kind '{s}' (expected one of: last_hidden_state, pooler, mean, cls, max, logits, embedding)"))
    }
}

fn output(g: &Graph, name: &str) -> Option<NodeId> {
    g.outputs.iter().find(|o| o.0 == name).map(|o| o.1)
}

/// The per-token hidden state output: `last_hidden_state`, or the only rank-3 output.
fn hidden(g: &Graph) -> Result<NodeId, PassError> {
    if let Some(n) = output(g, "last_hidden_state") {
        return Ok(n);
    }
    let r3: Vec<NodeId> = g
        .outputs
        .iter()
        .map(|o| o.1)
        .filter(|&n| g.ty(n).rank() == 3)
        .collect();
    match r3.as_slice() {
        [n] => Ok(*n),
        _ => Err(PassError::Output(
            "the model has no last_hidden_state output".into(),
        )),
    }
}

/// Replaces the graph's outputs by the one `kind` asks for, named after it.
pub fn select_output(g: &mut Graph, kind: OutputKind) -> Result<(), PassError> {
    let ir = |source| PassError::Ir {
        pass: "select-output",
        source,
    };
    let n = match kind {
        OutputKind::LastHiddenState => hidden(g)?,
        OutputKind::Pooler => output(g, "pooler_output").ok_or_else(|| PassError::Output("the model has no pooler (output kind 'pooler' needs one)".into()))?,
        OutputKind::Logits => output(g, "logits").ok_or_else(|| PassError::Output("the model has no classifier (output kind 'logits' needs a sequence classification model)".into()))?,
        OutputKind::Mean => {
            let h = hidden(g)?;
            pool_of(g, h, Pool::Mean)?
        }
        OutputKind::Cls => {
            let h = hidden(g)?;
            pool_of(g, h, Pool::Cls)?
        }
        OutputKind::Max => {
            let h = hidden(g)?;
            pool_of(g, h, Pool::Max)?
        }
        // an export with its pooling in the graph names the result so
        OutputKind::Embedding => output(g, "sentence_embedding")
            .filter(|&n| g.ty(n).rank() == 2)
            .ok_or_else(|| PassError::Output(
                "output kind 'embedding' is a sentence-transformers pipeline: the model has no modules.json beside it and no sentence_embedding output".into(),
            ))?,
    };
    g.outputs = vec![(kind.name().to_string(), n)];
    g.remove_dead();
    g.verify().map_err(ir)?;
    Ok(())
}

/// `pool` of the hidden state `h` (a node named as the pooling), with the attention mask
/// where the pooling needs it.
fn pool_of(g: &mut Graph, h: NodeId, pool: Pool) -> Result<NodeId, PassError> {
    let name = pool.to_string();
    let mask = |g: &Graph| {
        g.input_named("attention_mask").ok_or_else(|| {
            PassError::Output(format!(
                "the model has no attention_mask input ({name} pooling needs it)"
            ))
        })
    };
    let p = match pool {
        Pool::Cls => {
            let zero = g.add_const("cls_index", Tensor::from_i64(vec![], &[0]));
            g.add(Op::Gather { axis: 1 }, &[h, zero], &name)
        }
        Pool::Mean => {
            let m = mask(g)?;
            g.add(Op::MeanPool, &[h, m], &name)
        }
        Pool::Max => {
            let m = mask(g)?;
            g.add(Op::MaxPool, &[h, m], &name)
        }
        Pool::Mode(mode) => {
            let m = mask(g)?;
            g.add(Op::Pool { mode }, &[h, m], &name)
        }
    };
    p.map_err(|source| PassError::Ir {
        pass: "select-output",
        source,
    })
}

/// `select_output(g, kind)`, and the value it selected.
fn select(g: &mut Graph, kind: OutputKind) -> Result<NodeId, PassError> {
    select_output(g, kind)?;
    Ok(g.outputs[0].1)
}

/// A projection of the pooled vector (a sentence-transformers `Dense` module):
/// `act(x @ weightᵀ + bias)`, `weight` f32 `[out, in]`, `act` a unary op (`tanh`, `relu`,
/// `gelu`) or none.
#[derive(Clone, Debug)]
pub struct Projection {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub act: Option<Op>,
}

/// How a sentence-transformers embedding pools the token rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Mean,
    Cls,
    Max,
    Mode(PoolMode),
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pool::Mean => "mean",
            Pool::Cls => "cls",
            Pool::Max => "max",
            Pool::Mode(m) => m.name(),
        })
    }
}

/// Selects a sentence-transformers embedding: the poolings `pools` (several are concatenated
/// in order, as sentence-transformers does), the projections `dense` in order, then an L2
/// normalization when `normalize`; the output is named `embedding`.
pub fn select_embedding(
    g: &mut Graph,
    pools: &[Pool],
    dense: &[Projection],
    normalize: bool,
) -> Result<(), PassError> {
    let ir = |source| PassError::Ir {
        pass: "select-output",
        source,
    };
    // one pooling as its output kind selects it; several concatenated, in order, over the
    // same hidden state
    let mut out = match pools {
        [] => return Err(PassError::Output("an embedding needs a pooling".into())),
        [Pool::Mean] => select(g, OutputKind::Mean)?,
        [Pool::Cls] => select(g, OutputKind::Cls)?,
        [Pool::Max] => select(g, OutputKind::Max)?,
        _ => {
            let h = select(g, OutputKind::LastHiddenState)?;
            let parts = pools
                .iter()
                .map(|&p| pool_of(g, h, p))
                .collect::<Result<Vec<_>, _>>()?;
            let mut acc = parts[0];
            for &p in &parts[1..] {
                acc = g
                    .add(Op::Concat { axis: 1 }, &[acc, p], "pooling")
                    .map_err(ir)?;
            }
            acc
        }
    };
    for (i, d) in dense.iter().enumerate() {
        let w = g.add_const(&format!("dense{i}.weight"), d.weight.clone());
        let mut ins = vec![out, w];
        if let Some(b) = &d.bias {
            ins.push(g.add_const(&format!("dense{i}.bias"), b.clone()));
        }
        out = g.add(Op::Linear, &ins, &format!("dense{i}")).map_err(ir)?;
        if let Some(act) = &d.act {
            out = g
                .add(act.clone(), &[out], &format!("dense{i}.act"))
                .map_err(ir)?;
        }
    }
    if normalize {
        out = g.add(Op::L2Normalize, &[out], "embedding").map_err(ir)?;
    }
    g.outputs = vec![(OutputKind::Embedding.name().to_string(), out)];
    Ok(())
}

/// The output kinds a graph supports.
pub fn supported_outputs(g: &Graph) -> Vec<OutputKind> {
    OutputKind::ALL
        .into_iter()
        .filter(|&k| {
            let mut c = g.clone();
            select_output(&mut c, k).is_ok()
        })
        .collect()
}

//! The reference interpreter: executes any IR, op soup or raised, in plain Rust. Clear over
//! fast: it is the oracle that passes and generated code are checked against. Floats are
//! computed in f32, integers in i64. The encoder-level ops that code generation implements
//! (`embedding`, `layer_norm`, `linear` and its fused and int8 forms, `gelu`, `tanh`,
//! attention, the poolings, `l2_normalize`) follow `bertc_numerics`' recipes, the kernels'
//! own order of operations, so that an artifact's results are the interpreter's bit for bit;
//! the ONNX-level ops of the op soup (which are raised before code generation) reduce in f64.

/// Defines `fn $name(args) -> R` that runs `$body_fn(args)` compiled for AVX2 and FMA when the
/// CPU has them (the same arithmetic in wider vectors, `mul_add` in one instruction), or as is. `$body_fn` should be
/// `#[inline(always)]` so that it is compiled into each copy. For the reference numerics of the
/// interpreter and the pruning passes; generated code selects its kernels by target instead.
#[macro_export]
macro_rules! avx2_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($p:ident: $t:ty),* $(,)?) $(-> $r:ty)? = $body_fn:path) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($p: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide($($p: $t),*) $(-> $r)? {
                    $body_fn($($p),*)
                }
                // SAFETY: the CPU has AVX2 and FMA.
                return unsafe { wide($($p),*) };
            }
            $body_fn($($p),*)
        }
    };
}

use std::collections::{HashMap, HashSet};

use bertc_ir::{Binding, Dim, Graph, NodeId, Op, OpFamily};

mod elementwise;
mod encoder;
mod linalg;
mod reduce;
mod shape;
mod value;

pub use linalg::quantize_row;
use value::R;
pub use value::{Data, InterpError, Value};

/// Executes one op on concrete operands.
pub fn eval_op(op: &Op, v: &[&Value], bind: &Binding) -> R<Value> {
    match op.family() {
        OpFamily::Leaf => match op {
            Op::Const { value, .. } => Ok(Value::from_tensor(value)),
            Op::Input { name } => Err(format!("input '{name}' was not provided")),
            _ => Err(format!("{} is not a leaf", op.mnemonic())),
        },
        OpFamily::Elementwise => elementwise::eval(op, v),
        OpFamily::Shape => shape::eval(op, v, bind),
        OpFamily::Linalg => linalg::eval(op, v),
        OpFamily::Reduce => reduce::eval(op, v),
        OpFamily::Encoder => encoder::eval(op, v),
    }
}

/// Binds `batch` and `seq` from the shapes of the provided inputs, checking every dimension.
pub fn bind_inputs(g: &Graph, feeds: &HashMap<NodeId, Value>) -> Result<Binding, InterpError> {
    let mut batch = None;
    let mut seq = None;
    for &i in &g.inputs {
        let node = g.node(i);
        let Some(v) = feeds.get(&i) else { continue };
        let bad = |msg: String| InterpError::Input {
            name: node.name.clone(),
            msg,
        };
        if v.shape.len() != node.ty.rank() {
            return Err(bad(format!(
                "expected {} but got shape {:?}",
                node.ty, v.shape
            )));
        }
        for (d, &actual) in node.ty.shape.iter().zip(&v.shape) {
            let slot = if *d == Dim::BATCH {
                &mut batch
            } else if *d == Dim::SEQ {
                &mut seq
            } else if d.as_const() == Some(actual as i64) {
                continue;
            } else {
                return Err(bad(format!(
                    "expected {} but got shape {:?}",
                    node.ty, v.shape
                )));
            };
            match slot {
                Some(prev) if *prev != actual => {
                    return Err(bad(format!(
                        "shape {:?} disagrees with the other inputs",
                        v.shape
                    )))
                }
                _ => *slot = Some(actual),
            }
        }
    }
    let b = Binding {
        batch: batch.unwrap_or(1),
        seq: seq.unwrap_or(1),
    };
    if let Some(max) = g.max_seq {
        if b.seq > max {
            return Err(InterpError::Input {
                name: "seq".into(),
                msg: format!(
                    "sequence length {} exceeds the model's maximum of {max} tokens",
                    b.seq
                ),
            });
        }
    }
    Ok(b)
}

/// Evaluates `targets` given values for some nodes (graph inputs, or any node to cut the
/// graph at).
pub fn eval_nodes(
    g: &Graph,
    targets: &[NodeId],
    feeds: HashMap<NodeId, Value>,
    bind: &Binding,
) -> Result<Vec<Value>, InterpError> {
    eval_nodes_with(g, targets, feeds, bind, &HashMap::new())
}

/// The values of every constant of `g`, converted once for repeated evaluation
/// (`eval_nodes_with`).
pub fn const_values(g: &Graph) -> HashMap<NodeId, Value> {
    g.node_ids()
        .into_iter()
        .filter_map(|n| g.const_value(n).map(|t| (n, Value::from_tensor(t))))
        .collect()
}

/// `eval_nodes` reading constants from `consts` (see `const_values`) instead of converting
/// them on every call.
pub fn eval_nodes_with(
    g: &Graph,
    targets: &[NodeId],
    mut feeds: HashMap<NodeId, Value>,
    bind: &Binding,
    consts: &HashMap<NodeId, Value>,
) -> Result<Vec<Value>, InterpError> {
    // the ancestors of the targets, in topological order
    let mut need: HashSet<NodeId> = HashSet::new();
    let mut stack: Vec<NodeId> = targets.to_vec();
    while let Some(n) = stack.pop() {
        if need.insert(n) && !feeds.contains_key(&n) {
            stack.extend(g.operands(n));
        }
    }
    let order = topo(g, &need);
    let mut last_use: HashMap<NodeId, usize> = HashMap::new();
    for (i, &n) in order.iter().enumerate() {
        if !feeds.contains_key(&n) {
            for o in g.operands(n) {
                last_use.insert(o, i);
            }
        }
    }
    for (i, &n) in order.iter().enumerate() {
        if feeds.contains_key(&n) || (consts.contains_key(&n) && !targets.contains(&n)) {
            continue;
        }
        let ops = g.operands(n);
        let node = g.node(n);
        let vals: Vec<&Value> = ops
            .iter()
            .map(|o| feeds.get(o).or_else(|| consts.get(o)))
            .collect::<Option<_>>()
            .ok_or_else(|| InterpError::Op {
                node: node.name.clone(),
                op: node.op.mnemonic(),
                msg: "an operand has no value (missing input?)".into(),
            })?;
        let v = eval_op(&node.op, &vals, bind).map_err(|msg| InterpError::Op {
            node: node.name.clone(),
            op: node.op.mnemonic(),
            msg,
        })?;
        feeds.insert(n, v);
        for o in ops {
            if last_use.get(&o) == Some(&i) && !targets.contains(&o) {
                feeds.remove(&o);
            }
        }
    }
    targets
        .iter()
        .map(|t| {
            feeds.get(t).cloned().ok_or_else(|| InterpError::Op {
                node: g.node(*t).name.clone(),
                op: g.node(*t).op.mnemonic(),
                msg: "no value computed".into(),
            })
        })
        .collect()
}

fn topo(g: &Graph, need: &HashSet<NodeId>) -> Vec<NodeId> {
    let mut indeg: HashMap<NodeId, usize> = HashMap::new();
    for &n in need {
        indeg.insert(n, g.operands(n).iter().filter(|o| need.contains(o)).count());
    }
    let mut ready: Vec<NodeId> = indeg.iter().filter(|e| *e.1 == 0).map(|e| *e.0).collect();
    ready.sort_unstable();
    let mut order = Vec::with_capacity(need.len());
    while let Some(n) = ready.pop() {
        order.push(n);
        for u in g.users(n) {
            if let Some(d) = indeg.get_mut(&u) {
                let k = g.operands(u).iter().filter(|&&o| o == n).count();
                *d -= k;
                if *d == 0 {
                    ready.push(u);
                }
            }
        }
    }
    order
}

/// Runs the graph on named inputs and returns its outputs by name.
pub fn run(g: &Graph, inputs: &[(&str, Value)]) -> Result<Vec<(String, Value)>, InterpError> {
    let mut feeds = HashMap::new();
    for (name, v) in inputs {
        let n = g.input_named(name).ok_or_else(|| InterpError::Input {
            name: name.to_string(),
            msg: "the model has no such input".into(),
        })?;
        let want = g.ty(n).dtype;
        let v = if v.dtype == want {
            v.clone()
        } else {
            elementwise::cast(v, want)
        };
        feeds.insert(n, v);
    }
    for &i in &g.inputs {
        if !feeds.contains_key(&i) {
            return Err(InterpError::Input {
                name: g.node(i).name.clone(),
                msg: "not provided".into(),
            });
        }
    }
    let bind = bind_inputs(g, &feeds)?;
    let targets: Vec<NodeId> = g.outputs.iter().map(|o| o.1).collect();
    let vals = eval_nodes(g, &targets, feeds, &bind)?;
    Ok(g.outputs.iter().map(|o| o.0.clone()).zip(vals).collect())
}

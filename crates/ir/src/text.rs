//! The text form of the IR: one op per line with its result type, operands by number, weights
//! summarised as `@name:type`, small constants written out. Used by `bertc ir`, by error
//! messages and by snapshot tests; stable across runs and independent of node indices.
//! `parse.rs` reads it back.

use std::collections::HashMap;
use std::fmt::Write;

use super::graph::{Graph, NodeId};
use super::infer::join;
use super::op::{GeluApprox, Op};
use super::types::Tensor;

/// A float in its shortest round-trip form, in scientific notation when very small or large.
pub fn fmt_f(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || (1e-3..1e6).contains(&a) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

fn fmt_f32(v: f32) -> String {
    let a = v.abs();
    if v == 0.0 || (1e-3..1e6).contains(&a) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

fn small_const(t: &Tensor) -> Option<String> {
    if t.numel() > 8 {
        return None;
    }
    let vals: Vec<String> = if t.dtype.is_float() {
        let v = t.to_f64_vec();
        if t.dtype == crate::DType::F32 {
            v.iter().map(|&x| fmt_f32(x as f32)).collect()
        } else {
            v.iter().map(|&x| fmt_f(x)).collect()
        }
    } else {
        t.to_i64_vec().iter().map(|x| x.to_string()).collect()
    };
    Some(if t.shape.is_empty() {
        format!("{}:{}", vals[0], t.dtype)
    } else {
        format!("[{}]:{}", vals.join(","), t.ty())
    })
}

fn fused_act(act: &Option<crate::FusedAct>) -> &'static str {
    match act {
        None => "",
        Some(crate::FusedAct::Gelu(GeluApprox::Erf)) => " act=gelu_erf",
        Some(crate::FusedAct::Gelu(GeluApprox::Tanh)) => " act=gelu_tanh",
        Some(crate::FusedAct::Tanh) => " act=tanh",
        Some(crate::FusedAct::Relu) => " act=relu",
    }
}

fn attrs(op: &Op) -> String {
    let list = |v: &[i64]| {
        format!(
            "[{}]",
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    match op {
        Op::Cast { to } => format!(" to={to}"),
        Op::Shape { start, end } => {
            let mut s = String::new();
            if *start != 0 {
                let _ = write!(s, " start={start}");
            }
            if let Some(e) = end {
                let _ = write!(s, " end={e}");
            }
            s
        }
        Op::Reshape { allowzero: true } => " allowzero".into(),
        Op::ConstantOfShape { value } => {
            format!(" value={}", small_const(value).unwrap_or_default())
        }
        Op::Fill { shape, value } => format!(
            " shape=[{}] value={}",
            join(shape),
            small_const(value).unwrap_or_default()
        ),
        Op::Unsqueeze { axes } | Op::Squeeze { axes } => format!(" axes={}", list(axes)),
        Op::GatherNd { batch_dims } => format!(" batch_dims={batch_dims}"),
        Op::Concat { axis }
        | Op::Gather { axis }
        | Op::GatherElements { axis }
        | Op::Flatten { axis }
        | Op::Softmax { axis } => format!(" axis={axis}"),
        Op::CumSum {
            axis,
            exclusive,
            reverse,
        } => format!(
            " axis={axis}{}{}",
            if *exclusive { " exclusive" } else { "" },
            if *reverse { " reverse" } else { "" }
        ),
        Op::Transpose { perm } => format!(
            " perm=[{}]",
            perm.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let mut s = String::new();
            if *alpha != 1.0 {
                let _ = write!(s, " alpha={}", fmt_f32(*alpha));
            }
            if *beta != 1.0 {
                let _ = write!(s, " beta={}", fmt_f32(*beta));
            }
            if *trans_a {
                s.push_str(" trans_a");
            }
            if *trans_b {
                s.push_str(" trans_b");
            }
            s
        }
        Op::Reduce { axes, keepdims, .. } => {
            format!(
                " axes={}{}",
                list(axes),
                if *keepdims { " keepdims" } else { "" }
            )
        }
        Op::LayerNormalization { axis, epsilon } => {
            format!(" axis={axis} eps={}", fmt_f32(*epsilon))
        }
        Op::ReshapeTo { shape } | Op::ExpandTo { shape } => format!(" shape=[{}]", join(shape)),
        Op::Arange {
            dtype,
            start,
            step,
            len,
        } => format!(" {dtype} start={start} step={step} len={len}"),
        Op::SliceTo { axes, starts, ends } => format!(
            " axes=[{}] starts=[{}] ends=[{}]",
            axes.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(","),
            join(starts),
            join(ends)
        ),
        Op::Embedding {
            positions,
            types,
            sum_qdq,
        } => format!(
            " positions={positions} types={types}{}",
            sum_qdq.map_or(String::new(), |q| format!(" qdq_word_type={q}"))
        ),
        Op::LayerNorm { eps } => format!(" eps={}", fmt_f32(*eps)),
        Op::FusedLinear { act, residual } => {
            format!(
                "{}{}",
                fused_act(act),
                if *residual { " residual" } else { "" }
            )
        }
        Op::QLinear {
            act,
            residual,
            abits,
            smooth,
        } => format!(
            "{}{} abits={abits}{}",
            fused_act(act),
            if *residual { " residual" } else { "" },
            if *smooth { " smooth" } else { "" }
        ),
        Op::Pool { mode } => format!(" mode={}", mode.name()),
        Op::Gelu { approx } => match approx {
            GeluApprox::Erf => " approx=erf".into(),
            GeluApprox::Tanh => " approx=tanh".into(),
        },
        Op::Attention {
            heads,
            scale,
            quant,
        } => {
            let mut s = format!(" heads={heads} scale={}", fmt_f32(*scale));
            for (name, p) in quant.points() {
                if let Some(p) = p {
                    let _ = write!(s, " {name}={p}");
                }
            }
            s
        }
        Op::Qdq(q) => format!(" q={q}"),
        Op::DynamicQuantize { part } => format!(" part={}", part.name()),
        Op::QkvAttention { heads, scale, qk } => {
            format!(" heads={heads} scale={} qk={qk}", fmt_f32(*scale))
        }
        // Written out so that a new op with attributes cannot print without them unnoticed.
        Op::Input { .. }
        | Op::Const { .. }
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Where
        | Op::Reshape { allowzero: false }
        | Op::Expand
        | Op::Range
        | Op::Slice
        | Op::MatMul
        | Op::Linear
        | Op::DequantizeRows
        | Op::MeanPool
        | Op::MaxPool
        | Op::L2Normalize => String::new(),
    }
}

impl Graph {
    /// The text form of the graph (see the module documentation).
    pub fn to_text(&self) -> String {
        let order = self.canonical_order();
        let mut num: HashMap<NodeId, String> = HashMap::new();
        let mut next = 0usize;
        let mut out = String::new();
        let ins: Vec<String> = self
            .inputs
            .iter()
            .map(|&i| {
                let n = self.node(i);
                let name = match &n.op {
                    Op::Input { name } => name.clone(),
                    _ => n.name.clone(),
                };
                num.insert(i, format!("%{name}"));
                format!("%{name}: {}", n.ty)
            })
            .collect();
        let _ = write!(out, "graph({})", ins.join(", "));
        if let Some(m) = self.max_seq {
            let _ = write!(out, " max_seq={m}");
        }
        out.push_str(" {\n");
        for &n in &order {
            let node = self.node(n);
            match &node.op {
                Op::Input { .. } => continue,
                Op::Const { name, value } => {
                    let s = small_const(value).unwrap_or_else(|| format!("@{name}:{}", node.ty));
                    num.insert(n, s);
                    continue;
                }
                _ => {}
            }
            let id = format!("%{next}");
            next += 1;
            let args: Vec<String> = self
                .operands(n)
                .iter()
                .map(|o| num.get(o).cloned().unwrap_or_else(|| "%?".into()))
                .collect();
            let _ = write!(
                out,
                "  {id}:{} = {}({}){}",
                node.ty,
                node.op.mnemonic(),
                args.join(", "),
                attrs(&node.op)
            );
            if let Some(k) = &node.known {
                if !matches!(node.op, Op::Const { .. }) && !k.is_empty() {
                    let _ = write!(out, "  # = [{}]", join(k));
                }
            }
            out.push('\n');
            num.insert(n, id);
        }
        let rets: Vec<String> = self
            .outputs
            .iter()
            .map(|(name, o)| {
                format!(
                    "{name}={}",
                    num.get(o).cloned().unwrap_or_else(|| "%?".into())
                )
            })
            .collect();
        let _ = writeln!(out, "  return {}", rets.join(", "));
        out.push_str("}\n");
        out
    }
}

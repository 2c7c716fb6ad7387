//! `bertc inspect`: a summary of a model's architecture read off its raised IR.

use std::fmt::Write;
use std::path::Path;

use bertc_import::ModelSource;
use bertc_ir::{Op, Positions, TokenTypes, UnaryOp};
use bertc_passes::supported_outputs;

use crate::CliError;

pub fn inspect(path: &Path) -> Result<String, CliError> {
    let raw = bertc_import::load_model(path)?;
    let raw_counts = raw.op_counts();
    let (g, _) = crate::load_raised(path)?;
    let order = g.canonical_order();
    let mut layers = 0;
    let mut heads = Vec::new();
    let mut intermediate = None;
    let mut activation = "none";
    let mut vocab = None;
    let mut family = "unknown";
    let mut emb_width = None;
    for &n in &order {
        match g.op(n) {
            Op::Attention { heads: h, .. } => {
                layers += 1;
                heads.push(*h);
            }
            Op::Gelu { approx } if intermediate.is_none() => {
                intermediate = g.ty(n).shape.last().copied();
                activation = match approx {
                    bertc_ir::GeluApprox::Erf => "gelu (erf)",
                    bertc_ir::GeluApprox::Tanh => "gelu (tanh)",
                };
            }
            Op::Unary(UnaryOp::Relu) if intermediate.is_none() => {
                intermediate = g.ty(n).shape.last().copied();
                activation = "relu";
            }
            Op::Embedding {
                positions, types, ..
            } => {
                let ops = g.operands(n);
                let first = 1 + (*types == TokenTypes::Input) as usize;
                vocab = g.ty(ops[first]).shape.first().copied();
                emb_width = g.ty(n).shape.last().copied();
                family = match (positions, types) {
                    (Positions::PaddingAware { .. }, _) => "roberta",
                    (_, TokenTypes::Absent) => "distilbert",
                    _ => "bert",
                };
            }
            _ => {}
        }
    }
    let hidden = g
        .outputs
        .iter()
        .find(|o| o.0 == "last_hidden_state")
        .and_then(|o| g.ty(o.1).shape.last().copied());
    if family == "bert" && emb_width.is_some() && emb_width != hidden {
        family = "electra";
    }
    let show = |d: Option<bertc_ir::Dim>| d.map_or("?".to_string(), |d| d.to_string());
    let mut s = String::new();
    let source = match ModelSource::of(path) {
        ModelSource::Onnx => "onnx",
        ModelSource::HuggingFace => "hugging face (config.json + safetensors)",
    };
    let _ = writeln!(s, "format:        {source}");
    let _ = writeln!(s, "family:        {family}");
    let _ = writeln!(s, "layers:        {layers}");
    let _ = writeln!(s, "hidden:        {}", show(hidden));
    if emb_width.is_some() && emb_width != hidden {
        let _ = writeln!(s, "embedding:     {}", show(emb_width));
    }
    heads.dedup();
    let _ = writeln!(
        s,
        "heads:         {}",
        heads
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let _ = writeln!(s, "intermediate:  {}", show(intermediate));
    let _ = writeln!(s, "activation:    {activation}");
    let _ = writeln!(s, "vocab:         {}", show(vocab));
    let _ = writeln!(
        s,
        "max positions: {}",
        g.max_seq.map_or("?".into(), |m| m.to_string())
    );
    let _ = writeln!(s, "parameters:    {}", g.parameter_count());
    let ins: Vec<String> = g
        .inputs
        .iter()
        .map(|&i| format!("{}:{}", g.node(i).name, g.ty(i)))
        .collect();
    let _ = writeln!(s, "inputs:        {}", ins.join(" "));
    let outs: Vec<String> = g
        .outputs
        .iter()
        .map(|(n, o)| format!("{n}:{}", g.ty(*o)))
        .collect();
    let _ = writeln!(s, "outputs:       {}", outs.join(" "));
    let kinds: Vec<&str> = supported_outputs(&g).iter().map(|k| k.name()).collect();
    let _ = writeln!(s, "output kinds:  {}", kinds.join(" "));
    let fmt_counts = |c: &[(&str, usize)]| {
        c.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(s, "ops imported:  {}", fmt_counts(&raw_counts));
    let _ = writeln!(s, "ops raised:    {}", fmt_counts(&g.op_counts()));
    Ok(s)
}

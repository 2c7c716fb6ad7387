//! The IR's text form reads back: for every shared model, through both importers, the IR as
//! imported, raised, fused for code generation and quantized prints, parses and prints again to the same
//! text.

mod common;

use bertc_ir::Graph;
use bertc_passes::{canonicalize, optimize, run_pass, select_output, OutputKind, QuantizeInt8};
use common::*;

fn round_trips(what: &str, g: &Graph) {
    let text = g.to_text();
    let back = Graph::from_text(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
    let again = back.to_text();
    if again != text {
        let line = text
            .lines()
            .zip(again.lines())
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("printed: {a}\nreprinted: {b}"))
            .unwrap_or_else(|| "the texts differ in length".into());
        panic!("{what}: the text does not round-trip\n{line}");
    }
}

#[test]
fn every_shared_model_round_trips_raw_raised_and_fused() {
    let mut sources: Vec<(String, std::path::PathBuf)> = Vec::new();
    for m in RANDOM_MODELS {
        sources.push((format!("{m} onnx"), model_dir(m).join("model.onnx")));
        sources.push((format!("{m} hf"), model_dir(m)));
    }
    sources.push((
        "all-MiniLM-L6-v2 onnx".into(),
        model_dir("all-MiniLM-L6-v2").join("model.onnx"),
    ));
    for (what, path) in sources {
        let mut g = bertc_import::load_model(&path).unwrap_or_else(|e| panic!("{e}"));
        round_trips(&format!("{what} raw"), &g);
        canonicalize(&mut g).unwrap_or_else(|e| panic!("{e}"));
        round_trips(&format!("{what} raised"), &g);
        select_output(&mut g, OutputKind::Mean).unwrap_or_else(|e| panic!("{e}"));
        optimize(&mut g).unwrap_or_else(|e| panic!("{e}"));
        round_trips(&format!("{what} fused"), &g);
        run_pass(&QuantizeInt8::default(), &mut g).unwrap_or_else(|e| panic!("{e}"));
        round_trips(&format!("{what} quantized"), &g);
    }
}

#[test]
fn parse_errors_name_the_line() {
    let cases = [
        ("graph(%x: f32[batch,4]) {\n  return y=%x\n", "line 2"),
        ("graph(%x: f32[batch,4]) {\n  %0:f32[batch,4] = frobnicate(%x)\n  return y=%0\n}\n", "line 2: unknown op 'frobnicate'"),
        ("graph(%x: f32[batch,4]) {\n  %0:f32[batch,5] = neg(%x)\n  return y=%0\n}\n", "line 2: %0 is written f32[batch,5], but its operands give f32[batch,4]"),
        ("graph(%x: f32[batch,4]) {\n  %0:f32[batch,4] = neg(%y)\n  return y=%0\n}\n", "line 2: unknown value %y"),
        ("graph(%x: f32[batch,4]) {\n  %0:f32[batch,4] = softmax(%x) axis=1 beta=2\n  return y=%0\n}\n", "line 2: softmax: unknown attribute 'beta'"),
        ("graph(%x: q32[batch,4]) {\n", "line 1: unknown dtype 'q32'"),
    ];
    for (text, want) in cases {
        let e = Graph::from_text(text).unwrap_err().to_string();
        assert!(e.contains(want), "{e}, expected {want}");
    }
}

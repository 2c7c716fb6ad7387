//! ONNX op conformance: the backend node tests of the `onnx` PyPI package
//! (`scripts/onnx-node-tests` writes them) for every op the importer claims
//! (`bertc_import::onnx::OPS` and `QUANT_OPS`), through the importer and the interpreter, against the outputs
//! the `onnx` package's reference implementation wrote. A test passes, is refused (a one-line
//! import or interpreter error: an attribute form, dtype or opset the importer does not take),
//! or fails (different values, or a panic); failures fail this test. The same runner takes
//! the contrib ops (`CONTRIB_OPS`, `QUANT_CONTRIB_OPS`) through `scripts/ort-contrib-tests`,
//! whose outputs ONNX Runtime computed: every case must pass, but those named `*_refused`,
//! which must be refused.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bertc_import::onnx::{
    self as onnx_import, proto::ModelProto, CONTRIB_OPS, OPS, QUANT_CONTRIB_OPS, QUANT_OPS,
};
use bertc_interp::{Data, Value};
use prost::Message;

/// The node-test folders (each with a `model.onnx`) the script `name` writes, in order.
fn case_dirs(name: &str) -> Vec<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(common::script_folder(&script))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn as_f64(v: &Value) -> Vec<f64> {
    match &v.data {
        Data::F(x) => x.iter().map(|&a| a as f64).collect(),
        Data::I(x) => x.iter().map(|&a| a as f64).collect(),
        Data::B(x) => x.iter().map(|&a| a as u8 as f64).collect(),
    }
}

/// `None` when `got` matches `want` as the ONNX backend test runner checks (rtol 1e-3,
/// atol as given: the runner's 1e-7 for the node tests; integers and booleans exactly; NaN
/// matches NaN), else why not.
fn mismatch(got: &Value, want: &Value, atol: f64) -> Option<String> {
    if got.shape != want.shape {
        return Some(format!("shape {:?}, expected {:?}", got.shape, want.shape));
    }
    let exact = !want.dtype.is_float();
    for (i, (g, w)) in as_f64(got).iter().zip(as_f64(want)).enumerate() {
        let ok = if exact {
            *g == w
        } else {
            (g.is_nan() && w.is_nan()) || g == &w || (g - w).abs() <= atol + 1e-3 * w.abs()
        };
        if !ok {
            return Some(format!("element {i}: {g}, expected {w}"));
        }
    }
    None
}

enum Outcome {
    Pass,
    Refused(String),
    Fail(String),
}

fn run_case(dir: &Path, atol: f64) -> Outcome {
    let model = dir.join("model.onnx");
    let g = match onnx_import::import_file(&model) {
        Ok(g) => g,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    let proto = ModelProto::decode(std::fs::read(&model).unwrap().as_slice()).unwrap();
    let graph = proto.graph.unwrap();
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    for set in sets {
        let mut inputs = Vec::new();
        for (j, info) in graph.input.iter().enumerate() {
            let f = set.join(format!("input_{j}.pb"));
            if !f.is_file() {
                return Outcome::Refused(format!("input {} is not a tensor", info.name));
            }
            let (_, t) = match onnx_import::read_tensor_file(&f) {
                Ok(t) => t,
                Err(e) => return Outcome::Refused(e.to_string()),
            };
            inputs.push((info.name.clone(), Value::from_tensor(&t)));
        }
        let named: Vec<(&str, Value)> = inputs
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        let got = match bertc_interp::run(&g, &named) {
            Ok(o) => o,
            Err(e) => return Outcome::Refused(format!("interpreter: {e}")),
        };
        for (j, info) in graph.output.iter().enumerate() {
            let f = set.join(format!("output_{j}.pb"));
            let Ok((_, want)) = onnx_import::read_tensor_file(&f) else {
                return Outcome::Refused(format!("output {} is not a tensor", info.name));
            };
            let Some((_, v)) = got.iter().find(|(n, _)| n == &info.name) else {
                return Outcome::Fail(format!("no output {}", info.name));
            };
            if let Some(m) = mismatch(v, &Value::from_tensor(&want), atol) {
                return Outcome::Fail(format!("{}: output {}: {m}", set.display(), info.name));
            }
        }
    }
    Outcome::Pass
}

#[test]
fn onnx_node_tests_of_the_claimed_ops() {
    let dirs = case_dirs("onnx-node-tests");
    let mut by_op: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let (mut passed, mut refused, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for dir in &dirs {
        let proto =
            ModelProto::decode(std::fs::read(dir.join("model.onnx")).unwrap().as_slice()).unwrap();
        let nodes = proto.graph.map(|g| g.node).unwrap_or_default();
        let claimed = !nodes.is_empty()
            && nodes.iter().all(|n| {
                (n.domain.is_empty() || n.domain == "ai.onnx")
                    && (OPS.contains(&n.op_type.as_str())
                        || QUANT_OPS.contains(&n.op_type.as_str()))
            });
        if !claimed {
            continue;
        }
        let op = nodes[0].op_type.clone();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let outcome = std::panic::catch_unwind(|| run_case(dir, 1e-7))
            .unwrap_or_else(|_| Outcome::Fail("panicked".into()));
        let e = by_op.entry(op).or_default();
        match outcome {
            Outcome::Pass => {
                e.0 += 1;
                passed.push(name)
            }
            Outcome::Refused(m) => {
                e.1 += 1;
                refused.push(format!("{name}: {m}"))
            }
            Outcome::Fail(m) => {
                e.2 += 1;
                failed.push(format!("{name}: {m}"))
            }
        }
    }
    for (op, (p, r, f)) in &by_op {
        eprintln!("{op:>20}: {p} passed, {r} refused, {f} failed");
    }
    for r in &refused {
        eprintln!("refused {r}");
    }
    eprintln!(
        "{} node tests of {} claimed ops: {} passed, {} refused with an error, {} failed",
        passed.len() + refused.len() + failed.len(),
        by_op.len(),
        passed.len(),
        refused.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "wrong results:\n{}", failed.join("\n"));
    assert!(!passed.is_empty());
}

/// ONNX Runtime's contrib ops against ORT's outputs (a float32 kernel's summation order
/// differs from the interpreter's: atol 1e-5 with the runner's rtol).
#[test]
fn onnx_runtime_contrib_op_tests() {
    let dirs = case_dirs("ort-contrib-tests");
    let mut ops = std::collections::BTreeSet::new();
    let mut wrong = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let proto =
            ModelProto::decode(std::fs::read(dir.join("model.onnx")).unwrap().as_slice()).unwrap();
        for n in proto.graph.map(|g| g.node).unwrap_or_default() {
            let op = n.op_type.as_str();
            assert!(
                CONTRIB_OPS.contains(&op) || QUANT_CONTRIB_OPS.contains(&op),
                "{name}: {op}"
            );
            ops.insert(n.op_type);
        }
        let outcome = std::panic::catch_unwind(|| run_case(dir, 1e-5))
            .unwrap_or_else(|_| Outcome::Fail("panicked".into()));
        match (outcome, name.ends_with("_refused")) {
            (Outcome::Pass, false) => eprintln!("passed  {name}"),
            (Outcome::Refused(m), true) => eprintln!("refused {name}: {m}"),
            (Outcome::Pass, true) => wrong.push(format!("{name}: accepted, should be refused")),
            (Outcome::Refused(m), false) => wrong.push(format!("{name}: refused: {m}")),
            (Outcome::Fail(m), _) => wrong.push(format!("{name}: {m}")),
        }
    }
    eprintln!("{} contrib node tests of {} ops", dirs.len(), ops.len());
    assert_eq!(
        ops.len(),
        CONTRIB_OPS.len() + QUANT_CONTRIB_OPS.len(),
        "a claimed contrib op has no test"
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

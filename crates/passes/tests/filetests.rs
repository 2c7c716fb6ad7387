//! IR filetests in Cranelift's style: each `filetests/*.bir` file holds an input graph in the
//! IR's text form, the passes to run on it and the expected text after them.
//!
//! ```text
//! ; pass: fuse-linear-act, fuse-residual     (one or more, by name, in order)
//! ; run                                      (optional: the interpreter's outputs must not change)
//! ; Free text saying what the test shows.
//! graph(%x: f32[batch,seq,4]) {
//!   ...
//! }
//! ; after:
//! ; graph(%x: f32[batch,seq,4]) {
//! ; ...
//! ```
//!
//! A file whose result differs fails with both texts. `BERTC_BLESS=1 cargo test --test
//! filetests` rewrites the `; after:` section of every failing file with what the passes
//! print now (review the diff before committing it).

use std::path::{Path, PathBuf};

use bertc_interp::{self as interp, Value};
use bertc_ir::{Binding, DType, Graph};
use bertc_passes::{pass_by_name, run_pass};

struct FileTest {
    passes: Vec<String>,
    run: bool,
    input: String,
    /// Everything up to and including the `; after:` line.
    head: String,
    expected: Option<String>,
}

fn read(path: &Path) -> Result<FileTest, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut passes = Vec::new();
    let mut run = false;
    let mut input = String::new();
    let mut head = String::new();
    let mut expected: Option<String> = None;
    let mut in_graph = false;
    for line in text.lines() {
        if let Some(e) = expected.as_mut() {
            let l = line.strip_prefix("; ").or_else(|| line.strip_prefix(';'));
            e.push_str(
                l.ok_or_else(|| format!("line '{line}' after '; after:' is not a comment"))?,
            );
            e.push('\n');
            continue;
        }
        head.push_str(line);
        head.push('\n');
        let t = line.trim();
        if in_graph || t.starts_with("graph(") {
            in_graph = t != "}";
            input.push_str(line);
            input.push('\n');
        } else if let Some(p) = t.strip_prefix("; pass:") {
            passes.extend(p.split(',').map(|s| s.trim().to_string()));
        } else if t == "; run" {
            run = true;
        } else if t == "; after:" {
            expected = Some(String::new());
        } else if !(t.is_empty() || t.starts_with(';')) {
            return Err(format!("unexpected line '{line}' outside the graph"));
        }
    }
    if passes.is_empty() {
        return Err("no '; pass:' line".into());
    }
    Ok(FileTest {
        passes,
        run,
        input,
        head,
        expected,
    })
}

/// Inputs for `g` at batch 2, seq 3: floats pseudo-random in [-1, 1), masks all 1, other
/// integers alternating 0 and 1 (valid ids and token types for any table of two rows or more).
fn inputs(g: &Graph) -> Vec<(String, Value)> {
    let b = Binding { batch: 2, seq: 3 };
    let mut s = 0x2545_f491_4f6c_dd1du64;
    g.inputs
        .iter()
        .map(|&i| {
            let n = g.node(i);
            let shape = b.shape(&n.ty.shape);
            let len: usize = shape.iter().product();
            let v = match n.ty.dtype {
                DType::F32 => Value::f32(
                    shape,
                    (0..len)
                        .map(|_| {
                            s ^= s << 13;
                            s ^= s >> 7;
                            s ^= s << 17;
                            ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
                        })
                        .collect(),
                ),
                _ if n.name.contains("mask") => Value::i64(shape, vec![1; len]),
                _ => Value::i64(shape, (0..len as i64).map(|x| x % 2).collect()),
            };
            (n.name.clone(), v)
        })
        .collect()
}

fn outputs(g: &Graph, feeds: &[(String, Value)]) -> Result<Vec<Vec<f32>>, String> {
    let feeds: Vec<(&str, Value)> = feeds.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    let out = interp::run(g, &feeds).map_err(|e| e.to_string())?;
    Ok(out
        .into_iter()
        .map(|(_, v)| v.as_f32().map(|x| x.to_vec()).unwrap_or_default())
        .collect())
}

/// Runs one file; `Ok(None)` when it passes, `Ok(Some(actual))` when its text differs.
fn check(path: &Path) -> Result<Option<(FileTest, String)>, String> {
    let t = read(path)?;
    let mut g = Graph::from_text(&t.input).map_err(|e| format!("input: {e}"))?;
    let feeds = inputs(&g);
    let before = if t.run {
        Some(outputs(&g, &feeds)?)
    } else {
        None
    };
    let mut actual = String::new();
    for name in &t.passes {
        let pass = pass_by_name(name).ok_or_else(|| format!("unknown pass '{name}'"))?;
        let report = run_pass(pass.as_ref(), &mut g).map_err(|e| e.to_string())?;
        actual.push_str(&format!("# {report}\n"));
    }
    actual.push_str(&g.to_text());
    if let Some(before) = before {
        let after = outputs(&g, &feeds)?;
        for (a, b) in after.iter().zip(&before) {
            let err = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            if err.is_nan() || err > 1e-5 {
                return Err(format!("the passes changed the outputs by {err}"));
            }
        }
    }
    if t.expected.as_deref() == Some(actual.as_str()) {
        Ok(None)
    } else {
        Ok(Some((t, actual)))
    }
}

fn files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("filetests");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the filetests folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bir"))
        .collect();
    v.sort();
    v
}

#[test]
fn filetests() {
    let bless = std::env::var("BERTC_BLESS").as_deref() == Ok("1");
    let files = files();
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match check(path) {
            Ok(None) => {}
            Ok(Some((t, actual))) if bless => {
                let mut head = t.head;
                if t.expected.is_none() {
                    head.push_str("; after:\n");
                }
                let body: String = actual
                    .lines()
                    .map(|l| {
                        if l.is_empty() {
                            ";\n".into()
                        } else {
                            format!("; {l}\n")
                        }
                    })
                    .collect();
                std::fs::write(path, head + &body).unwrap();
                eprintln!("blessed {name}");
            }
            Ok(Some((t, actual))) => failures.push(format!(
                "{name}: the passes print\n{actual}\nbut the file expects\n{}",
                t.expected.as_deref().unwrap_or("(no '; after:' section)\n")
            )),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} filetests failed (BERTC_BLESS=1 rewrites the expectations):\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

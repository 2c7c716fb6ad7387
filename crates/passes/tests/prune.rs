//! Structured pruning on the shared random models: the OBS update of attention heads against a
//! least-squares solution computed directly from the activations (an independent solver), the
//! `prune-structures` pass before and after (snapshots), and every level of every block,
//! including blocks that lose all their heads or neurons, giving a valid graph whose
//! interpreter outputs are finite.

use bertc_interp::{self as interp, Value};
use bertc_ir::Graph;
use bertc_passes::obs::{prune_greedy, refit, spd_inverse};
use bertc_passes::prune::{self, Block, BlockPlan, Method, PruneStructures};
use bertc_passes::run_pass;
use std::path::Path;

fn raised(name: &str) -> Graph {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/models")
        .join(name)
        .join("model.onnx");
    let mut g = bertc_import::load_model(&p).unwrap();
    bertc_passes::canonicalize(&mut g).unwrap();
    g
}

/// Deterministic calibration sequences of varied lengths (CLS 2 ... SEP 3 in these vocabularies).
fn sequences(n: usize, vocab: i64) -> Vec<Vec<i64>> {
    (0..n)
        .map(|i| {
            let len = 4 + (i * 7) % 19;
            let mut s = vec![2];
            s.extend((0..len).map(|t| 5 + ((i * 131 + t * 7919) as i64 % (vocab - 5))));
            s.push(3);
            s
        })
        .collect()
}

fn run(g: &Graph) -> Vec<f32> {
    let ids = Value::i64(vec![2, 6], vec![2, 73, 1043, 9, 17, 3, 2, 150, 3, 0, 0, 0]);
    let mask = Value::i64(vec![2, 6], vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]);
    let types = Value::i64(vec![2, 6], vec![0; 12]);
    let out = interp::run(
        g,
        &[
            ("input_ids", ids),
            ("attention_mask", mask),
            ("token_type_ids", types),
        ],
    )
    .unwrap();
    out[0].1.as_f32().unwrap().to_vec()
}

/// Solves `a x = b` (dense, `n x n`) by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap();
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            let pivot = a[c].clone();
            for (x, p) in a[r][c..].iter_mut().zip(&pivot[c..]) {
                *x -= f * p;
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    x
}

/// Removing attention heads by structured OBS gives, for the kept heads' columns of the output
/// projection, the least-squares fit of the dense outputs from the kept inputs.
#[test]
fn head_pruning_matches_least_squares_from_activations() {
    let g = raised("bert-small-random");
    let blocks = prune::find_blocks(&g);
    let Block::Attn(a) = &blocks[0] else {
        panic!("first block is not attention")
    };
    assert!(a.heads >= 3, "bert-small has {} heads", a.heads);
    let seqs = sequences(24, 1000);
    let calib = prune::calibrate(&g, &blocks[..1], &seqs, 0.0, &mut |_, _| {}).unwrap();
    // the raw activations: the attention output for the real tokens
    let mut xs: Vec<Vec<f64>> = Vec::new();
    for batch in &calib.batches {
        let v = bertc_interp::eval_nodes(&g, &[a.attn], batch.feeds.clone(), &batch.bind)
            .unwrap()
            .remove(0);
        let d = *v.shape.last().unwrap();
        let x = v.as_f32().unwrap();
        for t in batch.real() {
            xs.push(x[t * d..(t + 1) * d].iter().map(|&f| f as f64).collect());
        }
    }
    let w0 = prune::database::weight_of(&g, &blocks[0]).unwrap();
    let n_in = w0.cols;
    // remove two heads greedily (no damping, so the reference is the plain least squares)
    let h = &calib.blocks[0].hessian;
    let mut hinv = spd_inverse(h).unwrap();
    let groups: Vec<Vec<usize>> = (0..a.heads).map(|i| blocks[0].columns(i)).collect();
    let mut w = w0.clone();
    let removed = prune_greedy(&mut w, &mut hinv, &groups, 2);
    let gone: Vec<usize> = removed
        .iter()
        .flat_map(|r| groups[r.group].clone())
        .collect();
    let keep: Vec<usize> = (0..n_in).filter(|c| !gone.contains(c)).collect();
    // reference: normal equations from the activations, solved independently
    let k = keep.len();
    let gram: Vec<Vec<f64>> = keep
        .iter()
        .map(|&i| {
            keep.iter()
                .map(|&j| xs.iter().map(|x| x[i] * x[j]).sum())
                .collect()
        })
        .collect();
    let fitted = refit(&w0, h, &keep).unwrap();
    let mut worst = 0f64;
    let mut scale = 0f64;
    for r in 0..w0.rows {
        // Σ y x_S with y = W0 x
        let rhs: Vec<f64> = keep
            .iter()
            .map(|&j| {
                xs.iter()
                    .map(|x| (0..n_in).map(|c| w0.at(r, c) * x[c]).sum::<f64>() * x[j])
                    .sum()
            })
            .collect();
        let ls = solve(gram.clone(), rhs);
        for (b, &j) in keep.iter().enumerate() {
            worst = worst.max((w.at(r, j) - ls[b]).abs());
            worst = worst.max((fitted.at(r, b) - ls[b]).abs());
            scale = scale.max(ls[b].abs());
        }
        for &j in &gone {
            assert_eq!(w.at(r, j), 0.0);
        }
    }
    assert!(
        worst < 1e-6 * scale.max(1.0),
        "OBS and least squares differ by {worst} (scale {scale})"
    );
    assert_eq!(k, (a.heads - 2) * a.head_dim);
}

/// A fixed plan on bert-micro: heads and neurons removed, one attention and one FFN block
/// removed entirely (their bias folded into the LayerNorm before them).
#[test]
fn prune_structures_before_and_after() {
    let g0 = raised("bert-micro-random");
    let blocks = prune::find_blocks(&g0);
    let kinds: Vec<&str> = blocks.iter().map(|b| b.kind()).collect();
    assert_eq!(kinds, ["attention", "ffn", "attention", "ffn"]);
    let seqs = sequences(16, 2000);
    let calib = prune::calibrate(&g0, &blocks, &seqs, 0.01, &mut |_, _| {}).unwrap();
    let levels = prune::all_levels(&g0, &blocks, &calib, Method::Obs).unwrap();
    // attention 1 of 2 heads, FFN 40 of 64, second attention none, second FFN none
    let plan = prune::plan(&g0, &blocks, &calib, &levels, &[1, 40, 0, 0], Method::Obs).unwrap();
    let mut g = g0.clone();
    insta::assert_snapshot!("prune-00-raised", g.to_text());
    let report = run_pass(&PruneStructures { plan }, &mut g).unwrap();
    insta::assert_snapshot!(
        "prune-01-after-prune-structures",
        format!("# {report}\n{}", g.to_text())
    );
    let out = run(&g);
    assert!(out.iter().all(|v| v.is_finite()));
    // the pruned model is close to the dense one, not equal
    let dense = run(&g0);
    let diff = out
        .iter()
        .zip(&dense)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff > 1e-3, "pruning changed nothing");
}

/// Every level of every block, alone and all blocks at once, is a valid model.
#[test]
fn every_level_is_a_valid_model() {
    let g0 = raised("bert-micro-random");
    let blocks = prune::find_blocks(&g0);
    let seqs = sequences(16, 2000);
    let calib = prune::calibrate(&g0, &blocks, &seqs, 0.01, &mut |_, _| {}).unwrap();
    for method in [Method::Obs, Method::Magnitude] {
        let levels = prune::all_levels(&g0, &blocks, &calib, method).unwrap();
        for (i, b) in blocks.iter().enumerate() {
            // errors start at zero; OBS's grow with what is removed (each step costs >= 0)
            let e = &levels[i].error;
            assert_eq!(e[0], 0.0);
            if method == Method::Obs {
                assert!(e.windows(2).all(|w| w[1] >= w[0] - 1e-12), "{e:?}");
            }
            for kept in 0..=b.size() {
                let mut k: Vec<usize> = blocks.iter().map(|b| b.size()).collect();
                k[i] = kept;
                let plan = prune::plan(&g0, &blocks, &calib, &levels, &k, method).unwrap();
                let mut g = g0.clone();
                run_pass(&PruneStructures { plan }, &mut g).unwrap();
                assert!(
                    run(&g).iter().all(|v| v.is_finite()),
                    "{method:?} block {i} kept {kept}"
                );
            }
        }
        // nothing left of any layer: embeddings and LayerNorms only
        let plan = prune::plan(&g0, &blocks, &calib, &levels, &[0, 0, 0, 0], method).unwrap();
        let mut g = g0.clone();
        run_pass(&PruneStructures { plan }, &mut g).unwrap();
        assert!(prune::find_blocks(&g).is_empty());
        assert!(run(&g).iter().all(|v| v.is_finite()));
    }
}

/// The plan keeps the structures the levels keep, with OBS weights only for OBS.
#[test]
fn plans_follow_the_levels() {
    let g0 = raised("bert-micro-random");
    let blocks = prune::find_blocks(&g0);
    let seqs = sequences(12, 2000);
    let calib = prune::calibrate(&g0, &blocks, &seqs, 0.01, &mut |_, _| {}).unwrap();
    let lv = prune::all_levels(&g0, &blocks, &calib, Method::Obs).unwrap();
    let p: Vec<BlockPlan> =
        prune::plan(&g0, &blocks, &calib, &lv, &[1, 32, 2, 64], Method::Obs).unwrap();
    assert_eq!(p[0].kept, lv[0].kept(1));
    assert_eq!(p[1].kept.len(), 32);
    assert!(p[0].weight.is_some() && p[1].weight.is_some());
    assert!(
        p[2].weight.is_none() && p[3].weight.is_none(),
        "dense blocks keep their weights"
    );
    let m = prune::plan(
        &g0,
        &blocks,
        &calib,
        &lv,
        &[1, 32, 2, 64],
        Method::Magnitude,
    )
    .unwrap();
    assert!(m.iter().all(|b| b.weight.is_none()));
}

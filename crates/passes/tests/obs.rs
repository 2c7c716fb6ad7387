//! Structured OBS on a real layer: the FFN down projection of the shared bert-micro model, with
//! its inputs collected by the interpreter on token sequences; pruning neurons greedily must
//! give the least-squares refit of the kept neurons, and the reported errors must add up to the
//! layer's reconstruction error.

use bertc_interp::{eval_nodes, Value};
use bertc_ir::{Binding, Op};
use bertc_passes::obs::{prune_greedy, spd_inverse, Hessian, Mat};
use std::collections::HashMap;
use std::path::Path;

#[test]
fn ffn_neuron_pruning_matches_least_squares() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models/bert-micro-random");
    let mut g = bertc_import::load_model(&p).unwrap();
    bertc_passes::canonicalize(&mut g).unwrap();
    // the first GELU's output feeds the first FFN down projection
    let order = g.canonical_order();
    let gelu = order
        .iter()
        .copied()
        .find(|&n| matches!(g.op(n), Op::Gelu { .. }))
        .unwrap();
    let down = g.users(gelu)[0];
    assert!(matches!(g.op(down), Op::Linear));
    let wt = g.const_value(g.operands(down)[1]).unwrap().to_f32_vec();
    let (n_out, n_in) = (32, 64);
    // calibration: 6 sequences of 20 tokens
    let (b, s) = (6usize, 20usize);
    let ids: Vec<i64> = (0..b * s).map(|i| 5 + ((i * 7919) % 2000) as i64).collect();
    let mut feeds = HashMap::new();
    feeds.insert(
        g.input_named("input_ids").unwrap(),
        Value::i64(vec![b, s], ids),
    );
    feeds.insert(
        g.input_named("attention_mask").unwrap(),
        Value::i64(vec![b, s], vec![1; b * s]),
    );
    feeds.insert(
        g.input_named("token_type_ids").unwrap(),
        Value::i64(vec![b, s], vec![0; b * s]),
    );
    let x = eval_nodes(&g, &[gelu], feeds, &Binding { batch: b, seq: s })
        .unwrap()
        .remove(0);
    let mut hs = Hessian::new(n_in);
    hs.add(x.as_f32().unwrap());
    let h = hs.finish(0.01);
    let mut hinv = spd_inverse(&h).unwrap();
    let mut w = Mat {
        rows: n_out,
        cols: n_in,
        data: wt.iter().map(|&v| v as f64).collect(),
    };
    let w0 = w.clone();
    let groups: Vec<Vec<usize>> = (0..n_in).map(|c| vec![c]).collect();
    let removed = prune_greedy(&mut w, &mut hinv, &groups, 16);
    assert_eq!(removed.len(), 16);
    let gone: Vec<usize> = removed.iter().map(|r| r.group).collect();
    let keep: Vec<usize> = (0..n_in).filter(|c| !gone.contains(c)).collect();
    let mut hss = Mat::zeros(keep.len(), keep.len());
    for (a, &i) in keep.iter().enumerate() {
        for (bb, &j) in keep.iter().enumerate() {
            hss.set(a, bb, h.at(i, j));
        }
    }
    let hss_inv = spd_inverse(&hss).unwrap();
    let mut worst = 0f64;
    for r in 0..n_out {
        let whs: Vec<f64> = keep
            .iter()
            .map(|&k| (0..n_in).map(|c| w0.at(r, c) * h.at(c, k)).sum())
            .collect();
        for (bb, &j) in keep.iter().enumerate() {
            let ls: f64 = whs
                .iter()
                .enumerate()
                .map(|(a, v)| v * hss_inv.at(a, bb))
                .sum();
            worst = worst.max((w.at(r, j) - ls).abs());
        }
    }
    assert!(worst < 1e-6, "OBS and least squares differ by {worst}");
    // greedy errors are non-decreasing in total and add up to the reconstruction error
    let total: f64 = removed.iter().map(|r| r.error).sum();
    let mut e = 0.0;
    for r in 0..n_out {
        for i in 0..n_in {
            for j in 0..n_in {
                e += (w0.at(r, i) - w.at(r, i)) * h.at(i, j) * (w0.at(r, j) - w.at(r, j));
            }
        }
    }
    assert!(
        (e - total).abs() <= 1e-6 * total.max(1e-12),
        "{e} vs {total}"
    );
}

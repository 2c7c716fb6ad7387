//! The mutator: byte-level edits (AFL's kinds: bit flips, interesting values, block deletes,
//! duplicates and splices from other seeds) and structure-aware ones that keep a file
//! parseable one level down, so that the importer's checks past the parser are reached: JSON
//! values (numbers to extremes, strings emptied or grown, keys dropped, arrays cut or
//! repeated, types swapped) and ONNX protobuf fields (dims, data types, raw data, attribute
//! values, op types and input names).

use bertc_import::onnx::proto::{ModelProto, TensorProto};
use prost::Message;
use serde_json::Value;

/// A small fast generator (xorshift64*), seeded per campaign so runs can be repeated.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A value below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

const INTERESTING: [i64; 14] = [
    0,
    1,
    -1,
    2,
    127,
    128,
    255,
    256,
    65535,
    65536,
    i32::MAX as i64,
    i32::MIN as i64,
    i64::MAX,
    i64::MIN,
];

/// One to four byte-level edits of `data`, with `other` (another seed) for splices.
pub fn bytes(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = [0u8, 0xff, 0x7f, 0x80, b'0', b'9', b'"', b'{'][rng.below(8)];
            }
            2 if len >= 4 => {
                let i = rng.below(len - 3);
                let v = INTERESTING[rng.below(INTERESTING.len())] as u32;
                data[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            3 if len > 1 => {
                let a = rng.below(len);
                let n = 1 + rng.below((len - a).min(256));
                data.drain(a..a + n);
            }
            4 if len > 1 => {
                let a = rng.below(len);
                let n = 1 + rng.below((len - a).min(256));
                let chunk = data[a..a + n].to_vec();
                let at = rng.below(len);
                data.splice(at..at, chunk);
            }
            5 if !other.is_empty() => {
                let a = rng.below(other.len());
                let n = 1 + rng.below((other.len() - a).min(512));
                let at = rng.below(len + 1);
                data.splice(at..at, other[a..a + n].iter().copied());
            }
            6 if len > 0 => data.truncate(rng.below(len)),
            _ => {
                let at = rng.below(len + 1);
                data.insert(at, rng.next_u64() as u8);
            }
        }
    }
}

fn extreme_number(rng: &mut Rng) -> Value {
    match rng.below(6) {
        0 => Value::from(INTERESTING[rng.below(INTERESTING.len())]),
        1 => Value::from(u64::MAX),
        2 => serde_json::Number::from_f64([1e308, -1e308, 0.5, -0.0, 1e-310][rng.below(5)])
            .map(Value::Number)
            .unwrap_or(Value::Null),
        3 => Value::from(rng.below(5) as i64),
        4 => Value::from(-(rng.below(1 << 20) as i64)),
        _ => Value::from(rng.below(1 << 31) as i64),
    }
}

/// Mutates one node of a JSON tree in place.
fn json_node(rng: &mut Rng, v: &mut Value, depth: usize) {
    let descend = depth < 8 && rng.below(4) != 0;
    match v {
        Value::Object(m) if descend && !m.is_empty() => {
            let k = m
                .keys()
                .nth(rng.below(m.len()))
                .cloned()
                .unwrap_or_default();
            if rng.chance(8) {
                m.remove(&k);
            } else if let Some(child) = m.get_mut(&k) {
                json_node(rng, child, depth + 1);
            }
        }
        Value::Array(a) if descend && !a.is_empty() => match rng.below(6) {
            0 => a.truncate(rng.below(a.len())),
            1 => {
                let i = rng.below(a.len());
                let e = a[i].clone();
                a.push(e);
            }
            _ => {
                let i = rng.below(a.len());
                json_node(rng, &mut a[i], depth + 1);
            }
        },
        _ => {
            *v = match rng.below(7) {
                0 | 1 => extreme_number(rng),
                2 => Value::String(String::new()),
                3 => Value::String("\u{0}\u{ffff}x".repeat(1 + rng.below(64))),
                4 => Value::Bool(rng.chance(2)),
                5 => Value::Null,
                _ => Value::Array(vec![extreme_number(rng)]),
            }
        }
    }
}

/// A structure-aware JSON mutation when `data` parses as JSON, byte edits otherwise.
pub fn json(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    if rng.chance(4) {
        return bytes(rng, data, other);
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(data) else {
        return bytes(rng, data, other);
    };
    for _ in 0..1 + rng.below(3) {
        json_node(rng, &mut v, 0);
    }
    *data = serde_json::to_vec(&v).unwrap_or_default();
}

fn tensor(rng: &mut Rng, t: &mut TensorProto) {
    match rng.below(5) {
        0 if !t.dims.is_empty() => {
            let i = rng.below(t.dims.len());
            t.dims[i] = INTERESTING[rng.below(INTERESTING.len())];
        }
        1 => t.data_type = rng.below(20) as i32,
        2 => {
            let n = rng.below(t.raw_data.len() + 1);
            t.raw_data.truncate(n);
        }
        3 => t.dims.push(rng.below(4) as i64),
        _ => {
            t.dims.pop();
        }
    }
}

const OPS: [&str; 12] = [
    "MatMul",
    "Add",
    "Reshape",
    "Gather",
    "Softmax",
    "Transpose",
    "Attention",
    "SkipLayerNormalization",
    "DynamicQuantizeLinear",
    "Slice",
    "Concat",
    "LayerNormalization",
];

/// A structure-aware ONNX mutation when `data` decodes, byte edits otherwise.
pub fn onnx(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    if rng.chance(4) {
        return bytes(rng, data, other);
    }
    let Ok(mut m) = ModelProto::decode(&data[..]) else {
        return bytes(rng, data, other);
    };
    let Some(g) = m.graph.as_mut() else {
        return bytes(rng, data, other);
    };
    for _ in 0..1 + rng.below(3) {
        match rng.below(7) {
            0 if !g.initializer.is_empty() => {
                let i = rng.below(g.initializer.len());
                tensor(rng, &mut g.initializer[i]);
            }
            1 | 2 if !g.node.is_empty() => {
                let i = rng.below(g.node.len());
                let n = &mut g.node[i];
                match rng.below(4) {
                    0 => n.op_type = OPS[rng.below(OPS.len())].to_string(),
                    1 if !n.input.is_empty() => {
                        let j = rng.below(n.input.len());
                        n.input[j] = if rng.chance(3) {
                            String::new()
                        } else {
                            n.input[rng.below(n.input.len())].clone()
                        };
                    }
                    2 if !n.attribute.is_empty() => {
                        let j = rng.below(n.attribute.len());
                        let a = &mut n.attribute[j];
                        a.i = INTERESTING[rng.below(INTERESTING.len())];
                        if let Some(x) = a.ints.first_mut() {
                            *x = INTERESTING[rng.below(INTERESTING.len())];
                        }
                        if let Some(t) = a.t.as_mut() {
                            tensor(rng, t);
                        }
                    }
                    _ => {
                        if rng.chance(2) {
                            n.domain = "com.microsoft".into()
                        } else {
                            n.output.clear()
                        }
                    }
                }
            }
            3 if !g.node.is_empty() => {
                let i = rng.below(g.node.len());
                if rng.chance(2) {
                    g.node.remove(i);
                } else {
                    let n = g.node[i].clone();
                    g.node.insert(rng.below(g.node.len()), n);
                }
            }
            4 if !g.input.is_empty() => {
                let i = rng.below(g.input.len());
                if let Some(s) = g.input[i]
                    .r#type
                    .as_mut()
                    .and_then(|t| t.tensor_type.as_mut())
                {
                    s.elem_type = rng.below(20) as i32;
                }
            }
            5 => {
                if let Some(o) = m.opset_import.first_mut() {
                    o.version = rng.below(30) as i64;
                }
            }
            _ => {
                if !g.output.is_empty() {
                    let i = rng.below(g.output.len());
                    g.output[i].name = g
                        .node
                        .get(rng.below(g.node.len().max(1)))
                        .and_then(|n| n.output.first().cloned())
                        .unwrap_or_default();
                }
            }
        }
    }
    *data = m.encode_to_vec();
}

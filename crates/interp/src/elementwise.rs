//! Elementwise ops: unary and binary arithmetic with ONNX broadcasting, comparisons and logic, `where`, casts.

use bertc_ir::{BinaryOp, DType, Op, UnaryOp};

use crate::value::*;

/// Executes one of this family's ops.
pub(crate) fn eval(op: &Op, v: &[&Value]) -> R<Value> {
    let x0 = || first(v);
    Ok(match op {
        Op::Unary(u) => unary(*u, x0()?)?,
        Op::Binary(b) => binary(*b, v[0], v[1])?,
        Op::Where => {
            let out = bcast_shape(&bcast_shape(&v[0].shape, &v[1].shape)?, &v[2].shape)?;
            let c = expand(v[0], &out)?;
            let a = expand(v[1], &out)?;
            let b = expand(v[2], &out)?;
            let cb = c.as_bool()?;
            let data = match (&a.data, &b.data) {
                (Data::F(p), Data::F(q)) => Data::F(
                    (0..cb.len())
                        .map(|i| if cb[i] { p[i] } else { q[i] })
                        .collect(),
                ),
                (Data::I(p), Data::I(q)) => Data::I(
                    (0..cb.len())
                        .map(|i| if cb[i] { p[i] } else { q[i] })
                        .collect(),
                ),
                (Data::B(p), Data::B(q)) => Data::B(
                    (0..cb.len())
                        .map(|i| if cb[i] { p[i] } else { q[i] })
                        .collect(),
                ),
                _ => return Err("where operands differ in type".into()),
            };
            Value::of(a.dtype, out, data)
        }
        Op::Cast { to } => cast(x0()?, *to),
        Op::Qdq(q) => {
            let x = x0()?;
            let f = crate::encoder::qdq(*q);
            Value::f32(x.shape.clone(), x.as_f32()?.iter().map(|&a| f(a)).collect())
        }
        _ => return Err(format!("{} is not a elementwise op", op.mnemonic())),
    })
}

pub(crate) fn unary(u: UnaryOp, x: &Value) -> R<Value> {
    if u == UnaryOp::Not {
        let b = x.as_bool()?;
        return Ok(Value::of(
            DType::Bool,
            x.shape.clone(),
            Data::B(b.iter().map(|v| !v).collect()),
        ));
    }
    if let Data::I(v) = &x.data {
        let r = match u {
            UnaryOp::Neg => v.iter().map(|a| a.wrapping_neg()).collect(),
            UnaryOp::Abs => v.iter().map(|a| a.wrapping_abs()).collect(),
            _ => return Err(format!("{u:?} of an integer tensor")),
        };
        return Ok(Value::of(x.dtype, x.shape.clone(), Data::I(r)));
    }
    let v = x.as_f32()?;
    let f: fn(f32) -> f32 = match u {
        UnaryOp::Neg => |a| -a,
        UnaryOp::Abs => f32::abs,
        UnaryOp::Sqrt => f32::sqrt,
        UnaryOp::Reciprocal => |a| 1.0 / a,
        UnaryOp::Exp => f32::exp,
        UnaryOp::Log => f32::ln,
        UnaryOp::Erf => bertc_numerics::erf,
        UnaryOp::Tanh => bertc_numerics::tanh,
        UnaryOp::Sigmoid => |a| 1.0 / (1.0 + (-a).exp()),
        UnaryOp::Relu => |a| a.max(0.0),
        UnaryOp::Round => f32::round_ties_even,
        UnaryOp::Not => return Err("not of a float tensor".into()),
    };
    Ok(Value::of(
        x.dtype,
        x.shape.clone(),
        Data::F(v.iter().map(|&a| f(a)).collect()),
    ))
}

pub(crate) fn binary(op: BinaryOp, a: &Value, b: &Value) -> R<Value> {
    let out = bcast_shape(&a.shape, &b.shape)?;
    let ia = bcast_indices(&out, &a.shape);
    let ib = bcast_indices(&out, &b.shape);
    let pairs = ia.iter().zip(ib.iter());
    use BinaryOp::*;
    let data = match (&a.data, &b.data) {
        (Data::F(x), Data::F(y)) => {
            let xs = pairs.map(|(&i, &j)| (x[i], y[j]));
            match op {
                Add => Data::F(xs.map(|(p, q)| p + q).collect()),
                Sub => Data::F(xs.map(|(p, q)| p - q).collect()),
                Mul => Data::F(xs.map(|(p, q)| p * q).collect()),
                Div => Data::F(xs.map(|(p, q)| p / q).collect()),
                Pow => Data::F(xs.map(|(p, q)| pow_f32(p, q)).collect()),
                Min => Data::F(xs.map(|(p, q)| p.min(q)).collect()),
                Max => Data::F(xs.map(|(p, q)| p.max(q)).collect()),
                Equal => Data::B(xs.map(|(p, q)| p == q).collect()),
                Less => Data::B(xs.map(|(p, q)| p < q).collect()),
                LessOrEqual => Data::B(xs.map(|(p, q)| p <= q).collect()),
                Greater => Data::B(xs.map(|(p, q)| p > q).collect()),
                GreaterOrEqual => Data::B(xs.map(|(p, q)| p >= q).collect()),
                And | Or => return Err("logical op on floats".into()),
            }
        }
        (Data::F(x), Data::I(y)) if op == Pow => {
            Data::F(pairs.map(|(&i, &j)| pow_f32(x[i], y[j] as f32)).collect())
        }
        (Data::I(x), Data::I(y)) => {
            let xs = pairs.map(|(&i, &j)| (x[i], y[j]));
            match op {
                Add => Data::I(xs.map(|(p, q)| p.wrapping_add(q)).collect()),
                Sub => Data::I(xs.map(|(p, q)| p.wrapping_sub(q)).collect()),
                Mul => Data::I(xs.map(|(p, q)| p.wrapping_mul(q)).collect()),
                Div => Data::I(
                    xs.map(|(p, q)| {
                        if q == 0 {
                            Err("integer division by zero".to_string())
                        } else {
                            Ok(p.wrapping_div(q))
                        }
                    })
                    .collect::<R<_>>()?,
                ),
                Pow => Data::I(
                    xs.map(|(p, q)| p.wrapping_pow(q.clamp(0, 63) as u32))
                        .collect(),
                ),
                Min => Data::I(xs.map(|(p, q)| p.min(q)).collect()),
                Max => Data::I(xs.map(|(p, q)| p.max(q)).collect()),
                Equal => Data::B(xs.map(|(p, q)| p == q).collect()),
                Less => Data::B(xs.map(|(p, q)| p < q).collect()),
                LessOrEqual => Data::B(xs.map(|(p, q)| p <= q).collect()),
                Greater => Data::B(xs.map(|(p, q)| p > q).collect()),
                GreaterOrEqual => Data::B(xs.map(|(p, q)| p >= q).collect()),
                And | Or => return Err("logical op on integers".into()),
            }
        }
        (Data::B(x), Data::B(y)) => {
            let xs = pairs.map(|(&i, &j)| (x[i], y[j]));
            match op {
                And => Data::B(xs.map(|(p, q)| p && q).collect()),
                Or => Data::B(xs.map(|(p, q)| p || q).collect()),
                Equal => Data::B(xs.map(|(p, q)| p == q).collect()),
                _ => return Err(format!("{op:?} on bools")),
            }
        }
        _ => return Err(format!("operand types differ: {} and {}", a.dtype, b.dtype)),
    };
    let dtype = match data {
        Data::B(_) => DType::Bool,
        _ => a.dtype,
    };
    Ok(Value::of(dtype, out, data))
}

pub(crate) fn pow_f32(p: f32, q: f32) -> f32 {
    if q == 2.0 {
        p * p
    } else if q == 3.0 {
        p * p * p
    } else {
        p.powf(q)
    }
}

pub(crate) fn cast(x: &Value, to: DType) -> Value {
    let data = if to.is_float() {
        let v: Vec<f32> = match &x.data {
            Data::F(v) => v.clone(),
            Data::I(v) => v.iter().map(|&a| a as f32).collect(),
            Data::B(v) => v.iter().map(|&a| a as u8 as f32).collect(),
        };
        Data::F(match to {
            DType::F16 => v
                .into_iter()
                .map(|a| half::f16::from_f32(a).to_f32())
                .collect(),
            DType::BF16 => v
                .into_iter()
                .map(|a| half::bf16::from_f32(a).to_f32())
                .collect(),
            _ => v,
        })
    } else if to == DType::Bool {
        Data::B(match &x.data {
            Data::F(v) => v.iter().map(|&a| a != 0.0).collect(),
            Data::I(v) => v.iter().map(|&a| a != 0).collect(),
            Data::B(v) => v.clone(),
        })
    } else {
        let v: Vec<i64> = match &x.data {
            Data::F(v) => v.iter().map(|&a| a as i64).collect(),
            Data::I(v) => v.clone(),
            Data::B(v) => v.iter().map(|&a| a as i64).collect(),
        };
        Data::I(match to {
            DType::I32 => v.into_iter().map(|a| a as i32 as i64).collect(),
            DType::I16 => v.into_iter().map(|a| a as i16 as i64).collect(),
            DType::I8 => v.into_iter().map(|a| a as i8 as i64).collect(),
            DType::U8 => v.into_iter().map(|a| a as u8 as i64).collect(),
            _ => v,
        })
    };
    Value::of(to, x.shape.clone(), data)
}

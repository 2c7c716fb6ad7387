//! Helpers for writing kernels in Cranelift IR: counted loops, a vector abstraction that is
//! `f32x4` where the target has 128-bit vectors and plain `f32` where it has none (riscv64
//! without `v`), the math functions the kernels need (`exp`, `erf`, `tanh`) as
//! branch-free polynomial approximations, the activations built on them, and int8 loads.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, Endianness, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::{FunctionBuilder, Variable};

use crate::lower::Act;
use bertc_ir::GeluApprox;

/// A function under construction with the target's vector shape.
pub struct Emit<'a> {
    pub b: FunctionBuilder<'a>,
    /// Lanes of the vector type (4, or 1 when the target has no usable vectors).
    pub lanes: usize,
    /// Whether fused multiply-add is available (else multiply then add).
    pub fma: bool,
}

/// How many floats a loop over a row covers: known when compiling, or a runtime count.
#[derive(Clone, Copy)]
enum Extent {
    Fixed(usize),
    Runtime(Value),
}

/// The element shape of a value in a row loop: the vector type or its scalar tail.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Vector,
    Scalar,
}

/// The Taylor coefficients of e^r to degree 6, highest first (for Horner's rule), which both
/// the Cranelift and the AVX2 exp use on |r| <= ln2/2 (relative error below 2e-7).
pub const EXP_TAYLOR: [f32; 7] = [
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

pub fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

impl<'a> Emit<'a> {
    pub fn new(b: FunctionBuilder<'a>, lanes: usize, fma: bool) -> Self {
        Emit { b, lanes, fma }
    }

    pub fn vty(&self) -> Type {
        if self.lanes == 4 {
            types::F32X4
        } else {
            types::F32
        }
    }

    pub fn ty(&self, s: Shape) -> Type {
        match s {
            Shape::Vector => self.vty(),
            Shape::Scalar => types::F32,
        }
    }

    pub fn i(&mut self, v: i64) -> Value {
        self.b.ins().iconst(types::I64, v)
    }

    pub fn f(&mut self, v: f32) -> Value {
        self.b.ins().f32const(v)
    }

    /// A constant in shape `s`.
    pub fn fs(&mut self, s: Shape, v: f32) -> Value {
        let c = self.f(v);
        self.splat(s, c)
    }

    pub fn splat(&mut self, s: Shape, x: Value) -> Value {
        match (s, self.lanes) {
            (Shape::Vector, 4) => self.b.ins().splat(types::F32X4, x),
            _ => x,
        }
    }

    pub fn load(&mut self, s: Shape, ptr: Value, off: i32) -> Value {
        let t = self.ty(s);
        self.b.ins().load(t, mem(), ptr, off)
    }

    pub fn store(&mut self, v: Value, ptr: Value, off: i32) {
        self.b.ins().store(mem(), v, ptr, off);
    }

    pub fn load_i32(&mut self, ptr: Value, off: i32) -> Value {
        self.b.ins().sload32(mem(), ptr, off)
    }

    /// `a * b + c`.
    pub fn mul_add(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let m = self.b.ins().fmul(a, b);
            self.b.ins().fadd(m, c)
        }
    }

    /// The sum of the lanes of `v` (`v` itself for a scalar).
    pub fn hsum(&mut self, s: Shape, v: Value) -> Value {
        if s == Shape::Scalar || self.lanes == 1 {
            return v;
        }
        let mut acc = self.b.ins().extractlane(v, 0);
        for l in 1..self.lanes as u8 {
            let x = self.b.ins().extractlane(v, l);
            acc = self.b.ins().fadd(acc, x);
        }
        acc
    }

    /// `ptr + index * scale` (bytes).
    pub fn addr(&mut self, ptr: Value, index: Value, scale: i64) -> Value {
        let o = self.b.ins().imul_imm_s(index, scale);
        self.b.ins().iadd(ptr, o)
    }

    pub fn var(&mut self, ty: Type, init: Value) -> Variable {
        let v = self.b.declare_var(ty);
        self.b.def_var(v, init);
        v
    }

    /// `for i in start..end (step)`; the body gets `i`.
    pub fn for_range(
        &mut self,
        start: Value,
        end: Value,
        step: i64,
        mut body: impl FnMut(&mut Self, Value),
    ) {
        let iv = self.var(types::I64, start);
        let header = self.b.create_block();
        let body_b = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let i = self.b.use_var(iv);
        let c = self.b.ins().icmp(IntCC::SignedLessThan, i, end);
        self.b.ins().brif(c, body_b, &[], exit, &[]);
        self.b.switch_to_block(body_b);
        self.b.seal_block(body_b);
        body(self, i);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.def_var(iv, next);
        self.b.ins().jump(header, &[]);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    /// Runs `then` when `cond` (an integer) is non-zero.
    pub fn if_nonzero(&mut self, cond: Value, then: impl FnOnce(&mut Self)) {
        let t = self.b.create_block();
        let done = self.b.create_block();
        self.b.ins().brif(cond, t, &[], done, &[]);
        self.b.switch_to_block(t);
        self.b.seal_block(t);
        then(self);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
    }

    /// Copies a row of `width` floats from `src` to `dst`.
    pub fn copy_row(&mut self, src: Value, dst: Value, width: usize) {
        self.row(width, |e, off, s| {
            let a = e.b.ins().iadd(src, off);
            let v = e.load(s, a, 0);
            let o = e.b.ins().iadd(dst, off);
            e.store(v, o, 0);
        });
    }

    /// Zeroes `bytes` bytes at `ptr` (a multiple of the vector width in bytes).
    pub fn zero_bytes(&mut self, ptr: Value, bytes: Value) {
        let step = self.lanes as i64 * 4;
        let z = self.i(0);
        self.for_range(z, bytes, step, |e, off| {
            let zv = e.fs(Shape::Vector, 0.0);
            let a = e.b.ins().iadd(ptr, off);
            e.store(zv, a, 0);
        });
    }

    /// Runs `then` when `cond` is non-zero, else `otherwise`.
    pub fn if_else(
        &mut self,
        cond: Value,
        then: impl FnOnce(&mut Self),
        otherwise: impl FnOnce(&mut Self),
    ) {
        let t = self.b.create_block();
        let f = self.b.create_block();
        let done = self.b.create_block();
        self.b.ins().brif(cond, t, &[], f, &[]);
        self.b.switch_to_block(t);
        self.b.seal_block(t);
        then(self);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(f);
        self.b.seal_block(f);
        otherwise(self);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
    }

    /// `act(v)` in shape `s`: the activations of the portable kernels and epilogues.
    pub fn act(&mut self, s: Shape, v: Value, act: Act) -> Value {
        let e = self;
        match act {
            Act::Relu => {
                let z = e.fs(s, 0.0);
                e.b.ins().fmax(v, z)
            }
            Act::Tanh => e.tanh(s, v),
            Act::Gelu(GeluApprox::Erf) => {
                // 0.5 x (1 + erf(x/√2)) = 0.5 (x + |x| erf(|x|/√2)): no sign handling needed
                let ax = e.b.ins().fabs(v);
                let k = e.fs(s, std::f32::consts::FRAC_1_SQRT_2);
                let z = e.b.ins().fmul(ax, k);
                let er = e.erf_nonneg(s, z);
                let t = e.mul_add(ax, er, v);
                let half = e.fs(s, 0.5);
                e.b.ins().fmul(t, half)
            }
            Act::Gelu(GeluApprox::Tanh) => {
                let c3 = e.fs(s, 0.044715);
                let x2 = e.b.ins().fmul(v, v);
                let x3 = e.b.ins().fmul(x2, v);
                let inner = e.mul_add(c3, x3, v);
                let k = e.fs(s, (2.0 / std::f64::consts::PI).sqrt() as f32);
                let z = e.b.ins().fmul(inner, k);
                let th = e.tanh(s, z);
                let one = e.fs(s, 1.0);
                let t = e.b.ins().fadd(th, one);
                let half = e.fs(s, 0.5);
                let hx = e.b.ins().fmul(v, half);
                e.b.ins().fmul(hx, t)
            }
        }
    }

    /// The int8 values at `p` (4 for a vector, 1 for a scalar) as f32, in shape `s`.
    pub fn load_i8_as_f32(&mut self, s: Shape, p: Value) -> Value {
        let e = self;
        if s == Shape::Scalar || e.lanes == 1 {
            let v = e.b.ins().sload8(types::I32, mem(), p, 0);
            return e.b.ins().fcvt_from_sint(types::F32, v);
        }
        let w = e.b.ins().load(types::I32, mem(), p, 0);
        let v = e.b.ins().scalar_to_vector(types::I32X4, w);
        let le = MemFlagsData::new().with_endianness(Endianness::Little);
        let b = e.b.ins().bitcast(types::I8X16, le, v);
        let h = e.b.ins().swiden_low(b);
        let i = e.b.ins().swiden_low(h);
        e.b.ins().fcvt_from_sint(types::F32X4, i)
    }

    /// Visits a row of `width` floats (a constant): vectors over the largest multiple of the
    /// lane count, then scalars. The body gets the byte offset and the shape.
    pub fn row(&mut self, width: usize, mut body: impl FnMut(&mut Self, Value, Shape)) {
        let main = width / self.lanes * self.lanes;
        if main > 0 && self.lanes > 1 {
            let z = self.i(0);
            let e = self.i(main as i64 * 4);
            let step = self.lanes as i64 * 4;
            self.for_range(z, e, step, |s, off| body(s, off, Shape::Vector));
        }
        let start = if self.lanes > 1 { main } else { 0 };
        if start < width {
            let z = self.i(start as i64 * 4);
            let e = self.i(width as i64 * 4);
            self.for_range(z, e, 4, |s, off| body(s, off, Shape::Scalar));
        }
    }

    /// Visits `n` floats (a runtime count) like `row`.
    pub fn span(&mut self, n: Value, mut body: impl FnMut(&mut Self, Value, Shape)) {
        let bytes = self.b.ins().imul_imm_s(n, 4);
        let start = if self.lanes > 1 {
            let mask = -(self.lanes as i64 * 4);
            let main = self.b.ins().band_imm_s(bytes, mask);
            let z = self.i(0);
            let step = self.lanes as i64 * 4;
            self.for_range(z, main, step, |s, off| body(s, off, Shape::Vector));
            main
        } else {
            self.i(0)
        };
        self.for_range(start, bytes, 4, |s, off| body(s, off, Shape::Scalar));
    }

    /// Sums over a row of `width` floats in one pass: `f` gives the `n` terms of each element
    /// (or vector).
    pub fn row_sums(
        &mut self,
        width: usize,
        n: usize,
        f: impl FnMut(&mut Self, Value, Shape) -> Vec<Value>,
    ) -> Vec<Value> {
        self.sums(Extent::Fixed(width), n, f)
    }

    /// The sum over a span of `n` floats (a runtime count) of `f`'s term for each element (or
    /// vector), as `row_sum` for a fixed width.
    pub fn span_sum(
        &mut self,
        n: Value,
        mut f: impl FnMut(&mut Self, Value, Shape) -> Value,
    ) -> Value {
        self.sums(Extent::Runtime(n), 1, |e, off, s| vec![f(e, off, s)])[0]
    }

    fn sums(
        &mut self,
        extent: Extent,
        n: usize,
        mut f: impl FnMut(&mut Self, Value, Shape) -> Vec<Value>,
    ) -> Vec<Value> {
        let vt = self.vty();
        let mut accs = Vec::new();
        for _ in 0..n {
            let vz = self.fs(Shape::Vector, 0.0);
            let sz = self.f(0.0);
            accs.push((self.var(vt, vz), self.var(types::F32, sz)));
        }
        let body = |e: &mut Self, off: Value, s: Shape| {
            let terms = f(e, off, s);
            for (v, &(vacc, sacc)) in terms.into_iter().zip(&accs) {
                let acc = if s == Shape::Vector && e.lanes > 1 {
                    vacc
                } else {
                    sacc
                };
                let a = e.b.use_var(acc);
                let r = e.b.ins().fadd(a, v);
                e.b.def_var(acc, r);
            }
        };
        match extent {
            Extent::Fixed(width) => self.row(width, body),
            Extent::Runtime(n) => self.span(n, body),
        }
        accs.into_iter()
            .map(|(vacc, sacc)| {
                let v = self.b.use_var(vacc);
                let h = self.hsum(Shape::Vector, v);
                let s = self.b.use_var(sacc);
                self.b.ins().fadd(h, s)
            })
            .collect()
    }

    /// The maximum of a scalar accumulator and, with vectors, every lane of a vector one
    /// (`fmax`: NaN propagates).
    pub fn max_of(&mut self, vacc: Variable, sacc: Variable) -> Value {
        let mut m = self.b.use_var(sacc);
        if self.lanes > 1 {
            let v = self.b.use_var(vacc);
            for l in 0..self.lanes as u8 {
                let x = self.b.ins().extractlane(v, l);
                m = self.b.ins().fmax(m, x);
            }
        }
        m
    }

    pub fn row_sum(
        &mut self,
        width: usize,
        mut f: impl FnMut(&mut Self, Value, Shape) -> Value,
    ) -> Value {
        self.row_sums(width, 1, |e, off, s| vec![f(e, off, s)])[0]
    }

    fn bitcast_f(&mut self, s: Shape, x: Value) -> Value {
        let t = self.ty(s);
        let flags = if t.is_vector() {
            MemFlagsData::new().with_endianness(Endianness::Little)
        } else {
            MemFlagsData::new()
        };
        self.b.ins().bitcast(t, flags, x)
    }

    /// `e^x`, relative error about 2e-7 for x in [-87, 88] (inputs are clamped there).
    pub fn exp(&mut self, s: Shape, x: Value) -> Value {
        let lo = self.fs(s, -87.3);
        let hi = self.fs(s, 88.0);
        let x = self.b.ins().fmax(x, lo);
        let x = self.b.ins().fmin(x, hi);
        // n = round(x / ln 2) by the 1.5 * 2^23 trick (no rounding instruction needed)
        let log2e = self.fs(s, std::f32::consts::LOG2_E);
        let magic = self.fs(s, 12582912.0);
        let t = self.mul_add(x, log2e, magic);
        let n = self.b.ins().fsub(t, magic);
        let ln2_hi = self.fs(s, -0.693_145_75);
        let ln2_lo = self.fs(s, -1.428_606_8e-6);
        let r = self.mul_add(n, ln2_hi, x);
        let r = self.mul_add(n, ln2_lo, r);
        // e^r on |r| <= ln2/2: Taylor to degree 6
        let mut p = self.fs(s, EXP_TAYLOR[0]);
        for &c in &EXP_TAYLOR[1..] {
            let cv = self.fs(s, c);
            p = self.mul_add(p, r, cv);
        }
        // 2^n from its exponent bits
        let it = if s == Shape::Vector && self.lanes == 4 {
            types::I32X4
        } else {
            types::I32
        };
        let ni = self.b.ins().fcvt_to_sint_sat(it, n);
        let bias = if it == types::I32X4 {
            let c = self.b.ins().iconst(types::I32, 127);
            self.b.ins().splat(types::I32X4, c)
        } else {
            self.b.ins().iconst(types::I32, 127)
        };
        let e = self.b.ins().iadd(ni, bias);
        let bits = self.b.ins().ishl_imm_s(e, 23);
        let pow2 = self.bitcast_f(s, bits);
        self.b.ins().fmul(p, pow2)
    }

    /// `tanh(x)` as `1 - 2 / (e^{2x} + 1)`, x clamped to [-9, 9]; absolute error below 3e-7.
    pub fn tanh(&mut self, s: Shape, x: Value) -> Value {
        let lo = self.fs(s, -9.0);
        let hi = self.fs(s, 9.0);
        let x = self.b.ins().fmax(x, lo);
        let x = self.b.ins().fmin(x, hi);
        let x2 = self.b.ins().fadd(x, x);
        let e = self.exp(s, x2);
        let one = self.fs(s, 1.0);
        let two = self.fs(s, 2.0);
        let d = self.b.ins().fadd(e, one);
        let q = self.b.ins().fdiv(two, d);
        self.b.ins().fsub(one, q)
    }

    /// `erf(x)` for `x >= 0` (Abramowitz and Stegun 7.1.26, absolute error below 1.5e-7).
    pub fn erf_nonneg(&mut self, s: Shape, ax: Value) -> Value {
        let one = self.fs(s, 1.0);
        let pc = self.fs(s, 0.327_591_1);
        let den = self.mul_add(pc, ax, one);
        let t = self.b.ins().fdiv(one, den);
        let a = [
            1.061_405_4,
            -1.453_152_1,
            1.421_413_8,
            -0.284_496_74,
            0.254_829_6,
        ];
        let mut p = self.fs(s, a[0]);
        for &c in &a[1..] {
            let cv = self.fs(s, c);
            p = self.mul_add(p, t, cv);
        }
        p = self.b.ins().fmul(p, t);
        let x2 = self.b.ins().fmul(ax, ax);
        let nx2 = self.b.ins().fneg(x2);
        let e = self.exp(s, nx2);
        let pe = self.b.ins().fmul(p, e);
        self.b.ins().fsub(one, pe)
    }
}

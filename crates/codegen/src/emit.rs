//! Helpers for writing kernels in Cranelift IR: counted loops, a vector abstraction that is
//! `f32x4` where the target has 128-bit vectors and plain `f32` where it has none (riscv64
//! without `v`), the math functions the kernels need (`exp`, `erf`, `tanh`) as
//! branch-free polynomial approximations, the activations built on them, and int8 loads.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, Endianness, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type, Value,
};
use cranelift_frontend::{FunctionBuilder, Variable};

use crate::lower::Act;
use bertc_ir::{GeluApprox, Qdq};

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

/// 1.5 · 2²³: adding and subtracting it rounds an f32 of magnitude below 2²² to an integer,
/// ties to even (without SSE4.1's `roundps`).
pub const ROUND_MAGIC: f32 = 12_582_912.0;

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

    /// Runs `body(e, mm)` for the `mm` in `1..=mr` that equals `m` (a runtime row count in that
    /// range; nothing for another), through a jump table: one indirect branch, where a chain of
    /// `mr` tests would cost as much as a short GEMM tile's prologue.
    pub fn dispatch_rows(&mut self, m: Value, mr: usize, mut body: impl FnMut(&mut Self, usize)) {
        let done = self.b.create_block();
        let blocks: Vec<_> = (0..mr).map(|_| self.b.create_block()).collect();
        let index = self.b.ins().iadd_imm_s(m, -1);
        let index = self.b.ins().ireduce(types::I32, index);
        let calls: Vec<_> = blocks
            .iter()
            .map(|&b| self.b.func.dfg.block_call(b, &[]))
            .collect();
        let default = self.b.func.dfg.block_call(done, &[]);
        let table = self
            .b
            .create_jump_table(cranelift_codegen::ir::JumpTableData::new(default, &calls));
        self.b.ins().br_table(index, table);
        for (i, &block) in blocks.iter().enumerate() {
            self.b.switch_to_block(block);
            self.b.seal_block(block);
            body(self, i + 1);
            self.b.ins().jump(done, &[]);
        }
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

    /// A static quantization point (`bertc_numerics::qdq`) of `x` in shape `s`. Rounding by
    /// `ROUND_MAGIC` is ties to even for `|x / scale|` below 2²², and a larger quotient is
    /// clamped to the type's range whichever way it rounds (the widest, i16's, is far below).
    pub fn qdq(&mut self, s: Shape, x: Value, q: Qdq) -> Value {
        let range = q.range().unwrap_or((f32::MIN, f32::MAX));
        let sc = self.fs(s, q.scale);
        let z = self.fs(s, q.zero as f32);
        let y = self.centered(s, x, (sc, z), range);
        self.b.ins().fmul(y, sc)
    }

    /// `bertc_numerics::centered` of `x` in shape `s`, with `scale` and `zero` in that shape:
    /// `min(max(round_ne(x / scale) + zero, lo), hi) - zero`, rounding by `ROUND_MAGIC`
    /// (see `qdq`).
    pub fn centered(
        &mut self,
        s: Shape,
        x: Value,
        (scale, zero): (Value, Value),
        (lo, hi): (f32, f32),
    ) -> Value {
        let y = self.b.ins().fdiv(x, scale);
        let m = self.fs(s, ROUND_MAGIC);
        let y = self.b.ins().fadd(y, m);
        let y = self.b.ins().fsub(y, m);
        let y = self.b.ins().fadd(y, zero);
        let lo = self.fs(s, lo);
        let hi = self.fs(s, hi);
        let y = self.b.ins().fmax(y, lo);
        let y = self.b.ins().fmin(y, hi);
        self.b.ins().fsub(y, zero)
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
                // bertc_numerics::gelu_erf: fma(erf(x / √2), x/2, x/2)
                let k = e.fs(s, std::f32::consts::FRAC_1_SQRT_2);
                let z = e.b.ins().fmul(v, k);
                let er = e.erf(s, z);
                let half = e.fs(s, 0.5);
                let h = e.b.ins().fmul(v, half);
                e.mul_add(er, h, h)
            }
            Act::Gelu(GeluApprox::Tanh) => {
                // bertc_numerics::gelu_tanh: x / (1 + exp(x (x² c3 + c1)))
                use bertc_numerics::{GELU_TANH_C3, GELU_TANH_K};
                let x2 = e.b.ins().fmul(v, v);
                let c3 = e.fs(s, -2.0 * GELU_TANH_K * GELU_TANH_C3);
                let c1 = e.fs(s, -2.0 * GELU_TANH_K);
                let u = e.mul_add(x2, c3, c1);
                let u = e.b.ins().fmul(u, v);
                let ex = e.exp(s, u);
                let one = e.fs(s, 1.0);
                let d = e.b.ins().fadd(ex, one);
                e.b.ins().fdiv(v, d)
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

    /// The 4 x 4 transpose of four f32x4 rows: lane `i` of result `j` is lane `j` of row `i`
    /// (two rounds of lane interleaves; Cranelift's `shuffle` picks 32-bit lanes of `a || b`
    /// by byte).
    pub fn transpose4(&mut self, [r0, r1, r2, r3]: [Value; 4]) -> [Value; 4] {
        let le = MemFlagsData::new().with_endianness(Endianness::Little);
        let mut shuf = |a: Value, b: Value, lanes: [u8; 4]| {
            let bytes: Vec<u8> = lanes
                .iter()
                .flat_map(|&l| (0..4).map(move |k| l * 4 + k))
                .collect();
            let imm = self.b.func.dfg.immediates.push(bytes.into());
            let a = self.b.ins().bitcast(types::I8X16, le, a);
            let b = self.b.ins().bitcast(types::I8X16, le, b);
            let s = self.b.ins().shuffle(a, b, imm);
            self.b.ins().bitcast(types::F32X4, le, s)
        };
        // [r0.0 r1.0 r0.1 r1.1], [r2.0 r3.0 r2.1 r3.1], and the same of lanes 2 and 3
        let t0 = shuf(r0, r1, [0, 4, 1, 5]);
        let t1 = shuf(r2, r3, [0, 4, 1, 5]);
        let t2 = shuf(r0, r1, [2, 6, 3, 7]);
        let t3 = shuf(r2, r3, [2, 6, 3, 7]);
        [
            shuf(t0, t1, [0, 1, 4, 5]),
            shuf(t0, t1, [2, 3, 6, 7]),
            shuf(t2, t3, [0, 1, 4, 5]),
            shuf(t2, t3, [2, 3, 6, 7]),
        ]
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

    /// `n` canonical sums (`bertc_numerics::sum`) over an extent: element `i` into lane
    /// `i % 16`, the 16 lanes as `16 / lanes` vector accumulators (or 16 scalar ones) over
    /// the whole groups of 16, then the tail's elements added to their lanes in a stack slot,
    /// and the lanes folded in halves.
    fn sums(
        &mut self,
        extent: Extent,
        n: usize,
        mut f: impl FnMut(&mut Self, Value, Shape) -> Vec<Value>,
    ) -> Vec<Value> {
        use bertc_numerics::LANES;
        let (ty, per, shape) = if self.lanes > 1 {
            (self.vty(), LANES / self.lanes, Shape::Vector)
        } else {
            (types::F32, LANES, Shape::Scalar)
        };
        let step = self.lanes as i64 * 4;
        let mut accs = Vec::new();
        for _ in 0..n {
            let lanes: Vec<Variable> = (0..per)
                .map(|_| {
                    let z = self.fs(shape, 0.0);
                    self.var(ty, z)
                })
                .collect();
            accs.push(lanes);
        }
        let (bytes, main) = match extent {
            Extent::Fixed(w) => (self.i(w as i64 * 4), self.i((w / LANES * LANES) as i64 * 4)),
            Extent::Runtime(n) => {
                let b = self.b.ins().imul_imm_s(n, 4);
                (b, self.b.ins().band_imm_s(b, -(LANES as i64 * 4)))
            }
        };
        let z = self.i(0);
        self.for_range(z, main, LANES as i64 * 4, |e, off| {
            for q in 0..per {
                let o = e.b.ins().iadd_imm_s(off, q as i64 * step);
                for (t, acc) in f(e, o, shape).into_iter().zip(&accs) {
                    let a = e.b.use_var(acc[q]);
                    let r = e.b.ins().fadd(a, t);
                    e.b.def_var(acc[q], r);
                }
            }
        });
        if matches!(extent, Extent::Fixed(w) if w % LANES == 0) {
            // no tail: the lanes straight from the accumulators
            return accs
                .iter()
                .map(|acc| {
                    let mut l = Vec::with_capacity(LANES);
                    for &v in acc {
                        let v = self.b.use_var(v);
                        if self.lanes > 1 {
                            l.extend((0..self.lanes as u8).map(|i| self.b.ins().extractlane(v, i)));
                        } else {
                            l.push(v);
                        }
                    }
                    self.fold(l)
                })
                .collect();
        }
        // the tail: element `main + i` into lane i, the lanes in memory
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (n * LANES * 4) as u32,
            6,
        ));
        let base = self.b.ins().stack_addr(types::I64, slot, 0);
        for (si, acc) in accs.iter().enumerate() {
            for (q, &v) in acc.iter().enumerate() {
                let x = self.b.use_var(v);
                let at = (si * LANES * 4) as i64 + q as i64 * step;
                self.b.ins().store(mem(), x, base, at as i32);
            }
        }
        self.for_range(main, bytes, 4, |e, off| {
            let lane = e.b.ins().isub(off, main);
            let at = e.b.ins().iadd(base, lane);
            for (si, t) in f(e, off, Shape::Scalar).into_iter().enumerate() {
                let o = (si * LANES * 4) as i32;
                let a = e.b.ins().load(types::F32, mem(), at, o);
                let r = e.b.ins().fadd(a, t);
                e.b.ins().store(mem(), r, at, o);
            }
        });
        (0..n)
            .map(|si| {
                let l = (0..LANES)
                    .map(|i| {
                        let at = ((si * LANES + i) * 4) as i32;
                        self.b.ins().load(types::F32, mem(), base, at)
                    })
                    .collect();
                self.fold(l)
            })
            .collect()
    }

    /// `bertc_numerics::fold` of 16 lane values: lane i plus lane i + 8, then + 4, + 2, + 1.
    fn fold(&mut self, mut l: Vec<Value>) -> Value {
        let mut w = l.len();
        while w > 1 {
            w /= 2;
            for i in 0..w {
                l[i] = self.b.ins().fadd(l[i], l[i + w]);
            }
        }
        l[0]
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
        use bertc_numerics::{EXP_HI, EXP_LN2_HI, EXP_LN2_LO, EXP_LO, EXP_MAGIC, EXP_TAYLOR};
        let lo = self.fs(s, EXP_LO);
        let hi = self.fs(s, EXP_HI);
        let x = self.b.ins().fmax(x, lo);
        let x = self.b.ins().fmin(x, hi);
        // n = round(x / ln 2) by the 1.5 * 2^23 trick (no rounding instruction needed)
        let log2e = self.fs(s, std::f32::consts::LOG2_E);
        let magic = self.fs(s, EXP_MAGIC);
        let t = self.mul_add(x, log2e, magic);
        let n = self.b.ins().fsub(t, magic);
        let ln2_hi = self.fs(s, EXP_LN2_HI);
        let ln2_lo = self.fs(s, EXP_LN2_LO);
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

    /// `tanh(x)` as `bertc_numerics::tanh`: `2 / (1 + e^{-2x}) - 1`.
    pub fn tanh(&mut self, s: Shape, x: Value) -> Value {
        let m2 = self.fs(s, -2.0);
        let u = self.b.ins().fmul(x, m2);
        let ex = self.exp(s, u);
        let one = self.fs(s, 1.0);
        let d = self.b.ins().fadd(ex, one);
        let two = self.fs(s, 2.0);
        let q = self.b.ins().fdiv(two, d);
        self.b.ins().fsub(q, one)
    }

    /// `erf(z)` as `bertc_numerics::erf`: `z P(z²) / Q(z²)`, z clamped to [-4, 4].
    pub fn erf(&mut self, s: Shape, z: Value) -> Value {
        use bertc_numerics::{ERF_CLAMP, ERF_P, ERF_Q};
        let lo = self.fs(s, -ERF_CLAMP);
        let hi = self.fs(s, ERF_CLAMP);
        let z = self.b.ins().fmax(z, lo);
        let z = self.b.ins().fmin(z, hi);
        let z2 = self.b.ins().fmul(z, z);
        let horner = |e: &mut Self, c: &[f32]| {
            let mut p = e.fs(s, c[0]);
            for &k in &c[1..] {
                let kv = e.fs(s, k);
                p = e.mul_add(p, z2, kv);
            }
            p
        };
        let p = horner(self, &ERF_P);
        let q = horner(self, &ERF_Q);
        let p = self.b.ins().fmul(p, z);
        self.b.ins().fdiv(p, q)
    }
}

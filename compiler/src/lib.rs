//! bertc's compiler core: the IR, the importers that build it (ONNX and Hugging Face
//! safetensors folders) and the reference interpreter that executes any IR. Nothing here knows
//! a pass; passes live in `bertc-passes`.

pub mod codegen;
pub mod hf;
pub mod interp;
pub mod ir;
pub mod onnx;

mod load;
pub use load::{load_model, LoadError, ModelSource};

/// Defines `fn $name(args) -> R` that runs `$body_fn(args)` compiled for AVX2 when the CPU has
/// it (the same arithmetic in wider vectors), or as is. `$body_fn` should be
/// `#[inline(always)]` so that it is compiled into each copy. For the reference numerics of the
/// interpreter and the pruning passes; generated code selects its kernels by target instead.
#[macro_export]
macro_rules! avx2_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($p:ident: $t:ty),* $(,)?) $(-> $r:ty)? = $body_fn:path) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($p: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide($($p: $t),*) $(-> $r)? {
                    $body_fn($($p),*)
                }
                // SAFETY: the CPU has AVX2.
                return unsafe { wide($($p),*) };
            }
            $body_fn($($p),*)
        }
    };
}

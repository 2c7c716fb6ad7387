//! `--quantize`: the schemes the driver offers and the pass each runs for this machine.

use bertc_ir::Graph;
use bertc_passes::PassReport;

use crate::CliError;

/// The quantization schemes `--quantize` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Quantize {
    /// Linears on int8 weights (symmetric per output channel, round to nearest), activations
    /// quantized per token at run time.
    Int8,
}

/// Quantizes a fused graph's linears for this machine: activations of 7 bits on x86-64
/// without VNNI (AVX2's `vpmaddubsw` adds pairs of u8 x s8 products in 16 bits, which 8-bit
/// activations can overflow), 8 bits elsewhere.
pub fn quantize_graph(g: &mut Graph, q: Quantize) -> Result<PassReport, CliError> {
    match q {
        Quantize::Int8 => {
            let host = bertc_targets::Target::host();
            let vnni = host.has("avx512vnni") || host.arch != bertc_targets::Arch::X86_64;
            let pass = bertc_passes::QuantizeInt8 {
                abits: if vnni { 8 } else { 7 },
            };
            Ok(bertc_passes::run_pass(&pass, g)?)
        }
    }
}

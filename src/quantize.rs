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

impl Quantize {
    /// The scheme's name on the command line and in latency profiles.
    pub fn name(self) -> &'static str {
        match self {
            Quantize::Int8 => "int8",
        }
    }
}

/// Quantizes a fused graph's linears: 8-bit activations on every target (each kernel sums
/// their products exactly).
pub fn quantize_graph(g: &mut Graph, q: Quantize) -> Result<PassReport, CliError> {
    match q {
        Quantize::Int8 => Ok(bertc_passes::run_pass(
            &bertc_passes::QuantizeInt8::default(),
            g,
        )?),
    }
}

//! The one table of ISA features: for each, its architecture, the `--cpu` levels that have it,
//! the Cranelift ISA flags it turns on, the name the artifact's start-up check passes to the C
//! compiler's `__builtin_cpu_supports`, and how this machine detects it. Host detection, the
//! CPU levels, code generation's ISA flags and the C glue's CPU check all read this table.

use crate::Arch;

/// One ISA feature.
pub struct Feature {
    pub arch: Arch,
    /// bertc's name, also Rust's (`is_x86_feature_detected!`) and the target's feature list.
    pub name: &'static str,
    /// The `--cpu` levels whose code may use it.
    pub cpus: &'static [&'static str],
    /// Cranelift ISA flags set when the target has it.
    pub cranelift: &'static [&'static str],
    /// How the artifact checks at start-up that the machine has it (None: not checked, the
    /// architecture's baseline or a feature with no such check).
    pub c_check: Option<CpuCheck>,
    /// Whether this machine has it (None: not detectable here, the feature is assumed absent
    /// unless it is the architecture's baseline).
    pub detect: Option<fn() -> bool>,
}

/// How an artifact's C glue asks the machine for a feature at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuCheck {
    /// GCC's `__builtin_cpu_supports(name)` (x86-64).
    Builtin(&'static str),
    /// Bit `n` of Linux's `getauxval(AT_HWCAP)` (aarch64, `<asm/hwcap.h>`).
    Hwcap(u32),
    /// Bit `n` of Linux's `getauxval(AT_HWCAP2)` (aarch64, `<asm/hwcap.h>`).
    Hwcap2(u32),
}

/// The `--cpu` levels of each architecture, in order (`native` is accepted everywhere too).
pub const CPUS: &[(Arch, &str)] = &[
    (Arch::X86_64, "x86-64"),
    (Arch::X86_64, "x86-64-v2"),
    (Arch::X86_64, "x86-64-v3"),
    (Arch::X86_64, "alderlake"),
    (Arch::X86_64, "x86-64-v4"),
    (Arch::X86_64, "cascadelake"),
    (Arch::Aarch64, "generic"),
    (Arch::Aarch64, "neoverse-n1"),
    (Arch::Aarch64, "neoverse-v1"),
    (Arch::Riscv64, "rv64gc"),
    (Arch::Riscv64, "rv64gcv"),
];

const V1: &[&str] = &[
    "x86-64",
    "x86-64-v2",
    "x86-64-v3",
    "alderlake",
    "x86-64-v4",
    "cascadelake",
];
const V2: &[&str] = &[
    "x86-64-v2",
    "x86-64-v3",
    "alderlake",
    "x86-64-v4",
    "cascadelake",
];
const V3: &[&str] = &["x86-64-v3", "alderlake", "x86-64-v4", "cascadelake"];
const V4: &[&str] = &["x86-64-v4", "cascadelake"];
/// x86-64-v4 with AVX512-VNNI (Cascade Lake, Ice Lake and later Xeons, Zen 4).
const VNNI: &[&str] = &["cascadelake"];
/// x86-64-v3 with AVX-VNNI, the VEX form of `vpdpbusd` on ymm registers, without AVX-512
/// (Alder Lake and later Intel clients, Sierra Forest).
const AVXVNNI: &[&str] = &["alderlake"];

/// An x86-64 feature row (`$name` a token, as `is_x86_feature_detected!` needs).
macro_rules! x86 {
    ($name:tt, $cpus:expr, [$($cl:literal),*], $check:expr) => {
        Feature {
            arch: Arch::X86_64,
            name: $name,
            cpus: $cpus,
            cranelift: &[$($cl),*],
            c_check: match $check {
                Some(name) => Some(CpuCheck::Builtin(name)),
                None => None,
            },
            detect: Some(|| {
                #[cfg(target_arch = "x86_64")]
                {
                    std::arch::is_x86_feature_detected!($name)
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            }),
        }
    };
}

/// An aarch64 feature row beyond the baseline: detected by `is_aarch64_feature_detected!` on
/// an aarch64 host (`$name` a token, as that macro needs), checked by the artifact at start-up
/// through `$check`.
macro_rules! arm {
    ($name:tt, $cpus:expr, $check:expr) => {
        Feature {
            arch: Arch::Aarch64,
            name: $name,
            cpus: $cpus,
            cranelift: &[],
            c_check: Some($check),
            detect: Some(|| {
                #[cfg(target_arch = "aarch64")]
                {
                    std::arch::is_aarch64_feature_detected!($name)
                }
                #[cfg(not(target_arch = "aarch64"))]
                {
                    false
                }
            }),
        }
    };
}

/// Every feature bertc knows, in the order target feature lists and CPU checks use.
pub const FEATURES: &[Feature] = &[
    x86!("sse2", V1, [], None),
    x86!("sse3", V2, ["has_sse3"], Some("sse3")),
    x86!("ssse3", V2, ["has_ssse3"], Some("ssse3")),
    x86!("sse4.1", V2, ["has_sse41"], Some("sse4.1")),
    x86!("sse4.2", V2, ["has_sse42"], Some("sse4.2")),
    x86!("avx", V3, ["has_avx"], Some("avx")),
    x86!("avx2", V3, ["has_avx2"], Some("avx2")),
    x86!("fma", V3, ["has_fma"], Some("fma")),
    x86!("avx512f", V4, ["has_avx512f"], Some("avx512f")),
    x86!("avx512bw", V4, [], Some("avx512bw")),
    x86!("avx512dq", V4, ["has_avx512dq"], Some("avx512dq")),
    x86!("avx512vl", V4, ["has_avx512vl"], Some("avx512vl")),
    x86!("avx512vnni", VNNI, [], Some("avx512vnni")),
    x86!("avxvnni", AVXVNNI, [], Some("avxvnni")),
    Feature {
        arch: Arch::Aarch64,
        name: "neon",
        cpus: &["generic", "neoverse-n1", "neoverse-v1"],
        cranelift: &[],
        c_check: None,
        detect: None,
    },
    // Armv8.2's dot product (`sdot`): Neoverse N1 and Cortex-A76 on (Graviton2 and later,
    // Ampere Altra, Raspberry Pi 5), Cortex-A55, Apple M1 on; HWCAP_ASIMDDP
    arm!(
        "dotprod",
        &["neoverse-n1", "neoverse-v1"],
        CpuCheck::Hwcap(20)
    ),
    // Armv8.6's int8 matrix multiply (`smmla`): Neoverse V1 (Graviton3), N2 (Azure Cobalt
    // 100), V2 (Graviton4), Cortex-A510/A710/X2 on, Apple M2 on; HWCAP2_I8MM
    arm!("i8mm", &["neoverse-v1"], CpuCheck::Hwcap2(13)),
    Feature {
        arch: Arch::Riscv64,
        name: "v",
        cpus: &["rv64gcv"],
        cranelift: &["has_v", "has_zvl128b"],
        c_check: None,
        detect: None,
    },
];

/// The row of a feature.
pub fn feature(arch: Arch, name: &str) -> Option<&'static Feature> {
    FEATURES.iter().find(|f| f.arch == arch && f.name == name)
}

/// The features of a `--cpu` level, in table order; `None` for a level `arch` does not have.
pub fn cpu_features(arch: Arch, cpu: &str) -> Option<Vec<String>> {
    CPUS.iter().find(|&&(a, c)| a == arch && c == cpu)?;
    Some(
        FEATURES
            .iter()
            .filter(|f| f.arch == arch && f.cpus.contains(&cpu))
            .map(|f| f.name.to_string())
            .collect(),
    )
}

/// The features this machine has, for its own architecture: every detectable one it reports,
/// and the baseline of an architecture without detection here.
pub fn host_features(arch: Arch) -> Vec<String> {
    FEATURES
        .iter()
        .filter(|f| f.arch == arch)
        .filter(|f| match f.detect {
            Some(d) => d(),
            None => CPUS
                .iter()
                .find(|&&(a, _)| a == arch)
                .is_some_and(|&(_, base)| f.cpus.contains(&base)),
        })
        .map(|f| f.name.to_string())
        .collect()
}

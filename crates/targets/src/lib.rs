//! Target descriptions: which triples bertc can compile for, their ISA features and vector
//! widths, detection of the host, and the latency profiles measured on a target. Knows
//! nothing of the IR.

mod caches;
mod features;
mod profile;
mod toolchain;

pub use caches::{declared_caches, host_caches, Caches};
pub use features::{cpu_features, feature, host_features, CpuCheck, Feature, CPUS, FEATURES};
pub use profile::{BlockKind, LatencyProfile, Point, ProfileError, PROFILE_FORMAT};
pub use toolchain::{Toolchain, CFLAGS};

use std::fmt;

/// An architecture bertc can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
    Riscv64,
}

/// A compilation target: a triple, the ISA features code may use and the caches it blocks
/// for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub arch: Arch,
    pub triple: String,
    pub features: Vec<String>,
    pub caches: Caches,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("unknown target '{0}' (supported: {supported})", supported = TRIPLES.join(", "))]
    UnknownTriple(String),
    #[error("unknown cpu '{cpu}' for {triple} (supported: {supported})")]
    UnknownCpu {
        cpu: String,
        triple: String,
        supported: String,
    },
}

/// The target triples bertc compiles for, one an architecture.
pub const TRIPLES: [&str; 3] = [
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "riscv64gc-unknown-linux-gnu",
];

/// The CPU names `--cpu` accepts for an architecture, for messages: `native, ` and its levels.
pub fn cpu_names(arch: Arch) -> String {
    std::iter::once("native")
        .chain(CPUS.iter().filter(|c| c.0 == arch).map(|c| c.1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The architecture's baseline level (its first `--cpu` level).
fn baseline(arch: Arch) -> &'static str {
    CPUS.iter()
        .find(|c| c.0 == arch)
        .map(|c| c.1)
        .expect("every architecture has a level")
}

/// The caches the architecture's baseline level declares.
fn baseline_caches(arch: Arch) -> Caches {
    declared_caches(arch, baseline(arch)).expect("every level declares its caches")
}

impl Target {
    /// The target for a triple, with the baseline features of its architecture.
    pub fn from_triple(triple: &str) -> Result<Target, TargetError> {
        let arch = match triple.split('-').next().unwrap_or("") {
            "x86_64" => Arch::X86_64,
            "aarch64" => Arch::Aarch64,
            "riscv64gc" | "riscv64" => Arch::Riscv64,
            _ => return Err(TargetError::UnknownTriple(triple.into())),
        };
        if !triple.contains("linux") {
            return Err(TargetError::UnknownTriple(triple.into()));
        }
        let features = cpu_features(arch, baseline(arch)).unwrap_or_default();
        Ok(Target {
            arch,
            triple: triple.into(),
            features,
            caches: baseline_caches(arch),
        })
    }

    /// The machine bertc runs on, with the features its CPU reports.
    pub fn host() -> Target {
        let (arch, triple) = if cfg!(target_arch = "x86_64") {
            (Arch::X86_64, "x86_64-unknown-linux-gnu")
        } else if cfg!(target_arch = "aarch64") {
            (Arch::Aarch64, "aarch64-unknown-linux-gnu")
        } else {
            (Arch::Riscv64, "riscv64gc-unknown-linux-gnu")
        };
        Target {
            arch,
            triple: triple.into(),
            features: host_features(arch),
            caches: host_caches(baseline_caches(arch)),
        }
    }

    /// The target for a triple and a CPU name: `native` (the features of this machine, when
    /// it has the target's architecture) or a named level (see `cpu_names`). `None` picks the
    /// default: `native` on the host architecture, the baseline elsewhere.
    pub fn with_cpu(triple: &str, cpu: Option<&str>) -> Result<Target, TargetError> {
        let mut t = Target::from_triple(triple)?;
        let host = Target::host();
        let cpu = cpu.unwrap_or(if host.arch == t.arch {
            "native"
        } else {
            "baseline"
        });
        let bad = || TargetError::UnknownCpu {
            cpu: cpu.to_string(),
            triple: triple.to_string(),
            supported: cpu_names(t.arch),
        };
        (t.features, t.caches) = match cpu {
            "native" if t.arch == host.arch => (host.features, host.caches),
            "baseline" => (t.features, t.caches),
            level => (
                cpu_features(t.arch, level).ok_or_else(bad)?,
                declared_caches(t.arch, level).ok_or_else(bad)?,
            ),
        };
        Ok(t)
    }

    /// The target the command-line options `--target`, `--cpu` and `--caches` name: this
    /// machine's triple without `triple`, and the caches of the CPU level (or of this machine)
    /// without `caches`.
    pub fn select(
        triple: Option<&str>,
        cpu: Option<&str>,
        caches: Option<Caches>,
    ) -> Result<Target, TargetError> {
        let host = Target::host().triple;
        let t = Target::with_cpu(triple.unwrap_or(&host), cpu)?;
        Ok(Target {
            caches: caches.unwrap_or(t.caches),
            ..t
        })
    }

    /// True when code for this target runs natively here.
    pub fn is_host_arch(&self) -> bool {
        self.arch == Target::host().arch
    }

    /// The C compiler (and linker driver) for this target.
    pub fn cc(&self) -> &'static str {
        if self.is_host_arch() {
            return "cc";
        }
        match self.arch {
            Arch::X86_64 => "x86_64-linux-gnu-gcc",
            Arch::Aarch64 => "aarch64-linux-gnu-gcc",
            Arch::Riscv64 => "riscv64-linux-gnu-gcc",
        }
    }

    /// The Debian packages that provide `cc()` with its C library.
    pub fn cc_packages(&self) -> &'static str {
        if self.is_host_arch() {
            return "gcc libc6-dev";
        }
        match self.arch {
            Arch::X86_64 => "gcc-x86-64-linux-gnu libc6-dev-amd64-cross",
            Arch::Aarch64 => "gcc-aarch64-linux-gnu libc6-dev-arm64-cross",
            Arch::Riscv64 => "gcc-riscv64-linux-gnu libc6-dev-riscv64-cross",
        }
    }

    /// How to run a program built for this target here: nothing (native) or a qemu user
    /// emulator command line.
    pub fn runner(&self) -> Vec<String> {
        if self.is_host_arch() {
            return vec![];
        }
        match self.arch {
            Arch::X86_64 => vec!["qemu-x86_64-static".into()],
            // a core of the level: without the dot product, Cortex-A53 (Armv8.0)
            Arch::Aarch64 => {
                let cpu = if self.has("i8mm") {
                    "neoverse-v1"
                } else if self.has("dotprod") {
                    "neoverse-n1"
                } else {
                    "cortex-a53"
                };
                vec!["qemu-aarch64-static".into(), "-cpu".into(), cpu.into()]
            }
            Arch::Riscv64 => {
                let cpu = if self.has("v") {
                    "rv64,v=true,vlen=128,elen=64,vext_spec=v1.0"
                } else {
                    "rv64"
                };
                vec!["qemu-riscv64-static".into(), "-cpu".into(), cpu.into()]
            }
        }
    }

    pub fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    /// The features the artifact checks at start-up, with how: those of its features that have
    /// a check (the architecture's baseline needs none).
    pub fn cpu_checks(&self) -> Vec<(&'static str, CpuCheck)> {
        self.features
            .iter()
            .filter_map(|f| {
                let f = feature(self.arch, f)?;
                Some((f.name, f.c_check?))
            })
            .collect()
    }

    /// The Cranelift ISA flags the target's features turn on.
    pub fn cranelift_flags(&self) -> Vec<&'static str> {
        self.features
            .iter()
            .filter_map(|f| feature(self.arch, f))
            .flat_map(|f| f.cranelift.iter().copied())
            .collect()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (+{})", self.triple, self.features.join(",+"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triples() {
        assert_eq!(
            Target::from_triple("aarch64-unknown-linux-gnu")
                .unwrap()
                .arch,
            Arch::Aarch64
        );
        assert_eq!(
            Target::from_triple("riscv64gc-unknown-linux-gnu")
                .unwrap()
                .arch,
            Arch::Riscv64
        );
        assert!(Target::from_triple("sparc-sun-solaris").is_err());
    }

    #[test]
    fn cpu_levels_come_from_the_feature_table() {
        let v = |cpu: &str| Target::with_cpu("x86_64-unknown-linux-gnu", Some(cpu)).unwrap();
        // each level has every feature of the one below it
        for w in [
            "x86-64",
            "x86-64-v2",
            "x86-64-v3",
            "x86-64-v4",
            "cascadelake",
        ]
        .windows(2)
        {
            let (lo, hi) = (v(w[0]), v(w[1]));
            assert!(lo.features.iter().all(|f| hi.has(f)), "{lo} / {hi}");
            assert!(hi.features.len() > lo.features.len());
        }
        assert!(v("x86-64-v3").has("fma") && !v("x86-64-v3").has("avx512f"));
        // Alder Lake: x86-64-v3 and AVX-VNNI, no AVX-512
        let (v3, adl) = (v("x86-64-v3"), v("alderlake"));
        assert!(v3.features.iter().all(|f| adl.has(f)) && adl.has("avxvnni"));
        assert!(!adl.has("avx512f") && !v("cascadelake").has("avxvnni"));
        assert_eq!(v("x86-64").cpu_checks(), []);
        assert!(v("x86-64-v3")
            .cpu_checks()
            .contains(&("avx2", CpuCheck::Builtin("avx2"))));
        // aarch64: the dot product through HWCAP_ASIMDDP (bit 20)
        let arm = |cpu| Target::with_cpu("aarch64-unknown-linux-gnu", Some(cpu)).unwrap();
        assert_eq!(arm("generic").cpu_checks(), []);
        assert_eq!(
            arm("neoverse-n1").cpu_checks(),
            [("dotprod", CpuCheck::Hwcap(20))]
        );
        // and the int8 matrix multiply through HWCAP2_I8MM (bit 13)
        assert_eq!(
            arm("neoverse-v1").cpu_checks(),
            [
                ("dotprod", CpuCheck::Hwcap(20)),
                ("i8mm", CpuCheck::Hwcap2(13))
            ]
        );
        assert_eq!(
            v("x86-64-v4").cranelift_flags(),
            [
                "has_sse3",
                "has_ssse3",
                "has_sse41",
                "has_sse42",
                "has_avx",
                "has_avx2",
                "has_fma",
                "has_avx512f",
                "has_avx512dq",
                "has_avx512vl"
            ]
        );
        let rv = Target::with_cpu("riscv64gc-unknown-linux-gnu", Some("rv64gcv")).unwrap();
        assert_eq!(rv.cranelift_flags(), ["has_v", "has_zvl128b"]);
        assert!(Target::with_cpu("riscv64gc-unknown-linux-gnu", None)
            .unwrap()
            .features
            .is_empty());
        // the host reports at least its architecture's baseline
        let host = Target::host();
        let base = Target::from_triple(&host.triple).unwrap();
        assert!(base.features.iter().all(|f| host.has(f)));
    }
}

//! Target descriptions: which triples bertc can compile for, their ISA features and vector
//! widths, detection of the host, and the latency profiles measured on a target. Knows
//! nothing of the IR.

mod profile;

pub use profile::{BlockKind, LatencyProfile, Point, ProfileError, PROFILE_FORMAT};

use std::fmt;

/// An architecture bertc can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
    Riscv64,
}

/// A compilation target: a triple and the ISA features code may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub arch: Arch,
    pub triple: String,
    pub features: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("unknown target '{0}' (supported: x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu, riscv64gc-unknown-linux-gnu)")]
    UnknownTriple(String),
    #[error("unknown cpu '{cpu}' for {triple} (supported: {supported})")]
    UnknownCpu {
        cpu: String,
        triple: String,
        supported: &'static str,
    },
}

/// The CPU names `--cpu` accepts for each architecture.
pub fn cpu_names(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "native, x86-64, x86-64-v2, x86-64-v3, x86-64-v4",
        Arch::Aarch64 => "native, generic",
        Arch::Riscv64 => "native, rv64gc, rv64gcv",
    }
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
        let features = match arch {
            Arch::X86_64 => vec!["sse2".into()],
            Arch::Aarch64 => vec!["neon".into()],
            Arch::Riscv64 => vec![],
        };
        Ok(Target {
            arch,
            triple: triple.into(),
            features,
        })
    }

    /// The machine bertc runs on, with the features its CPU reports.
    pub fn host() -> Target {
        #[cfg(target_arch = "x86_64")]
        {
            let mut features = vec!["sse2".to_string()];
            macro_rules! detect {
                ($($f:tt),*) => {$(
                    if std::arch::is_x86_feature_detected!($f) {
                        features.push($f.to_string());
                    }
                )*};
            }
            detect!(
                "sse3",
                "ssse3",
                "sse4.1",
                "sse4.2",
                "avx",
                "avx2",
                "fma",
                "avx512f",
                "avx512bw",
                "avx512dq",
                "avx512vl",
                "avx512vnni"
            );
            Target {
                arch: Arch::X86_64,
                triple: "x86_64-unknown-linux-gnu".into(),
                features,
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            Target {
                arch: Arch::Aarch64,
                triple: "aarch64-unknown-linux-gnu".into(),
                features: vec!["neon".into()],
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            Target {
                arch: Arch::Riscv64,
                triple: "riscv64gc-unknown-linux-gnu".into(),
                features: vec![],
            }
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
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        t.features = match (t.arch, cpu) {
            (a, "native") if a == host.arch => host.features,
            (_, "native") => return Err(bad()),
            (Arch::X86_64, "x86-64" | "baseline") => list(&["sse2"]),
            (Arch::X86_64, "x86-64-v2") => list(&["sse2", "sse3", "ssse3", "sse4.1", "sse4.2"]),
            (Arch::X86_64, "x86-64-v3") => list(&[
                "sse2", "sse3", "ssse3", "sse4.1", "sse4.2", "avx", "avx2", "fma",
            ]),
            (Arch::X86_64, "x86-64-v4") => list(&[
                "sse2", "sse3", "ssse3", "sse4.1", "sse4.2", "avx", "avx2", "fma", "avx512f",
                "avx512bw", "avx512dq", "avx512vl",
            ]),
            (Arch::Aarch64, "generic" | "baseline") => list(&["neon"]),
            (Arch::Riscv64, "rv64gc" | "baseline") => vec![],
            (Arch::Riscv64, "rv64gcv") => list(&["v"]),
            _ => return Err(bad()),
        };
        Ok(t)
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
            Arch::Aarch64 => vec!["qemu-aarch64-static".into()],
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
}

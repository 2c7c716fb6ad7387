//! Target descriptions: which triples bertc can compile for, their ISA features and vector
//! widths, and detection of the host. Knows nothing of the IR.

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
                "sse4.1",
                "avx",
                "avx2",
                "fma",
                "avx512f",
                "avx512bw",
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

    pub fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    /// Width in bytes of the widest vector registers the target's features allow.
    pub fn vector_bytes(&self) -> usize {
        match self.arch {
            Arch::X86_64 if self.has("avx512f") => 64,
            Arch::X86_64 if self.has("avx2") => 32,
            Arch::X86_64 | Arch::Aarch64 => 16,
            Arch::Riscv64 if self.has("v") => 16,
            Arch::Riscv64 => 8,
        }
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
        assert!(Target::host().vector_bytes() >= 8);
    }
}

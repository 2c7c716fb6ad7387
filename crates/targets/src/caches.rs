//! The data caches code generation blocks its GEMMs for: detected on the host (Linux's
//! `/sys/devices/system/cpu/cpu0/cache`), declared for each `--cpu` level (sizes common to
//! the CPUs of that level, on the small side, so that blocks sized for them fit the real ones).

use std::fs;
use std::path::Path;

use crate::Arch;

/// Sizes in bytes of one core's data caches (`l3`: the whole shared last level).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Caches {
    pub l1d: usize,
    pub l2: usize,
    pub l3: usize,
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// The caches a `--cpu` level declares (`None` for a level `arch` does not have).
pub fn declared_caches(arch: Arch, cpu: &str) -> Option<Caches> {
    let c = |l1d, l2, l3| Some(Caches { l1d, l2, l3 });
    match (arch, cpu) {
        // x86-64 desktops and servers since Haswell and Zen: 32 KiB L1d, 256 KiB (Skylake
        // clients) to 2 MiB L2
        (Arch::X86_64, "x86-64" | "x86-64-v2" | "x86-64-v3") => c(32 * KIB, 256 * KIB, 8 * MIB),
        // Alder Lake to Arrow Lake performance cores: 48 KiB L1d, 1.25-3 MiB L2, 12-36 MiB L3
        (Arch::X86_64, "alderlake") => c(48 * KIB, 1280 * KIB, 12 * MIB),
        // Skylake-SP, Cascade Lake, Ice Lake, Zen 4: 1 MiB L2 and more
        (Arch::X86_64, "x86-64-v4" | "cascadelake") => c(32 * KIB, MIB, 16 * MIB),
        // Cortex-A55 to A78, Neoverse N1: 32-64 KiB L1d, 128-512 KiB L2
        (Arch::Aarch64, "generic") => c(32 * KIB, 256 * KIB, 2 * MIB),
        // Cortex-A76 (Raspberry Pi 5: 64 KiB L1d, 512 KiB L2, 2 MiB L3) and Neoverse N1 (1 MiB L2,
        // 32 MiB system cache): the smaller
        (Arch::Aarch64, "neoverse-n1") => c(64 * KIB, 512 * KIB, 2 * MIB),
        // Neoverse V1 (Graviton3: 64 KiB L1d, 1 MiB L2, 32 MiB L3), N2 (Cobalt 100: 1 MiB L2,
        // 36 MiB system cache), V2 (Graviton4: 2 MiB L2); Cortex-A710 boards have less L3
        (Arch::Aarch64, "neoverse-v1") => c(64 * KIB, MIB, 8 * MIB),
        // SiFive U74, C910, SpacemiT X60: 32 KiB L1d, 256 KiB - 1 MiB L2 (shared, small boards)
        (Arch::Riscv64, "rv64gc" | "rv64gcv") => c(32 * KIB, 256 * KIB, 2 * MIB),
        _ => None,
    }
}

/// This machine's caches as Linux reports them for cpu 0, or `fallback` for any level it does
/// not report.
pub fn host_caches(fallback: Caches) -> Caches {
    read_caches(Path::new("/sys/devices/system/cpu/cpu0/cache"), fallback)
}

/// The caches described under `dir` (`index*/{level,type,size}` as in sysfs).
fn read_caches(dir: &Path, fallback: Caches) -> Caches {
    let mut c = fallback;
    let Ok(entries) = fs::read_dir(dir) else {
        return c;
    };
    for entry in entries.flatten() {
        let read = |name: &str| fs::read_to_string(entry.path().join(name)).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
        else {
            continue;
        };
        let Some(bytes) = parse_size(size.trim()) else {
            continue;
        };
        match (level.trim(), kind.trim()) {
            ("1", "Data" | "Unified") => c.l1d = bytes,
            ("2", "Data" | "Unified") => c.l2 = bytes,
            ("3", "Data" | "Unified") => c.l3 = bytes,
            _ => {}
        }
    }
    c
}

/// `32K`, `1024K`, `32M` or a byte count (the unit in either case).
fn parse_size(s: &str) -> Option<usize> {
    let (digits, unit) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], KIB),
        b'M' | b'm' => (&s[..s.len() - 1], MIB),
        b'G' | b'g' => (&s[..s.len() - 1], 1024 * MIB),
        _ => (s, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

/// `L1D,L2,L3` as `--caches` takes them: three sizes such as `32K,512K,32M`.
impl std::str::FromStr for Caches {
    type Err = String;

    fn from_str(s: &str) -> Result<Caches, String> {
        let sizes: Vec<Option<usize>> = s.split(',').map(|p| parse_size(p.trim())).collect();
        match sizes[..] {
            [Some(l1d), Some(l2), Some(l3)] if l1d > 0 && l2 > 0 && l3 > 0 => {
                Ok(Caches { l1d, l2, l3 })
            }
            _ => Err("expected the L1d, L2 and L3 sizes as L1D,L2,L3 (bytes, or with K, M or G), e.g. 32K,512K,32M".to_string()),
        }
    }
}

impl std::fmt::Display for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let size = |b: usize| {
            if b >= MIB && b % MIB == 0 {
                format!("{} MiB", b / MIB)
            } else {
                format!("{} KiB", b / KIB)
            }
        };
        write!(
            f,
            "L1d {}, L2 {}, L3 {}",
            size(self.l1d),
            size(self.l2),
            size(self.l3)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_sizes() {
        let tmp = tempfile::Builder::new()
            .prefix("bertc-caches")
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        for (i, level, kind, size) in [
            (0, "1", "Data", "48K"),
            (1, "1", "Instruction", "32K"),
            (2, "2", "Unified", "2048K"),
            (3, "3", "Unified", "36M"),
        ] {
            let d = dir.join(format!("index{i}"));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("level"), format!("{level}\n")).unwrap();
            fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            fs::write(d.join("size"), format!("{size}\n")).unwrap();
        }
        let fallback = declared_caches(Arch::X86_64, "x86-64").unwrap();
        assert_eq!(
            read_caches(dir, fallback),
            Caches {
                l1d: 48 * KIB,
                l2: 2 * MIB,
                l3: 36 * MIB
            }
        );
        // a machine that reports nothing keeps the declared sizes
        assert_eq!(read_caches(&dir.join("none"), fallback), fallback);
        assert_eq!(parse_size("512K"), Some(512 * KIB));
        assert_eq!(parse_size("12x"), None);
        assert_eq!(
            "48K, 2M,36m".parse::<Caches>(),
            Ok(Caches {
                l1d: 48 * KIB,
                l2: 2 * MIB,
                l3: 36 * MIB
            })
        );
        for bad in ["", "32K,512K", "32K,512K,32M,1G", "0,1M,8M", "32K,1X,8M"] {
            assert!(bad.parse::<Caches>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_level_declares_caches() {
        for &(arch, cpu) in crate::CPUS {
            let c = declared_caches(arch, cpu).unwrap();
            assert!(c.l1d < c.l2 && c.l2 < c.l3, "{cpu}");
        }
    }
}

//! The C toolchain of a target: every `cc` and `ar` command line bertc runs (the glue, the
//! executables, libraries and objects it links, the profiler) is built here, so that flags
//! are chosen once. The commands are returned unrun, without a working directory.

use std::ffi::OsStr;
use std::process::Command;

use crate::Target;

/// Flags of every C compilation: optimised, GNU C11, position independent (the same glue goes
/// into executables and shared libraries), and no compiler version string in the output (so
/// that artifacts are byte-identical whatever the machine's gcc build).
pub const CFLAGS: [&str; 4] = ["-O2", "-std=gnu11", "-fPIC", "-fno-ident"];

/// The C toolchain of a target.
pub struct Toolchain<'a> {
    target: &'a Target,
}

impl Target {
    pub fn toolchain(&self) -> Toolchain<'_> {
        Toolchain { target: self }
    }
}

impl Toolchain<'_> {
    fn cc(&self) -> Command {
        Command::new(self.target.cc())
    }

    /// Whether executables are linked statically: always for another architecture (they run
    /// under qemu or on a board without the cross C library), or when asked.
    pub fn static_exe(&self, asked: bool) -> bool {
        asked || !self.target.is_host_arch()
    }

    /// `cc CFLAGS -o out inputs... libs... [-static]`: an executable.
    pub fn executable<S: AsRef<OsStr>>(
        &self,
        out: &str,
        inputs: &[S],
        libs: &[&str],
        static_: bool,
    ) -> Command {
        let mut c = self.cc();
        c.args(CFLAGS).args(["-o", out]).args(inputs).args(libs);
        if self.static_exe(static_) {
            c.arg("-static");
        }
        c
    }

    /// `cc CFLAGS -c source -o out`: one object.
    pub fn object(&self, source: &str, out: &str) -> Command {
        let mut c = self.cc();
        c.args(CFLAGS).args(["-c", source, "-o", out]);
        c
    }

    /// `cc CFLAGS -shared -o out inputs...`: a shared library.
    pub fn shared<S: AsRef<OsStr>>(&self, out: &str, inputs: &[S]) -> Command {
        let mut c = self.cc();
        c.args(CFLAGS).args(["-shared", "-o", out]).args(inputs);
        c
    }

    /// `cc -r -nostdlib -o out inputs...`: objects merged into one relocatable object.
    pub fn relocatable<S: AsRef<OsStr>>(&self, out: &str, inputs: &[S]) -> Command {
        let mut c = self.cc();
        c.args(["-r", "-nostdlib", "-o", out]).args(inputs);
        c
    }

    /// `ar rcsD out inputs...`: a static library (deterministic: no dates or owners).
    pub fn archive<S: AsRef<OsStr>>(&self, out: &str, inputs: &[S]) -> Command {
        let ar = if self.target.is_host_arch() {
            "ar".to_string()
        } else {
            format!("{}-ar", self.target.cc().trim_end_matches("-gcc"))
        };
        let mut c = Command::new(ar);
        c.args(["rcsD", out]).args(inputs);
        c
    }

    /// `cc CFLAGS -Wall -Wextra -Werror -fsyntax-only source`: checks C that bertc writes.
    pub fn check_warnings(&self, source: &str) -> Command {
        let mut c = self.cc();
        c.args(CFLAGS)
            .args(["-Wall", "-Wextra", "-Werror", "-fsyntax-only", source]);
        c
    }
}

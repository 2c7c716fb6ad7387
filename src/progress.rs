//! A progress bar on standard error, drawn only when it is a terminal (cargo's style).

use std::io::{IsTerminal, Write};

/// Draws `what [=====>    ] done/total`; finishes the line at `done == total`.
pub fn bar(what: &str, done: usize, total: usize) {
    let err = std::io::stderr();
    if !err.is_terminal() || total == 0 {
        return;
    }
    let width = 30;
    let filled = width * done.min(total) / total;
    let mut e = err.lock();
    let _ = write!(
        e,
        "\r{what:>12} [{}{}{}] {done}/{total}",
        "=".repeat(filled.saturating_sub(1)),
        if filled > 0 { ">" } else { "" },
        " ".repeat(width - filled)
    );
    if done >= total {
        let _ = writeln!(e);
    }
    let _ = e.flush();
}

//! A test that cannot run here says so instead of passing silently: `scripts/test.sh` (`make
//! test`) sets `MUCHAW_NOT_RUN` to a file, each test that cannot run appends a line to it, and
//! the run ends by listing them. Under a plain `cargo test` the line goes to stderr only.

use std::io::Write;

/// Records that `test` did not run, and why: on stderr, and in `MUCHAW_NOT_RUN` when it is set.
/// A record that cannot be written fails the test rather than let it pass as if it ran.
pub fn did_not_run(test: &str, why: &str) {
    eprintln!("SKIPPED: {test}: {why}");
    let Some(path) = std::env::var_os("MUCHAW_NOT_RUN") else {
        return;
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(format!("{test}: {why}\n").as_bytes()));
    if let Err(e) = written {
        panic!(
            "{test} did not run ({why}), and recording that in {} failed: {e}",
            std::path::Path::new(&path).display()
        );
    }
}

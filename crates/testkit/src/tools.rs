//! Tools a few tests drive besides PostgreSQL (Chromium, `promtool`, `pgbouncer`, ...).
//!
//! On a machine with only Rust and PostgreSQL, a test whose tool is missing is skipped: it
//! says so on the terminal (past the test harness's capture, once per tool and process,
//! with the one command that installs every tool) and passes. With
//! [`REQUIRE_VARIABLE`] set to `required` (CI sets it) a missing tool fails the test instead, so a
//! green CI run has run everything.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The one command that installs every tool the full suite drives.
pub const INSTALL_COMMAND: &str = "sudo bash .ci/install-test-tools";

/// The variable that turns a skip into a failure, and the value that does.
pub const REQUIRE_VARIABLE: &str = docket_settings::TEST_TOOLS;
const REQUIRED: &str = "required";

/// Whether `program` is on the `PATH` (or in `/usr/sbin`, where Debian puts daemons such
/// as `pgbouncer`); when it is not, the caller returns early (see the module).
///
/// # Panics
///
/// When it is missing and [`REQUIRE_VARIABLE`] is `required`.
#[must_use]
pub fn require_program(program: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([Path::new("/usr/sbin").to_owned()])
        .any(|dir| dir.join(program).is_file());
    require(program, found)
}

/// Whether `python3` can import `module`; when it cannot, the caller returns early.
///
/// # Panics
///
/// When it is missing and [`REQUIRE_VARIABLE`] is `required`.
#[must_use]
pub fn require_python_module(module: &str) -> bool {
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    require(&format!("python3 -m {module}"), found)
}

fn require(tool: &str, found: bool) -> bool {
    if found {
        return true;
    }
    let required = std::env::var(REQUIRE_VARIABLE).is_ok_and(|value| value == REQUIRED);
    assert!(
        !required,
        "{tool} is not installed and {REQUIRE_VARIABLE}={REQUIRED}: install it with `{INSTALL_COMMAND}`"
    );
    static SAID: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let first = SAID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(tool.to_owned());
    if first {
        // Straight to the terminal: the harness captures `eprintln!` of passing tests.
        let line = format!(
            "\nSKIPPED: the tests that need {tool} (it is not installed); \
             `{INSTALL_COMMAND}` installs every tool the full suite uses\n"
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_skips_its_test_unless_tools_are_required() {
        let before = std::env::var_os(REQUIRE_VARIABLE);
        std::env::remove_var(REQUIRE_VARIABLE);
        assert!(!require_program("docket-no-such-tool"));
        assert!(require_program("sh"));
        std::env::set_var(REQUIRE_VARIABLE, REQUIRED);
        let failed = std::panic::catch_unwind(|| require_program("docket-no-such-tool"));
        assert!(
            failed.is_err(),
            "a missing tool fails when tools are required"
        );
        assert!(require_program("sh"));
        match before {
            Some(value) => std::env::set_var(REQUIRE_VARIABLE, value),
            None => std::env::remove_var(REQUIRE_VARIABLE),
        }
    }
}

//! `OtlpReceiver`: the `docket-otlp-receiver` binary of this crate as a child process (a
//! real OTLP/HTTP endpoint that decodes what it gets with the official protocol
//! definitions), and the spans it has received, as JSON (see the binary's doc for the
//! fields). Killed when dropped.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// A running receiver.
pub struct OtlpReceiver {
    child: Child,
    endpoint: String,
    spans: Arc<Mutex<Vec<Value>>>,
}

/// The receiver binary beside the running test's own build, built first if it is missing or
/// old (`cargo build -p docket-testkit --bin docket-otlp-receiver`).
///
/// # Panics
///
/// When it does not build.
pub fn receiver_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "docket-testkit",
            "--bin",
            "docket-otlp-receiver",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "the OTLP receiver builds");
    let exe = std::env::current_exe().expect("the test's own path");
    // target/debug/deps/<test> -> target/debug/docket-otlp-receiver
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps")
        .join("docket-otlp-receiver")
}

impl OtlpReceiver {
    /// Starts the receiver on a free loopback port and waits until it listens.
    ///
    /// # Panics
    ///
    /// When it cannot be built or started.
    pub fn start() -> OtlpReceiver {
        let mut child = Command::new(receiver_binary())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start docket-otlp-receiver");
        let stdout = child.stdout.take().expect("the receiver's stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next()
            .and_then(Result::ok)
            .expect("the receiver says where it listens");
        let first: Value = serde_json::from_str(&first).expect("a JSON line");
        let addr = first["listening"].as_str().expect("its address").to_owned();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let collected = spans.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(span) = serde_json::from_str::<Value>(&line) {
                    collected
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(span);
                }
            }
        });
        OtlpReceiver {
            child,
            endpoint: format!("http://{addr}"),
            spans,
        }
    }

    /// The base URL for `OTEL_EXPORTER_OTLP_ENDPOINT` (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Value> {
        self.spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The README's embedding snippets, as a new user takes them: its `[dependencies]` block and
//! its `main.rs`, copied into a new crate outside this workspace, built, and run against a
//! real database until the job has run; then Ctrl-C (SIGINT) drains it.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use docket_queue::JobState;
use docket_testkit::{eventually, TestDb};

/// The first fenced block of `language` after `heading` in `text`.
fn block_after(text: &str, heading: &str, language: &str) -> String {
    let section = &text[text.find(heading).expect("the README has the section")..];
    let fence = format!("```{language}\n");
    let start = section.find(&fence).expect("the section has the block") + fence.len();
    let end = start + section[start..].find("```").expect("the block ends");
    section[start..end].to_owned()
}

/// The README's crate, written under `dir`: the path dependencies point at this checkout
/// (the README writes them relative to a checkout beside the application).
fn write_crate(dir: &Path, root: &Path) {
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let heading = "## Embed Docket in a Rust application";
    let dependencies = block_after(&readme, heading, "toml");
    let main = block_after(&readme, heading, "rust");
    assert!(
        dependencies.contains("path = \"../docket/crates/"),
        "{dependencies}"
    );
    let dependencies = dependencies.replace("../docket", &root.display().to_string());
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"readme-app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [workspace]\n\n{dependencies}"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("src/main.rs"), main).unwrap();
    // The versions this workspace is built and tested with, so the build needs no network.
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_dependencies_and_main_rs_build_as_a_new_crate_and_run_a_job() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("docket-readme-app-{}", uuid::Uuid::now_v7()));
    write_crate(&dir, &root);
    // A target directory of its own (this one is locked while the tests run), kept between
    // runs so that only the first build compiles the dependencies.
    let target = root.join("target/readme-app");
    let build = Command::new(env!("CARGO"))
        .args(["build", "--offline", "--quiet"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("run cargo");
    assert!(
        build.status.success(),
        "the README's crate does not build:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );

    let db = TestDb::new().await;
    let mut app = Command::new(target.join("debug/readme-app"))
        .env("DATABASE_URL", &db.url)
        .env("DOCKET_POLL_INTERVAL", "0.2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the README's app");
    let stdout = app.stdout.take().unwrap();
    let said = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains("welcome, user 42"))
    });
    let said = tokio::time::timeout(Duration::from_secs(60), said).await;
    assert!(
        matches!(said, Ok(Ok(Some(_)))),
        "the handler never ran; stderr: {}",
        {
            let _ = app.kill();
            let mut err = String::new();
            std::io::Read::read_to_string(&mut app.stderr.take().unwrap(), &mut err).ok();
            err
        }
    );
    eventually(Duration::from_secs(30), "the job is completed", || async {
        let state: Option<JobState> = sqlx::query_scalar(
            "select state from docket.jobs where kind = 'app.send_welcome' and unique_key = 'welcome:42'",
        )
        .fetch_optional(&db.pool)
        .await
        .unwrap();
        state == Some(JobState::Completed)
    })
    .await;

    let interrupted = Command::new("kill")
        .args(["-INT", &app.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let exit = tokio::task::spawn_blocking(move || app.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.status.success(),
        "Ctrl-C did not drain and exit 0: {:?}\n{}",
        exit.status,
        String::from_utf8_lossy(&exit.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}

//! The files under `deploy/` are checked by the tools that will read them: the alert rules
//! by `promtool` (and each alert fires on the series that should fire it), the systemd
//! units by `systemd-analyze verify`; and every metric an alert names is one Docket
//! exports.

use std::path::Path;
use std::process::Command;

use docket_testkit::tools;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(program: &str, args: &[&str], dir: &Path) -> (bool, String) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn the_alert_rules_parse_and_fire_on_the_series_they_are_for() {
    if !tools::require_program("promtool") {
        return;
    }
    let dir = root().join("deploy/prometheus");
    let (ok, text) = run("promtool", &["check", "rules", "alerts.yml"], &dir);
    assert!(ok, "{text}");
    let (ok, text) = run("promtool", &["test", "rules", "alerts_test.yml"], &dir);
    assert!(ok, "{text}");
}

#[test]
fn every_metric_an_alert_names_is_exported() {
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
    let mut named = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("docket_") {
            named += 1;
            assert!(
                docket_queue::telemetry::metric::ALL.contains(&word),
                "alerts.yml names {word}, which Docket does not export"
            );
        }
    }
    assert!(named >= 8, "the rules name the metrics they watch");
}

#[test]
fn the_systemd_units_verify() {
    if !tools::require_program("systemd-analyze") {
        return;
    }
    // `verify` checks that ExecStart exists: point the units at the binary under test.
    let dir = std::env::temp_dir().join(format!("docket-units-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut units = Vec::new();
    for entry in std::fs::read_dir(root().join("deploy/systemd")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(
            dir.join(&name),
            text.replace("/usr/local/bin/docket", env!("CARGO_BIN_EXE_docket")),
        )
        .unwrap();
        units.push(format!("./{name}"));
    }
    units.sort();
    assert_eq!(units.len(), 8, "{units:?}");
    let mut args = vec!["verify", "--man=no"];
    args.extend(units.iter().map(String::as_str));
    let (ok, text) = run("systemd-analyze", &args, &dir);
    // An unknown setting is only a warning to systemd: any line naming a unit fails too.
    assert!(
        ok && !text.contains(".service") && !text.contains(".timer"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_unit_runs_a_real_subcommand_and_the_backup_units_write_only_the_backup_directory() {
    let mut commands = Vec::new();
    for entry in std::fs::read_dir(root().join("deploy/systemd")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            if let Some(command) = line.strip_prefix("ExecStart=/usr/local/bin/docket ") {
                commands.push(command.split_whitespace().next().unwrap().to_owned());
            }
        }
    }
    commands.sort();
    assert_eq!(
        commands,
        ["backup", "check", "restore-check", "serve", "worker"]
    );
    for command in &commands {
        let status = Command::new(env!("CARGO_BIN_EXE_docket"))
            .args([command.as_str(), "--help"])
            .output()
            .unwrap()
            .status;
        assert!(status.success(), "docket {command} exists");
    }
    for unit in ["docket-backup.service", "docket-restore-check.service"] {
        let text = std::fs::read_to_string(root().join("deploy/systemd").join(unit)).unwrap();
        let writable: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("ReadWritePaths="))
            .collect();
        assert_eq!(writable, ["/var/backups/docket"], "{unit}");
        assert!(text.contains("ProtectSystem=strict"), "{unit}");
    }
}

#[test]
fn the_units_give_running_jobs_more_time_than_the_shutdown_timeout() {
    for unit in ["docket-serve.service", "docket-worker.service"] {
        let text = std::fs::read_to_string(root().join("deploy/systemd").join(unit)).unwrap();
        let value = |key: &str| -> u64 {
            text.split(|c: char| c.is_whitespace())
                .find_map(|word| word.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{unit} sets {key}"))
        };
        assert!(
            value("TimeoutStopSec=") > value("DOCKET_SHUTDOWN_TIMEOUT="),
            "{unit}"
        );
    }
}

/// The units raise the open-file limit well past the connection cap's default (512) plus
/// the database connections: at systemd's 1024, idle clients could exhaust it.
#[test]
fn the_units_leave_room_for_the_connection_cap() {
    for unit in ["docket-serve.service", "docket-worker.service"] {
        let text = std::fs::read_to_string(root().join("deploy/systemd").join(unit)).unwrap();
        let limit: u64 = text
            .lines()
            .find_map(|line| line.strip_prefix("LimitNOFILE="))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{unit} sets LimitNOFILE"));
        assert!(limit >= 4096, "{unit}: {limit}");
    }
    let compose = std::fs::read_to_string(root().join("deploy/container/compose.yaml")).unwrap();
    assert!(
        compose.contains("\"127.0.0.1:8080:8080\""),
        "the compose file publishes the port on loopback only"
    );
}

#[test]
fn the_compose_file_is_valid_and_refuses_to_start_without_a_secret() {
    if !tools::require_program("docker-compose") {
        return;
    }
    let dir = root().join("deploy/container");
    let output = Command::new("docker-compose")
        .args(["-f", "compose.yaml", "config", "--quiet"])
        .env("CRON_SECRET", "compose-check-0123456789")
        .current_dir(&dir)
        .output()
        .expect("run docker-compose");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = Command::new("docker-compose")
        .args(["-f", "compose.yaml", "config", "--quiet"])
        .env_remove("CRON_SECRET")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!output.status.success(), "CRON_SECRET is required");
    assert!(String::from_utf8_lossy(&output.stderr).contains("set CRON_SECRET"));
}

#[test]
fn the_dockerfile_builds_the_binary_it_copies_and_runs_it() {
    const INSTRUCTIONS: &[&str] = &[
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
    ];
    let text = std::fs::read_to_string(root().join("deploy/container/Dockerfile")).unwrap();
    // Logical lines: continuations joined, comments dropped.
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut stages = Vec::new();
    for line in &lines {
        let instruction = line.split_whitespace().next().unwrap();
        assert!(
            INSTRUCTIONS.contains(&instruction),
            "unknown instruction: {line}"
        );
        if let Some(stage) = line
            .strip_prefix("FROM ")
            .and_then(|l| l.split(" AS ").nth(1))
        {
            stages.push(stage.trim().to_owned());
        }
        if let Some(from) = line.split("--from=").nth(1) {
            let stage = from.split_whitespace().next().unwrap();
            assert!(
                stages.iter().any(|s| s == stage),
                "no stage {stage}: {line}"
            );
        }
    }
    let built = lines
        .iter()
        .any(|l| l.contains("cargo build --release --locked --bin docket"));
    let copied = lines
        .iter()
        .any(|l| l.starts_with("COPY --from=build /src/target/release/docket "));
    assert!(
        built && copied,
        "the image carries the release binary it builds"
    );
    assert!(lines.contains(&r#"ENTRYPOINT ["docket"]"#));
    // The commands the compose file runs are real subcommands.
    for command in ["serve", "worker", "check"] {
        let status = Command::new(env!("CARGO_BIN_EXE_docket"))
            .args([command, "--help"])
            .output()
            .unwrap()
            .status;
        assert!(status.success(), "docket {command} exists");
    }
}

//! The mail relay's health check, contributed to the one health judgement
//! ([`docket_queue::health`]) by the crate that owns the fact. The mail jobs record what
//! the relay did: a configuration fault it answered (authentication, TLS), the failures to
//! reach it at all (refused, unresolved, timed out), each cleared by the next message it
//! takes, and when it last took one. The check says only what was seen: a relay nothing
//! has been sent through yet is not called healthy.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use docket_queue::health::{Finding, Probe, ProbeFuture, Verdict};
use docket_settings as settings;
use sqlx::{PgExecutor, PgPool};

/// The relay's outstanding configuration fault.
#[derive(Clone, Debug, PartialEq)]
pub struct RelayFault {
    /// When it was last seen.
    pub at: DateTime<Utc>,
    /// What the relay said (never a credential).
    pub error: String,
}

/// Failures to reach the relay since the last message it took.
#[derive(Clone, Debug, PartialEq)]
pub struct Unreachable {
    /// The relay tried, `host:port`.
    pub relay: String,
    /// The first failure.
    pub since: DateTime<Utc>,
    /// The latest failure.
    pub last_at: DateTime<Utc>,
    /// How many attempts failed.
    pub attempts: i32,
    /// The latest failure's error.
    pub error: String,
}

/// What the mail jobs recorded about the relay.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RelayStatus {
    /// The outstanding configuration fault, if any.
    pub fault: Option<RelayFault>,
    /// The outstanding failures to reach it, if any.
    pub unreachable: Option<Unreachable>,
    /// When it last took a message (`None`: never, as far as the record goes).
    pub last_sent_at: Option<DateTime<Utc>>,
}

/// The relay's recorded status.
///
/// # Errors
///
/// [`crate::MailError::Database`] when the database fails.
pub async fn relay_status(exec: impl PgExecutor<'_>) -> crate::Result<RelayStatus> {
    let row = crate::db::status_read(exec).await?;
    let fault = row
        .fault_at
        .zip(row.fault)
        .map(|(at, error)| RelayFault { at, error });
    let unreachable = match (row.unreachable_since, row.unreachable_at) {
        (Some(since), Some(last_at)) if row.unreachable_attempts > 0 => Some(Unreachable {
            relay: row.unreachable_relay.unwrap_or_default(),
            since,
            last_at,
            attempts: row.unreachable_attempts,
            error: row.unreachable_error.unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(RelayStatus {
        fault,
        unreachable,
        last_sent_at: row.last_sent_at,
    })
}

/// The outstanding configuration fault, if any.
///
/// # Errors
///
/// [`crate::MailError::Database`] when the database fails.
pub async fn relay_fault(exec: impl PgExecutor<'_>) -> crate::Result<Option<RelayFault>> {
    Ok(relay_status(exec).await?.fault)
}

/// What to do while the relay refuses our settings (made once: a finding's advice lives as
/// long as the process).
static ADVICE: LazyLock<&'static str> = LazyLock::new(|| {
    format!(
        "the relay refuses our settings: check {}'s user, password and TLS mode, then send \
         a test with `docket mail render`.",
        settings::SMTP_URL
    )
    .leak()
});

static UNREACHABLE_ADVICE: LazyLock<&'static str> = LazyLock::new(|| {
    format!(
        "the relay does not answer: check that it runs and that {} names its host and port; \
         mail waits on its retry ladder meanwhile and recovery emails may expire unsent.",
        settings::SMTP_URL
    )
    .leak()
});

static STUB_ADVICE: LazyLock<&'static str> = LazyLock::new(|| {
    format!(
        "stub mode: every email is rendered and recorded as suppressed (reason stub), none \
         is sent; set {} to send through a relay.",
        settings::SMTP_URL
    )
    .leak()
});

fn at(time: DateTime<Utc>) -> String {
    time.format(docket_queue::health::TIME_FORMAT).to_string()
}

/// The `mail` check: `warn` in stub mode (nothing is sent); `degraded` while the relay
/// refuses our settings, or cannot be reached, and no message has gone through since;
/// otherwise `ok`, saying when the relay last took a message, or that nothing has been
/// sent yet (never that the relay works when nothing was seen).
pub fn describe(stub: bool, status: &RelayStatus) -> Finding {
    if stub {
        return Finding::new("mail", Verdict::Warn, "stub, nothing is sent", *STUB_ADVICE);
    }
    if let Some(fault) = &status.fault {
        return Finding::new(
            "mail",
            Verdict::Degraded,
            format!("since {}: {}", at(fault.at), fault.error),
            *ADVICE,
        );
    }
    if let Some(down) = &status.unreachable {
        let attempts = match down.attempts {
            1 => "1 attempt failed".to_owned(),
            n => format!("{n} attempts failed"),
        };
        return Finding::new(
            "mail",
            Verdict::Degraded,
            format!(
                "cannot reach the relay at {} since {}: {attempts}, the last at {} ({})",
                down.relay,
                at(down.since),
                at(down.last_at),
                down.error
            ),
            *UNREACHABLE_ADVICE,
        );
    }
    let detail = match status.last_sent_at {
        Some(sent) => format!("the relay took a message at {}", at(sent)),
        None => "nothing sent yet: the relay has not been tried".to_owned(),
    };
    Finding::new("mail", Verdict::Ok, detail, *ADVICE)
}

/// The probe of the `mail` check, for a process whose mail goes out as `mode` says.
#[derive(Clone, Copy, Debug, Default)]
pub struct RelayProbe {
    stub: bool,
}

impl RelayProbe {
    /// The probe for mail sent in `mode`.
    pub fn new(mode: &crate::config::Mode) -> RelayProbe {
        RelayProbe {
            stub: *mode == crate::config::Mode::Stub,
        }
    }
}

impl Probe for RelayProbe {
    fn name(&self) -> &'static str {
        "mail"
    }

    fn probe<'a>(&'a self, db: Option<&'a PgPool>) -> ProbeFuture<'a> {
        Box::pin(async move {
            let Some(pool) = db else {
                return Finding::unknown("mail", "the database does not answer");
            };
            match relay_status(docket_queue::pooled(pool)).await {
                Ok(status) => describe(self.stub, &status),
                Err(err) => {
                    Finding::unknown("mail", format!("cannot read the relay's status: {err}"))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outstanding_fault_degrades_the_mail_check_and_says_what_the_relay_said() {
        let status = RelayStatus {
            fault: Some(RelayFault {
                at: Utc::now(),
                error: "535 5.7.8 authentication credentials invalid".into(),
            }),
            ..RelayStatus::default()
        };
        let finding = describe(false, &status);
        assert_eq!(finding.verdict, Verdict::Degraded);
        assert!(finding.detail.contains("535 5.7.8"), "{finding:?}");
        assert!(finding.advice.is_some());
    }

    #[test]
    fn failures_to_reach_the_relay_degrade_the_check_naming_where_since_when_and_how_many() {
        let since = Utc::now();
        let status = RelayStatus {
            unreachable: Some(Unreachable {
                relay: "127.0.0.1:2525".into(),
                since,
                last_at: since,
                attempts: 3,
                error: "connection failed: Connection refused (os error 111)".into(),
            }),
            ..RelayStatus::default()
        };
        let finding = describe(false, &status);
        assert_eq!(finding.verdict, Verdict::Degraded);
        assert!(
            finding.detail.starts_with(&format!(
                "cannot reach the relay at 127.0.0.1:2525 since {}: 3 attempts failed",
                at(since)
            )),
            "{finding:?}"
        );
        assert_eq!(finding.advice, Some(*UNREACHABLE_ADVICE));
    }

    /// Nothing seen is not called healthy; a message taken is said with its time.
    #[test]
    fn the_check_says_only_what_it_saw() {
        let never = describe(false, &RelayStatus::default());
        assert_eq!(never.verdict, Verdict::Ok);
        assert_eq!(
            never.detail,
            "nothing sent yet: the relay has not been tried"
        );
        let sent = Utc::now();
        let finding = describe(
            false,
            &RelayStatus {
                last_sent_at: Some(sent),
                ..RelayStatus::default()
            },
        );
        assert_eq!(
            finding.detail,
            format!("the relay took a message at {}", at(sent))
        );
    }

    /// Stub mode sends nothing: the check says so, whatever else it saw.
    #[test]
    fn stub_mode_is_a_warning_that_nothing_is_sent() {
        let finding = describe(true, &RelayStatus::default());
        assert_eq!(finding.verdict, Verdict::Warn);
        assert_eq!(finding.detail, "stub, nothing is sent");
    }
}

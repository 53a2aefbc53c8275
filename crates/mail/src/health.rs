//! The mail relay's health check, contributed to the one health judgement
//! ([`docket_queue::health`]) by the crate that owns the fact: a configuration fault the
//! relay answered (authentication, TLS), recorded by the mail jobs and cleared by the next
//! message it accepts.

use chrono::{DateTime, Utc};
use docket_queue::health::{Finding, Probe, ProbeFuture, Verdict};
use sqlx::{PgExecutor, PgPool};

/// The relay's outstanding configuration fault.
#[derive(Clone, Debug, PartialEq)]
pub struct RelayFault {
    /// When it was last seen.
    pub at: DateTime<Utc>,
    /// What the relay said (never a credential).
    pub error: String,
}

/// The outstanding fault, if any.
///
/// # Errors
///
/// [`crate::MailError::Database`] when the database fails.
pub async fn relay_fault(exec: impl PgExecutor<'_>) -> crate::Result<Option<RelayFault>> {
    Ok(crate::db::status_fault(exec)
        .await?
        .map(|(at, error)| RelayFault { at, error }))
}

const ADVICE: &str = "the relay refuses our settings: check DOCKET_SMTP_URL's user, password and TLS mode, then send a test with `docket mail render`.";

const STUB_ADVICE: &str = "stub mode: every email is rendered and recorded as suppressed (reason stub), none is sent; set DOCKET_SMTP_URL to send through a relay.";

/// The `mail` check: `warn` in stub mode (nothing is sent), `degraded` while the relay
/// refuses our settings and no message has gone through since.
pub fn describe(stub: bool, fault: Option<&RelayFault>) -> Finding {
    if stub {
        return Finding::new("mail", Verdict::Warn, "stub, nothing is sent", STUB_ADVICE);
    }
    match fault {
        None => Finding::new(
            "mail",
            Verdict::Ok,
            "no refusal of our settings recorded",
            ADVICE,
        ),
        Some(fault) => Finding::new(
            "mail",
            Verdict::Degraded,
            format!(
                "since {}: {}",
                fault.at.format("%Y-%m-%d %H:%M:%S UTC"),
                fault.error
            ),
            ADVICE,
        ),
    }
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
            match relay_fault(docket_queue::pooled(pool)).await {
                Ok(fault) => describe(self.stub, fault.as_ref()),
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
        let fault = RelayFault {
            at: Utc::now(),
            error: "535 5.7.8 authentication credentials invalid".into(),
        };
        let finding = describe(false, Some(&fault));
        assert_eq!(finding.verdict, Verdict::Degraded);
        assert!(finding.detail.contains("535 5.7.8"), "{finding:?}");
        assert!(finding.advice.is_some());
        assert_eq!(describe(false, None).verdict, Verdict::Ok);
    }

    /// Stub mode sends nothing: the check says so, whatever else it saw.
    #[test]
    fn stub_mode_is_a_warning_that_nothing_is_sent() {
        let finding = describe(true, None);
        assert_eq!(finding.verdict, Verdict::Warn);
        assert_eq!(finding.detail, "stub, nothing is sent");
    }
}

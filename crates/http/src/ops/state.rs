//! The operations page's own state: its sessions, its chart and its compiled templates.
//! The router's state holds it; it knows nothing of the router's.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;
use serde_json::json;

use super::session::Sessions;
use super::throughput::Throughput;
use crate::auth::Secret;

/// The operations page's own state, shared by every request.
pub struct OpsState {
    pub(super) sessions: Sessions,
    pub(super) throughput: Throughput,
    templates: Environment<'static>,
}

impl OpsState {
    /// Sign-in with `secret` (`None`: sign-in is off).
    pub fn new(secret: Option<Secret>) -> OpsState {
        let mut templates = Environment::new();
        for (name, source) in [
            ("layout.html", include_str!("templates/layout.html")),
            ("login.html", include_str!("templates/login.html")),
            ("index.html", include_str!("templates/index.html")),
            ("job.html", include_str!("templates/job.html")),
            ("detail.html", include_str!("templates/detail.html")),
            ("message.html", include_str!("templates/message.html")),
        ] {
            // Compiled in and covered by the tests: a template that does not parse is a
            // build defect, never a runtime condition.
            templates
                .add_template(name, source)
                .unwrap_or_else(|err| panic!("ops template {name}: {err:#}"));
        }
        templates.add_filter("time", time);
        OpsState {
            sessions: Sessions::new(secret),
            throughput: Throughput::default(),
            templates,
        }
    }

    pub(super) fn render(&self, name: &str, context: serde_json::Value) -> Response {
        match self
            .templates
            .get_template(name)
            .and_then(|t| t.render(context))
        {
            Ok(html) => Html(html).into_response(),
            Err(err) => {
                tracing::error!(event = docket_queue::telemetry::event::HTTP_ERROR, template = name, error.message = %format!("{err:#}"), "ops page failed to render");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page failed to render",
                )
                    .into_response()
            }
        }
    }

    pub(super) fn message(
        &self,
        status: StatusCode,
        heading: &str,
        message: &str,
        back: &str,
    ) -> Response {
        let mut response = self.render(
            "message.html",
            json!({"heading": heading, "message": message, "back": back}),
        );
        *response.status_mut() = status;
        response
    }
}

/// The `time` filter: an instant (RFC 3339, as the page's data carries it) in the one
/// format every surface prints ([`docket_queue::health::TIME_FORMAT`]); anything else as
/// it is.
fn time(value: String) -> String {
    chrono::DateTime::parse_from_rfc3339(&value).map_or(value, |at| {
        at.with_timezone(&chrono::Utc)
            .format(docket_queue::health::TIME_FORMAT)
            .to_string()
    })
}

//! The operations page's own state: its sessions, its chart and its compiled templates.
//! The router's state holds it; it knows nothing of the router's.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;
use serde_json::json;

use super::session::Sessions;
use super::throughput::Throughput;
use crate::auth::Secret;
use crate::mount::Mount;

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
        templates.add_function("url", url);
        OpsState {
            sessions: Sessions::new(secret),
            throughput: Throughput::default(),
            templates,
        }
    }

    /// Renders template `name` for a page served under `mount` (the templates make every
    /// URL with `url(…)`, which reads it).
    pub(super) fn render(
        &self,
        mount: &Mount,
        name: &str,
        mut context: serde_json::Value,
    ) -> Response {
        context[MOUNT] = json!(mount.prefix());
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

    /// A page that says `message`, with a link `back` (a path as the routes spell it).
    pub(super) fn message(
        &self,
        mount: &Mount,
        status: StatusCode,
        heading: &str,
        message: &str,
        back: &str,
    ) -> Response {
        let mut response = self.render(
            mount,
            "message.html",
            json!({"heading": heading, "message": message, "back": back}),
        );
        *response.status_mut() = status;
        response
    }
}

/// The context variable that carries the mount's prefix to [`url`].
const MOUNT: &str = "mount";

/// The templates' `url(path)`: `path`, as the routes spell it (`/ops/jobs/…`), under the
/// mount the page is served at ([`Mount::url`]). Every link, form action and asset in the
/// templates goes through it. Escaped for an attribute here, but for its slashes (which the
/// templates' own escaping would write as `&#x2f;`): a path may carry what a request put in
/// it (a job id that is not one, in an error page's link back).
fn url(state: &minijinja::State<'_, '_>, path: &str) -> minijinja::Value {
    let prefix = state.lookup(MOUNT);
    let url = Mount::at(prefix.as_ref().and_then(|p| p.as_str()).unwrap_or("")).url(path);
    let mut escaped = String::with_capacity(url.len());
    for c in url.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#x27;"),
            c => escaped.push(c),
        }
    }
    minijinja::Value::from_safe_string(escaped)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `url(…)` puts the mount in front and escapes what a request may have put in the
    /// path (an error page links back to `/ops/jobs/<whatever was asked for>`).
    #[test]
    fn urls_carry_the_mount_and_escape_what_a_request_put_in_them() {
        let ops = OpsState::new(None);
        let html = ops
            .templates
            .get_template("message.html")
            .unwrap()
            .render(json!({
                MOUNT: "/docket",
                "heading": "That did not work",
                "message": "no such job",
                "back": "/ops/jobs/\"><b>x",
            }))
            .unwrap();
        assert!(
            html.contains(r#"href="/docket/ops/jobs/&quot;&gt;&lt;b&gt;x""#),
            "{html}"
        );
        assert!(html.contains(r#"href="/docket/ops/ops.css""#), "{html}");
    }
}

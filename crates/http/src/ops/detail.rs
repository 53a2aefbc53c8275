//! The pages of one worker, one batch and one campaign, which the main page links to by
//! their whole ids: what each is, in the page's one time format, and for a campaign its
//! controls.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::{failed, viewer};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::mount::Mount;
use crate::state::AppState;

/// One line of a page's facts, with a link when it names something that has a page.
#[derive(Serialize)]
struct Fact {
    label: &'static str,
    value: String,
    /// The page's path as the routes spell it (`/ops/jobs/…`); the template makes it a URL.
    link: Option<String>,
}

fn fact(label: &'static str, value: impl ToString) -> Fact {
    Fact {
        label,
        value: value.to_string(),
        link: None,
    }
}

fn linked(label: &'static str, value: impl ToString, link: String) -> Fact {
    Fact {
        link: Some(link),
        ..fact(label, value)
    }
}

fn at(time: DateTime<Utc>) -> String {
    time.format(docket_queue::health::TIME_FORMAT).to_string()
}

fn maybe(time: Option<DateTime<Utc>>, none: &str) -> String {
    time.map_or_else(|| none.to_owned(), at)
}

/// The id in the path, or why it is not one.
fn parse(id: &str, what: &str) -> Result<Uuid, ApiError> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("{id:?} is not a {what} id (a UUID)")))
}

/// Renders the page of `what` `id`.
fn page(
    state: &AppState,
    mount: &Mount,
    csrf: &str,
    what: &str,
    id: Uuid,
    facts: Vec<Fact>,
) -> Response {
    page_with(state, mount, csrf, what, id, facts, json!({}))
}

fn page_with(
    state: &AppState,
    mount: &Mount,
    csrf: &str,
    what: &str,
    id: Uuid,
    facts: Vec<Fact>,
    mut extra: serde_json::Value,
) -> Response {
    extra["what"] = json!(what);
    extra["id"] = json!(id);
    extra["facts"] = json!(facts);
    extra["csrf"] = json!(csrf);
    state.ops.render(mount, "detail.html", extra)
}

pub(super) async fn worker(
    State(state): State<AppState>,
    mount: Mount,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(viewer) = viewer(&state, caller, &headers).await else {
        return Redirect::to(&mount.url("/ops/login")).into_response();
    };
    let id = match parse(&id, "worker") {
        Ok(id) => id,
        Err(err) => return failed(&state, &mount, &err, "/ops"),
    };
    let workers = match docket_queue::workers::list(docket_queue::pooled(&state.pool), None).await {
        Ok(workers) => workers,
        Err(err) => return failed(&state, &mount, &err.into(), "/ops"),
    };
    let Some(w) = workers.into_iter().find(|w| w.info.id == id) else {
        return failed(
            &state,
            &mount,
            &ApiError::NotFound(format!(
                "no worker {id} is registered (a stopped worker deregisters)"
            )),
            "/ops",
        );
    };
    let facts = vec![
        fact("State", if w.live { "live" } else { "silent" }),
        fact("Host", &w.info.host),
        fact("Process id", w.info.pid),
        fact("Queues", w.info.queues.join(", ")),
        fact("Kinds", w.info.kinds.join(", ")),
        fact("Version", &w.info.version),
        fact("Started", at(w.started_at)),
        fact(
            "Heartbeat",
            format!(
                "{} ({} ago)",
                at(w.heartbeat_at),
                super::page::age(w.heartbeat_age_seconds)
            ),
        ),
        fact("Lease until", at(w.lease_expires_at)),
    ];
    page(&state, &mount, viewer.csrf(), "Worker", id, facts)
}

pub(super) async fn batch(
    State(state): State<AppState>,
    mount: Mount,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(viewer) = viewer(&state, caller, &headers).await else {
        return Redirect::to(&mount.url("/ops/login")).into_response();
    };
    let id = match parse(&id, "batch") {
        Ok(id) => id,
        Err(err) => return failed(&state, &mount, &err, "/ops"),
    };
    let b = match docket_queue::batch::show(docket_queue::pooled(&state.pool), id).await {
        Ok(b) => b,
        Err(err) => return failed(&state, &mount, &err.into(), "/ops"),
    };
    let mut facts = vec![
        fact("Jobs", b.total),
        fact("Completed", b.completed),
        fact("Dead-lettered", b.dead_letter),
        fact("Cancelled", b.cancelled),
        fact("Remaining", b.remaining),
        fact("Created", at(b.created_at)),
        fact("Finished", maybe(b.finished_at, "not yet")),
    ];
    if let Some(schedule) = &b.schedule {
        facts.push(fact(
            "Cron tick",
            format!("{schedule} at {}", maybe(b.tick_at, "?")),
        ));
    }
    if let Some(callback) = b.callback_job_id {
        facts.push(linked(
            "Callback job",
            callback,
            format!("/ops/jobs/{callback}"),
        ));
    }
    page(&state, &mount, viewer.csrf(), "Batch", id, facts)
}

pub(super) async fn campaign(
    State(state): State<AppState>,
    mount: Mount,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(viewer) = viewer(&state, caller, &headers).await else {
        return Redirect::to(&mount.url("/ops/login")).into_response();
    };
    let id = match parse(&id, "campaign") {
        Ok(id) => id,
        Err(err) => return failed(&state, &mount, &err, "/ops"),
    };
    let c = match docket_mail::campaign::show(docket_queue::pooled(&state.pool), id).await {
        Ok(c) => c,
        Err(err) => return failed(&state, &mount, &err.into(), "/ops"),
    };
    let mut facts = vec![
        fact("Name", &c.name),
        fact("Template", &c.template),
        fact("State", &c.state),
        fact("Recipients", c.total),
        fact("Sent", c.sent),
        fact("Suppressed", c.suppressed),
        fact("Bounced", c.bounced),
        fact("Unsubscribed", c.unsubscribed),
        fact("Failed", c.failed),
        fact("Dead-lettered", c.dead_letter),
        fact("Expired", c.expired),
        fact("Fate unknown", c.unknown),
        fact("Cancelled", c.cancelled),
        fact("To go", c.pending),
        fact("Created", at(c.created_at)),
    ];
    if let Some(batch) = c.batch_id {
        facts.push(linked("Batch", batch, format!("/ops/batches/{batch}")));
    }
    let controls = matches!(c.state.as_str(), "sending" | "paused");
    let extra = json!({"campaign": {"name": c.name, "state": c.state, "controls": controls}});
    page_with(&state, &mount, viewer.csrf(), "Campaign", id, facts, extra)
}

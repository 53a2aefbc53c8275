//! `GET /ops`: the operations page. Server-rendered HTML from templates compiled into the
//! binary, no script, no external asset; it reads what the health document and the job
//! API read, and every button posts to an action that the JSON API and the CLI also have.
//!
//! - `session`: sign-in, the signed session cookie, CSRF tokens, the wrong-secret delay.
//! - `page`: what the page shows, shaped for the templates.
//! - `detail`: the pages of one worker, batch and campaign.
//! - `state`: the page's own state (sessions, chart, templates), held by the router's.
//! - `throughput`: the last hour's chart, kept in memory.

mod detail;
mod page;
pub(crate) use page::age;
mod session;
pub(crate) mod state;
mod throughput;

pub use state::OpsState;

use std::collections::HashMap;

use axum::extract::{Path, Query, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, SET_COOKIE,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::mount::Mount;
use crate::state::AppState;
use session::{Session, SESSION_COOKIE, SESSION_TTL, SIGN_IN_COOKIE};

/// The page's strict policy: nothing but our own stylesheet; forms post only to us; no
/// framing.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The page's routes, each answered with the security headers.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/ops", get(overview))
        .route("/ops/ops.css", get(stylesheet))
        .route("/ops/login", get(sign_in_form).post(sign_in))
        .route("/ops/logout", post(sign_out))
        .route("/ops/jobs/{id}", get(job))
        .route("/ops/workers/{id}", get(detail::worker))
        .route("/ops/batches/{id}", get(detail::batch))
        .route("/ops/campaigns/{id}", get(detail::campaign))
        .route("/ops/jobs/{id}/{action}", post(job_action))
        .route("/ops/dead-letters/replay", post(replay_dead_letters))
        .route("/ops/queues/{name}/{action}", post(queue_action))
        .route("/ops/cron/{name}/{action}", post(cron_action))
        .route("/ops/campaigns/{id}/{action}", post(campaign_action))
        .layer(axum::middleware::from_fn(security_headers))
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn now() -> i64 {
    Utc::now().timestamp()
}

/// Who may see the page: a signed-in browser (with its CSRF token) or a bearer.
enum Viewer {
    Session(Session),
    Bearer,
}

impl Viewer {
    fn csrf(&self) -> &str {
        match self {
            Viewer::Session(session) => &session.csrf,
            Viewer::Bearer => "",
        }
    }
}

async fn viewer(state: &AppState, caller: Caller, headers: &HeaderMap) -> Option<Viewer> {
    if caller == Caller::Authorized {
        return Some(Viewer::Bearer);
    }
    state
        .ops
        .sessions
        .session(&state.pool, headers, now())
        .await
        .map(Viewer::Session)
}

/// A state-changing request may go ahead: a bearer (no browser sends one by itself), or a
/// session whose form carries its CSRF token. Anything else is [`refused`].
async fn may_act(
    state: &AppState,
    caller: Caller,
    headers: &HeaderMap,
    csrf: Option<&str>,
) -> bool {
    match viewer(state, caller, headers).await {
        Some(Viewer::Bearer) => true,
        Some(Viewer::Session(session)) => {
            csrf.is_some_and(|t| state.ops.sessions.csrf_ok(&session, t))
        }
        None => false,
    }
}

/// The answer to a state-changing request without a session or its CSRF token.
fn refused(state: &AppState, mount: &Mount) -> Response {
    tracing::warn!(
        event = docket_queue::telemetry::event::HEALTH_AUTH_FAILED,
        route = "/ops (action)",
        "operations page action without a session or CSRF token refused"
    );
    state.ops.message(
        mount,
        StatusCode::FORBIDDEN,
        "Refused",
        "This action needs a signed-in session and the page's form token. Reload the page and try again.",
        "/ops",
    )
}

async fn overview(
    State(state): State<AppState>,
    mount: Mount,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(viewer) = viewer(&state, caller, &headers).await else {
        return Redirect::to(&mount.url("/ops/login")).into_response();
    };
    let overview = page::overview(&state, Utc::now()).await;
    let mut context = serde_json::to_value(overview).unwrap_or_else(|_| json!({}));
    context["csrf"] = json!(viewer.csrf());
    context["notice"] = json!(notice(&query));
    state.ops.render(&mount, "index.html", context)
}

/// The message an action's redirect asks for, from a fixed list: a link cannot make the
/// page say anything else.
fn notice(query: &HashMap<String, String>) -> Option<String> {
    let count = query
        .get("n")
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    Some(match query.get("done")?.as_str() {
        "replay" => "Replayed: the job is pending again.".into(),
        "discard" => "Discarded: the dead letter is cancelled.".into(),
        "cancel" => "Cancelled.".into(),
        "replay-many" => format!(
            "Replayed {}.",
            docket_queue::counted(count, "dead letter", "dead letters")
        ),
        "pause" => "Queue paused: running jobs finish, nothing new starts.".into(),
        "resume" => "Queue resumed.".into(),
        "cron-pause" => "Schedule paused.".into(),
        "cron-resume" => "Schedule resumed.".into(),
        "campaign-pause" => {
            "Campaign paused: its batch jobs stop before their next recipient.".into()
        }
        "campaign-resume" => "Campaign resumed: sending again.".into(),
        "campaign-cancel" => {
            "Campaign cancelled: nobody more is sent to; its unsent recipients are cancelled."
                .into()
        }
        _ => return None,
    })
}

async fn stylesheet() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("ops.css"),
    )
        .into_response()
}

async fn sign_in_form(State(state): State<AppState>, mount: Mount, headers: HeaderMap) -> Response {
    if state
        .ops
        .sessions
        .session(&state.pool, &headers, now())
        .await
        .is_some()
    {
        return Redirect::to(&mount.url("/ops")).into_response();
    }
    sign_in_page(&state, &mount, &headers, StatusCode::OK, None)
}

fn sign_in_page(
    state: &AppState,
    mount: &Mount,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let sessions = &state.ops.sessions;
    let token = sessions.sign_in_token(headers);
    let mut response = state.ops.render(
        mount,
        "login.html",
        json!({
            "enabled": sessions.enabled(),
            "error": error,
            "sign_in_token": token.as_ref().map(|(_, t)| t),
        }),
    );
    *response.status_mut() = status;
    if let Some((nonce, _)) = token {
        set_cookie(
            &mut response,
            &format!(
                "{SIGN_IN_COOKIE}={nonce}; Path={}; HttpOnly; SameSite=Strict; Max-Age=3600{}",
                mount.url("/ops/login"),
                secure(headers)
            ),
        );
    }
    response
}

/// `; Secure` when the request came over HTTPS through a proxy that says so.
fn secure(headers: &HeaderMap) -> &'static str {
    let https = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    if https {
        "; Secure"
    } else {
        ""
    }
}

fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    secret: String,
    csrf: Option<String>,
}

async fn sign_in(
    State(state): State<AppState>,
    mount: Mount,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let sessions = &state.ops.sessions;
    if !form
        .csrf
        .as_deref()
        .is_some_and(|token| sessions.sign_in_token_ok(&headers, token))
    {
        return sign_in_page(
            &state,
            &mount,
            &headers,
            StatusCode::FORBIDDEN,
            Some("The sign-in form expired. Enter the secret again."),
        );
    }
    let Some(right) = sessions.check_secret(&state.slow_lane, &form.secret).await else {
        metrics::counter!(crate::observe::AUTH_FAILURES).increment(1);
        let mut response = sign_in_page(
            &state,
            &mount,
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many wrong secrets are waiting their turn. Try again in a few seconds."),
        );
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from_static("1"),
        );
        return response;
    };
    if !right {
        return sign_in_page(
            &state,
            &mount,
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("That secret is not right."),
        );
    }
    let Some(cookie) = sessions.open(now()) else {
        return sign_in_page(
            &state,
            &mount,
            &headers,
            StatusCode::SERVICE_UNAVAILABLE,
            None,
        );
    };
    let mut response = Redirect::to(&mount.url("/ops")).into_response();
    set_cookie(
        &mut response,
        &format!(
            "{SESSION_COOKIE}={cookie}; Path={}; HttpOnly; SameSite=Strict; Max-Age={}{}",
            mount.url("/ops"),
            SESSION_TTL.as_secs(),
            secure(&headers)
        ),
    );
    set_cookie(
        &mut response,
        &format!(
            "{SIGN_IN_COOKIE}=; Path={}; HttpOnly; SameSite=Strict; Max-Age=0",
            mount.url("/ops/login")
        ),
    );
    response
}

/// The hidden fields every action form carries, and the bulk replay's filters.
#[derive(Deserialize)]
struct ActionForm {
    csrf: Option<String>,
    /// `job`: come back to the job's page rather than the overview.
    back: Option<String>,
    queue: Option<String>,
    kind: Option<String>,
    /// Sign-out: `1` ends every session, not just this one.
    everywhere: Option<String>,
}

async fn sign_out(
    State(state): State<AppState>,
    mount: Mount,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let sessions = &state.ops.sessions;
    if let Some(session) = sessions.session(&state.pool, &headers, now()).await {
        if !form
            .csrf
            .as_deref()
            .is_some_and(|t| sessions.csrf_ok(&session, t))
        {
            return refused(&state, &mount);
        }
        let everywhere = form.everywhere.as_deref() == Some("1");
        if let Err(err) = sessions.revoke(&state.pool, &session, everywhere).await {
            return failed(
                &state,
                &mount,
                &ApiError::from(docket_queue::Error::from(err)),
                "/ops",
            );
        }
    }
    let mut response = Redirect::to(&mount.url("/ops/login")).into_response();
    set_cookie(
        &mut response,
        &format!(
            "{SESSION_COOKIE}=; Path={}; HttpOnly; SameSite=Strict; Max-Age=0",
            mount.url("/ops")
        ),
    );
    response
}

async fn job(
    State(state): State<AppState>,
    mount: Mount,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(viewer) = viewer(&state, caller, &headers).await else {
        return Redirect::to(&mount.url("/ops/login")).into_response();
    };
    let job = match crate::params::parse_id(&id) {
        Ok(id) => docket_queue::admin::show(docket_queue::pooled(&state.pool), id)
            .await
            .map_err(ApiError::from),
        Err(err) => Err(err),
    };
    match job {
        Ok(job) => {
            let payload = serde_json::to_string_pretty(&job.payload).unwrap_or_default();
            state.ops.render(
                &mount,
                "job.html",
                json!({"job": job, "payload": payload, "replayable": job.replayable(Utc::now()), "csrf": viewer.csrf(), "notice": notice(&query)}),
            )
        }
        Err(err) => failed(&state, &mount, &err, "/ops"),
    }
}

/// An action that worked: back to the page `to` (as the routes spell it), which shows its
/// effect.
fn done(state: &AppState, mount: &Mount, to: &str) -> Response {
    state.health.invalidate();
    Redirect::to(&mount.url(to)).into_response()
}

/// An action that failed, as a page that says why, with a link `back` (as the routes
/// spell it).
fn failed(state: &AppState, mount: &Mount, err: &ApiError, back: &str) -> Response {
    let (status, message) = err.status_and_message();
    state
        .ops
        .message(mount, status, "That did not work", &message, back)
}

async fn job_action(
    State(state): State<AppState>,
    mount: Mount,
    caller: Caller,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !may_act(&state, caller, &headers, form.csrf.as_deref()).await {
        return refused(&state, &mount);
    }
    let back = match form.back.as_deref() {
        Some("job") => format!("/ops/jobs/{id}"),
        _ => "/ops".to_owned(),
    };
    let result = match crate::params::parse_id(&id) {
        Err(err) => Err(err),
        Ok(id) => {
            let pool = docket_queue::pooled(&state.pool);
            match action.as_str() {
                "replay" => docket_queue::admin::replay(pool, id).await,
                "discard" => docket_queue::admin::discard(pool, id).await,
                "cancel" => docket_queue::admin::cancel(pool, id).await,
                _ => {
                    return failed(
                        &state,
                        &mount,
                        &ApiError::NotFound(format!("no action {action:?}")),
                        &back,
                    )
                }
            }
            .map_err(ApiError::from)
        }
    };
    match result {
        Ok(_) => done(&state, &mount, &format!("{back}?done={action}")),
        Err(err) => failed(&state, &mount, &err, &back),
    }
}

async fn replay_dead_letters(
    State(state): State<AppState>,
    mount: Mount,
    caller: Caller,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    if !may_act(&state, caller, &headers, form.csrf.as_deref()).await {
        return refused(&state, &mount);
    }
    let non_empty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let filter = docket_queue::admin::DeadLetterFilter {
        queue: non_empty(form.queue),
        kind: non_empty(form.kind),
        ..Default::default()
    };
    match docket_queue::admin::replay_dead_letters(docket_queue::pooled(&state.pool), &filter).await
    {
        Ok(n) => done(&state, &mount, &format!("/ops?done=replay-many&n={n}")),
        Err(err) => failed(&state, &mount, &err.into(), "/ops"),
    }
}

/// `pause` → `Some(true)`, `resume` → `Some(false)`, anything else → `None`.
fn pausing(action: &str) -> Option<bool> {
    match action {
        "pause" => Some(true),
        "resume" => Some(false),
        _ => None,
    }
}

async fn queue_action(
    State(state): State<AppState>,
    mount: Mount,
    caller: Caller,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !may_act(&state, caller, &headers, form.csrf.as_deref()).await {
        return refused(&state, &mount);
    }
    let result = match pausing(&action) {
        Some(true) => docket_queue::queues::pause(docket_queue::pooled(&state.pool), &name)
            .await
            .map(drop),
        Some(false) => docket_queue::queues::resume(docket_queue::pooled(&state.pool), &name)
            .await
            .map(drop),
        None => return no_such_action(&state, &mount, &action),
    };
    match result {
        Ok(()) => done(&state, &mount, &format!("/ops?done={action}")),
        Err(err) => failed(&state, &mount, &err.into(), "/ops"),
    }
}

async fn cron_action(
    State(state): State<AppState>,
    mount: Mount,
    caller: Caller,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !may_act(&state, caller, &headers, form.csrf.as_deref()).await {
        return refused(&state, &mount);
    }
    let Some(paused) = pausing(&action) else {
        return no_such_action(&state, &mount, &action);
    };
    match docket_queue::cron::set_paused(docket_queue::pooled(&state.pool), &name, paused).await {
        Ok(()) => done(&state, &mount, &format!("/ops?done=cron-{action}")),
        Err(err) => failed(&state, &mount, &err.into(), "/ops"),
    }
}

async fn campaign_action(
    State(state): State<AppState>,
    mount: Mount,
    caller: Caller,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !may_act(&state, caller, &headers, form.csrf.as_deref()).await {
        return refused(&state, &mount);
    }
    if !matches!(action.as_str(), "pause" | "resume" | "cancel") {
        return no_such_action(&state, &mount, &action);
    }
    let Ok(id) = id.parse::<uuid::Uuid>() else {
        return failed(
            &state,
            &mount,
            &ApiError::BadRequest(format!("{id:?} is not a campaign id (a UUID)")),
            "/ops",
        );
    };
    match crate::routes::mail::control(&state.pool, id, &action).await {
        Ok(_) => done(&state, &mount, &format!("/ops?done=campaign-{action}")),
        Err(err) => failed(&state, &mount, &err, "/ops"),
    }
}

fn no_such_action(state: &AppState, mount: &Mount, action: &str) -> Response {
    failed(
        state,
        mount,
        &ApiError::NotFound(format!("no action {action:?}")),
        "/ops",
    )
}

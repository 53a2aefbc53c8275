//! `GET` and `POST /unsubscribe/{token}`: the one-click unsubscribe link in every campaign
//! email (RFC 8058), public. A POST unsubscribes at once, whatever its body (a mailbox
//! provider sends `List-Unsubscribe=One-Click`, form- or multipart-encoded; the confirmation
//! page's button sends the same): the signed token is the authority. A GET shows that page
//! and changes nothing, since link scanners fetch every URL in a message. A link that does
//! not work gets a plain page, 400 (not a token, or tampered with) or 404 (no such
//! delivery), and changes nothing.

use axum::extract::{Path, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use docket_mail::unsubscribe::{self, Refusal};

use crate::error::ApiError;
use crate::state::AppState;

/// The pages load nothing and post only to themselves; the token in the URL never leaves
/// as a referrer.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The confirmation page (changes nothing).
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let Some(signer) = state.mailer.as_ref().and_then(|m| m.signer()) else {
        return Ok(not_configured());
    };
    Ok(
        match unsubscribe::look(&state.pool, signer, &token).await? {
            Ok(target) => page(
                StatusCode::OK,
                "Unsubscribe",
                &format!(
                    "<p>Stop campaign emails to <strong>{}</strong>?</p>\
                     <form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" \
                     value=\"One-Click\"><button type=\"submit\">Unsubscribe</button></form>",
                    escape(&target.address)
                ),
            ),
            Err(refusal) => refused(refusal),
        },
    )
}

/// One-click unsubscribe: the address goes on the suppression list at once.
pub(crate) async fn post(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let Some(signer) = state.mailer.as_ref().and_then(|m| m.signer()) else {
        return Ok(not_configured());
    };
    Ok(
        match unsubscribe::unsubscribe(&state.pool, signer, &token).await? {
            Ok(done) => page(
                StatusCode::OK,
                "Unsubscribed",
                &format!(
                    "<p><strong>{}</strong> will get no more campaign emails from us.</p>",
                    escape(&done.address)
                ),
            ),
            Err(refusal) => refused(refusal),
        },
    )
}

fn refused(refusal: Refusal) -> Response {
    let status = match refusal {
        Refusal::Token(_) => StatusCode::BAD_REQUEST,
        Refusal::Unknown => StatusCode::NOT_FOUND,
    };
    page(
        status,
        "Link not valid",
        "<p>This unsubscribe link is not valid. Nothing was changed. Please use the link in \
         the most recent email, or reply to it.</p>",
    )
}

fn not_configured() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Link not valid",
        "<p>This server takes no unsubscribe links. Nothing was changed.</p>",
    )
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><meta name=\"robots\" \
         content=\"noindex\"><title>{title}</title><style>body{{font-family:sans-serif;\
         max-width:32rem;margin:3rem auto;padding:0 1rem}}</style></head><body><h1>{title}</h1>\
         {body}</body></html>"
    );
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// Text for HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

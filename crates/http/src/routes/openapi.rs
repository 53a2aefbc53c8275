//! `GET /api/openapi.json`: the OpenAPI document, generated from the handlers and types
//! themselves so it cannot drift from them.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::auth::Caller;
use crate::mount::Mount;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Docket", description = "A background job queue engine on PostgreSQL"),
    paths(
        super::health::head,
        super::health::get,
        super::metrics::get,
        super::jobs::list,
        super::jobs::show,
        super::jobs::enqueue,
        super::jobs::replay,
        super::jobs::cancel,
        super::jobs::discard,
        super::jobs::replay_dead_letters,
        super::batches::create,
        super::batches::show,
        super::mail::deliveries,
        super::mail::bounce,
        super::mail::create_campaign,
        super::mail::show_campaign,
        super::mail::pause_campaign,
        super::mail::resume_campaign,
        super::mail::cancel_campaign,
        super::queues::pause,
        super::queues::resume,
        super::cron::list,
        super::cron::pause,
        super::cron::resume,
        super::cron::remove,
    ),
    components(schemas(crate::error::ErrorBody, docket_queue::Snapshot, docket_queue::QueueFigures)),
    modifiers(&Bearer)
)]
pub(crate) struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("CRON_SECRET"))
                    .build(),
            ),
        );
    }
}

/// How long the bearer's document (with this server's template and schedule names) is
/// reused before the schedules are read again.
pub(crate) const NAMED_TTL: Duration = Duration::from_secs(10);

/// Anyone gets the document the code generates, the same for every Docket: it tells
/// nothing a reader of the source does not know, and a client generator needs no secret to
/// read it. Built once, never a database query. The bearer also learns this server's
/// template and schedule names (what `template` and the cron routes' `name` accept); that
/// document is read at most every [`NAMED_TTL`]. Where the router is nested under a prefix
/// (`Router::nest("/docket", …)`), the document's `servers` names it, so a client asks for
/// `/docket/api/jobs`; at the root it has no `servers` (OpenAPI's default, `/`).
pub(crate) async fn get(State(state): State<AppState>, mount: Mount, caller: Caller) -> Response {
    let cache = &state.openapi;
    let body = match caller {
        Caller::Anonymous => {
            // A std lock held only to look up or insert, never across an await.
            let mut public = cache.public.lock().unwrap_or_else(|e| e.into_inner());
            public
                .entry(mount.prefix().to_owned())
                .or_insert_with(|| serialize(ApiDoc::openapi(), &mount))
                .clone()
        }
        Caller::Authorized => {
            let mut named = cache.named.lock().await;
            match &*named {
                Some((at, prefix, body))
                    if at.elapsed() < NAMED_TTL && prefix == mount.prefix() =>
                {
                    body.clone()
                }
                _ => {
                    let body = serialize(named_doc(&state).await, &mount);
                    *named = Some((Instant::now(), mount.prefix().to_owned(), body.clone()));
                    body
                }
            }
        }
    };
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}

fn serialize(mut doc: utoipa::openapi::OpenApi, mount: &Mount) -> Bytes {
    if !mount.prefix().is_empty() {
        doc.servers = Some(vec![utoipa::openapi::Server::new(mount.url(""))]);
    }
    // A document of plain strings and maps always serializes.
    let mut value = serde_json::to_value(&doc).unwrap_or_default();
    camel_case_links(&mut value);
    Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
}

/// utoipa 5 writes a response link's fields in snake case (`operation_id`); OpenAPI names
/// them `operationId`, `operationRef` and `requestBody`, and a client finds no link
/// without them.
fn camel_case_links(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links")?.as_object_mut())
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        for (snake, camel) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(value) = link.remove(snake) {
                link.insert(camel.to_owned(), value);
            }
        }
    }
}

async fn named_doc(state: &AppState) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    if let Some(mailer) = &state.mailer {
        let names = mailer.catalog().list().into_iter().map(|t| t.name);
        name_templates(&mut doc, names.map(serde_json::Value::from).collect());
    }
    // The cron routes take only the names of registered schedules (others answer 404).
    if let Ok(schedules) = docket_queue::cron::list(docket_queue::pooled(&state.pool)).await {
        if !schedules.is_empty() {
            let names: Vec<serde_json::Value> =
                schedules.into_iter().map(|s| s.def.name.into()).collect();
            name_schedules(&mut doc, &names);
        }
    }
    doc
}

/// Lists `names` as the `name` path parameter's values of the cron routes.
fn name_schedules(doc: &mut utoipa::openapi::OpenApi, names: &[serde_json::Value]) {
    use utoipa::openapi::{RefOr, Schema};
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/api/cron/{name}") {
            continue;
        }
        for operation in [item.post.as_mut(), item.delete.as_mut()]
            .into_iter()
            .flatten()
        {
            for parameter in operation.parameters.iter_mut().flatten() {
                if parameter.name != "name" {
                    continue;
                }
                if let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut() {
                    schema.enum_values = Some(names.to_vec());
                }
            }
        }
    }
}

/// The campaign request's `template` can only be one of the catalog's: the document says
/// which, so a client (or a fuzzer) knows the values the server accepts.
fn name_templates(doc: &mut utoipa::openapi::OpenApi, names: Vec<serde_json::Value>) {
    use utoipa::openapi::{RefOr, Schema};
    let Some(RefOr::T(Schema::Object(request))) = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("CampaignRequest"))
    else {
        return;
    };
    if let Some(RefOr::T(Schema::Object(template))) = request.properties.get_mut("template") {
        template.enum_values = Some(names);
    }
}

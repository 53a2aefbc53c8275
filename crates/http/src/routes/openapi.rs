//! `GET /api/openapi.json`: the OpenAPI document, generated from the handlers and types
//! themselves so it cannot drift from them.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
        super::jobs::replay_dead_letters,
        super::batches::create,
        super::batches::show,
        super::mail::deliveries,
        super::mail::create_campaign,
        super::mail::show_campaign,
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

pub(crate) async fn get() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

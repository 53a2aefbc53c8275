//! `GET /api/mail/deliveries`, `POST /api/campaigns`, `GET /api/campaigns/{id}`,
//! `POST /api/campaigns/{id}/pause|resume|cancel`, `POST /api/mail/bounces`: the mail
//! records and campaigns, as `docket mail` shows, makes and controls them, and the bounces
//! it ingests.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use docket_mail::bounce;
use docket_mail::campaign::{self, CampaignStatus, NewCampaign, Recipient};
use docket_mail::delivery::{self, Delivery, DeliveryFilter, Status};
use serde::{Deserialize, Serialize};

use crate::auth::Authorized;
use crate::error::ApiError;
use crate::routes::jobs::ApiJson;
use crate::state::AppState;

/// `GET /api/mail/deliveries` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveriesQuery {
    /// Only this status: queued, sending, sent, suppressed, failed, dead_letter, expired,
    /// unknown, cancelled, bounced.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// Only this campaign's.
    #[param(value_type = Option<uuid::Uuid>)]
    campaign: Option<String>,
    /// Only to this address (any case).
    #[param(min_length = 1, max_length = 320)]
    to: Option<String>,
    /// At most this many, newest first: 1 to 1000; default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Deliveries, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Deliveries {
    deliveries: Vec<Delivery>,
}

#[utoipa::path(get, path = "/api/mail/deliveries", params(DeliveriesQuery), security(("bearer" = [])),
    responses((status = 200, body = Deliveries), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn deliveries(
    State(state): State<AppState>,
    _: Authorized,
    params: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<Deliveries>, ApiError> {
    let Query(params) = params.map_err(|err| ApiError::BadRequest(err.body_text()))?;
    let status = params
        .status
        .as_deref()
        .map(str::parse::<Status>)
        .transpose()
        .map_err(|err| ApiError::BadRequest(err.to_string()))?;
    let campaign_id = params
        .campaign
        .as_deref()
        .map(|id| {
            id.parse()
                .map_err(|_| ApiError::BadRequest(format!("{id:?} is not a campaign id (a UUID)")))
        })
        .transpose()?;
    if params
        .to
        .as_ref()
        .is_some_and(|to| to.is_empty() || to.chars().count() > 320 || to.contains('\0'))
    {
        return Err(ApiError::BadRequest(
            "to must be 1 to 320 characters, without NUL".into(),
        ));
    }
    let filter = DeliveryFilter {
        status,
        campaign_id,
        to: params.to,
        limit: params.limit.unwrap_or(50),
    };
    // A filter out of range is a bad query (400), not a bad body.
    let deliveries = delivery::list(docket_queue::pooled(&state.pool), &filter)
        .await
        .map_err(|err| match err {
            docket_mail::MailError::Invalid(message) => ApiError::BadRequest(message),
            other => other.into(),
        })?;
    Ok(Json(Deliveries { deliveries }))
}

/// `POST /api/campaigns` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CampaignRequest {
    /// Its name (1 to 200 characters, not all blank, no NUL).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    name: String,
    /// The template every recipient gets: one of the catalog's (`docket mail templates`);
    /// another answers 404.
    #[schema(min_length = 1)]
    template: String,
    /// Its recipients: at least one. An address listed again (in any case) is sent to
    /// once; `duplicates` counts the repeats.
    #[schema(min_items = 1)]
    recipients: Vec<RecipientRequest>,
    /// Recipients per batch job, 1 to 10000; default 100.
    #[schema(minimum = 1, maximum = 10000)]
    #[serde(default, deserialize_with = "crate::routes::jobs::integral")]
    batch_size: Option<usize>,
}

/// One recipient.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecipientRequest {
    /// The address.
    #[schema(
        max_length = 254,
        pattern = r"^[A-Za-z0-9]{1,16}([._+-][A-Za-z0-9]{1,15}){0,3}@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?){0,3}$"
    )]
    to: String,
    /// The display name.
    #[schema(max_length = 200, pattern = r"^[^\x00\r\n]*$")]
    name: Option<String>,
    /// The recipient's locale (`pt-BR`).
    #[schema(max_length = 35, pattern = r"^[A-Za-z0-9_-]*$")]
    locale: Option<String>,
    /// The recipient's template variables.
    #[serde(default)]
    #[schema(value_type = Object)]
    vars: serde_json::Map<String, serde_json::Value>,
}

/// `POST /api/campaigns` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CampaignCreated {
    /// The campaign's id.
    id: uuid::Uuid,
    /// Its recipients.
    total: usize,
    /// Repeated addresses left out.
    duplicates: usize,
}

#[utoipa::path(post, path = "/api/campaigns", request_body = CampaignRequest, security(("bearer" = [])),
    responses((status = 201, body = CampaignCreated, links(
            ("ShowCampaign" = (operation_id = "show_campaign", parameters(("id" = "$response.body#/id")))),
            ("PauseCampaign" = (operation_id = "pause_campaign", parameters(("id" = "$response.body#/id")))),
            ("ResumeCampaign" = (operation_id = "resume_campaign", parameters(("id" = "$response.body#/id")))),
            ("CancelCampaign" = (operation_id = "cancel_campaign", parameters(("id" = "$response.body#/id")))))),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "The recipients do not give every variable the template uses (in any locale): the message lists each missing one"),
        (status = 413, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn create_campaign(
    State(state): State<AppState>,
    _: Authorized,
    ApiJson(body): ApiJson<CampaignRequest>,
) -> Result<(StatusCode, Json<CampaignCreated>), ApiError> {
    let mailer = state.mailer.as_ref().ok_or(ApiError::Unavailable)?;
    let listed = body.recipients.len();
    let mut recipients = Vec::with_capacity(listed);
    let mut seen = std::collections::HashSet::new();
    for r in body.recipients {
        let mailbox = docket_mail::message::parse_mailbox(&r.to, r.name.as_deref())
            .map_err(|err| ApiError::Invalid(err.to_string()))?;
        if !seen.insert(mailbox.email.to_string().to_ascii_lowercase()) {
            continue;
        }
        recipients.push(Recipient {
            to: mailbox.email.to_string(),
            name: mailbox.name,
            locale: r.locale,
            vars: r.vars.into(),
        });
    }
    let duplicates = listed - recipients.len();
    let total = recipients.len();
    let new = NewCampaign {
        batch_size: body
            .batch_size
            .unwrap_or(docket_mail::config::CAMPAIGN_BATCH_SIZE_DEFAULT),
        ..NewCampaign::new(&body.name, &body.template, recipients)
    };
    if !mailer.catalog().contains(&new.template) {
        return Err(ApiError::NotFound(
            mailer.catalog().unknown(&new.template).to_string(),
        ));
    }
    let id = campaign::create(&state.pool, mailer.catalog(), mailer.from(), &new).await?;
    Ok((
        StatusCode::CREATED,
        Json(CampaignCreated {
            id,
            total,
            duplicates,
        }),
    ))
}

#[utoipa::path(get, path = "/api/campaigns/{id}", params(("id" = uuid::Uuid, Path, description = "The campaign's id")), security(("bearer" = [])),
    responses((status = 200, body = CampaignStatus), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn show_campaign(
    State(state): State<AppState>,
    _: Authorized,
    Path(id): Path<String>,
) -> Result<Json<CampaignStatus>, ApiError> {
    Ok(Json(
        campaign::show(docket_queue::pooled(&state.pool), campaign_id(&id)?).await?,
    ))
}

/// A campaign id from the path, or 400.
fn campaign_id(id: &str) -> Result<uuid::Uuid, ApiError> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("{id:?} is not a campaign id (a UUID)")))
}

/// `pause`, `resume` or `cancel` a campaign; its state as it is now.
pub(crate) async fn control(
    pool: &sqlx::PgPool,
    id: uuid::Uuid,
    action: &str,
) -> Result<CampaignStatus, ApiError> {
    match action {
        "pause" => campaign::pause(pool, id).await?,
        "resume" => campaign::resume(pool, id).await?,
        "cancel" => campaign::cancel(pool, id).await?,
        other => return Err(ApiError::NotFound(format!("no action {other:?}"))),
    };
    Ok(campaign::show(docket_queue::pooled(pool), id).await?)
}

#[utoipa::path(post, path = "/api/campaigns/{id}/pause", params(("id" = uuid::Uuid, Path, description = "The campaign's id")), security(("bearer" = [])),
    responses((status = 200, body = CampaignStatus, description = "Paused (or paused already): its batch jobs are parked"),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "Finished or cancelled: the message says which"), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn pause_campaign(
    State(state): State<AppState>,
    _: Authorized,
    Path(id): Path<String>,
) -> Result<Json<CampaignStatus>, ApiError> {
    Ok(Json(
        control(&state.pool, campaign_id(&id)?, "pause").await?,
    ))
}

#[utoipa::path(post, path = "/api/campaigns/{id}/resume", params(("id" = uuid::Uuid, Path, description = "The campaign's id")), security(("bearer" = [])),
    responses((status = 200, body = CampaignStatus, description = "Sending (or sending already): its batch jobs are due now"),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "Finished or cancelled: the message says which"), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn resume_campaign(
    State(state): State<AppState>,
    _: Authorized,
    Path(id): Path<String>,
) -> Result<Json<CampaignStatus>, ApiError> {
    Ok(Json(
        control(&state.pool, campaign_id(&id)?, "resume").await?,
    ))
}

#[utoipa::path(post, path = "/api/campaigns/{id}/cancel", params(("id" = uuid::Uuid, Path, description = "The campaign's id")), security(("bearer" = [])),
    responses((status = 200, body = CampaignStatus, description = "Cancelled (or cancelled already): its unsent recipients are `cancelled`"),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "Finished: every recipient is final"), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn cancel_campaign(
    State(state): State<AppState>,
    _: Authorized,
    Path(id): Path<String>,
) -> Result<Json<CampaignStatus>, ApiError> {
    Ok(Json(
        control(&state.pool, campaign_id(&id)?, "cancel").await?,
    ))
}

/// The most of a message `POST /api/mail/bounces` takes: a report and the returned headers
/// fit many times over; a returned message with its attachments may not.
pub(crate) const BOUNCE_BODY_LIMIT: usize = 1024 * 1024;

/// What a message sent to a bounce address came to.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct BounceRecorded {
    /// `bounced` (the delivery is `bounced`), `delayed` (nothing changed) or `ignored`.
    outcome: &'static str,
    /// The delivery it names, for `bounced` and `delayed`.
    delivery_id: Option<uuid::Uuid>,
    /// For `bounced`: the enhanced status code (`5.1.1`).
    status: Option<String>,
    /// For `bounced`: whether the address went on the suppression list (5.1.x).
    suppressed: bool,
    /// For `ignored`: why (an automatic reply, not a delivery status notification, a bounce
    /// address that names no delivery, …).
    reason: Option<String>,
    /// For `ignored`: the bounce address names no delivery (what `docket mail bounce`
    /// exits 67 for).
    unknown_recipient: bool,
}

/// One message sent to a bounce address (`bounce+<token>@<MAIL_BOUNCE_DOMAIN>` ([`docket_settings::MAIL_BOUNCE_DOMAIN`])), raw,
/// as `docket mail bounce` reads it on standard input: recorded, and acted on when it is a
/// delivery status notification for a delivery.
#[utoipa::path(post, path = "/api/mail/bounces", security(("bearer" = [])),
    request_body(content = String, content_type = "message/rfc822", description = "The raw message, headers and body"),
    responses((status = 200, body = BounceRecorded), (status = 400, body = crate::error::ErrorBody, description = "An empty body"), (status = 401, body = crate::error::ErrorBody),
        (status = 413, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody, description = "The database does not answer, or no token secret is set: hand the message over again later")))]
pub(crate) async fn bounce(
    State(state): State<AppState>,
    _: Authorized,
    body: axum::body::Bytes,
) -> Result<Json<BounceRecorded>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "the body is empty: send the raw message (message/rfc822), headers and body".into(),
        ));
    }
    let mailer = state.mailer.as_ref().ok_or(ApiError::Unavailable)?;
    let signer = mailer.signer().ok_or(ApiError::Unavailable)?;
    let domain = mailer.config().bounce_domain.as_deref();
    let outcome = bounce::ingest(&state.pool, signer, domain, &body).await?;
    let mut answer = BounceRecorded {
        outcome: outcome.as_str(),
        delivery_id: None,
        status: None,
        suppressed: false,
        reason: None,
        unknown_recipient: false,
    };
    match outcome {
        bounce::Outcome::Bounced {
            delivery,
            status,
            suppressed,
        } => {
            answer.delivery_id = Some(delivery);
            answer.status = status;
            answer.suppressed = suppressed;
        }
        bounce::Outcome::Delayed { delivery } => answer.delivery_id = Some(delivery),
        bounce::Outcome::Ignored {
            reason,
            unknown_recipient,
        } => {
            answer.reason = Some(reason);
            answer.unknown_recipient = unknown_recipient;
        }
    }
    Ok(Json(answer))
}

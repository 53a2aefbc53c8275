//! Docket as a library, in a small axum service: `POST /signup` writes the user's row and,
//! in the same transaction, enqueues a welcome job and a sign-in email. If the request
//! fails (the address is taken), neither job exists: the queue is only as eventual as the
//! application's own commit. The service embeds its worker, which runs the welcome job
//! and the mail kinds.
//!
//! It reads the settings `docket worker` reads (the `DOCKET_*` variables over
//! `./docket.toml`); its sign-in email's template ships beside it in `examples/templates`.
//!
//! ```sh
//! DATABASE_URL=postgres://… DOCKET_SMTP_URL=smtp://localhost:1025 \
//!   DOCKET_MAIL_FROM='App <app@example.com>' DOCKET_TEMPLATE_DIR=examples/templates \
//!   cargo run --example signup
//! curl -X POST localhost:3000/signup -H 'content-type: application/json' -d '{"email":"ann@example.com"}'
//! ```

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use docket_mail::jobs::Recovery;
use docket_queue::{JobArgs, NewJob};
use docket_worker::{JobContext, JobError, Registry, Runtime, RuntimeConfig};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// The application's own job: mark the user welcomed.
#[derive(Serialize, Deserialize)]
pub struct Welcome {
    /// The user to welcome.
    pub user_id: i64,
}

impl JobArgs for Welcome {
    const KIND: &'static str = "app.welcome";
}

/// `POST /signup` body.
#[derive(Deserialize)]
pub struct Signup {
    /// The new user's address.
    pub email: String,
}

/// `POST /signup` answer.
#[derive(Serialize)]
pub struct SignedUp {
    /// The new user's id.
    pub user_id: i64,
}

/// The application's table (its own, beside Docket's schema).
pub async fn create_tables(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query(
        "create table if not exists app_users (
             id bigserial primary key,
             email text not null unique,
             welcomed_at timestamptz)",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The service's routes.
pub fn app(pool: PgPool) -> Router {
    Router::new()
        .route("/signup", post(signup))
        .with_state(pool)
}

async fn signup(
    State(pool): State<PgPool>,
    Json(body): Json<Signup>,
) -> Result<(StatusCode, Json<SignedUp>), (StatusCode, String)> {
    let internal =
        |err: &dyn std::fmt::Display| (StatusCode::INTERNAL_SERVER_ERROR, err.to_string());
    let mut tx = pool.begin().await.map_err(|e| internal(&e))?;
    let user_id: Option<i64> = sqlx::query_scalar(
        "insert into app_users (email) values (lower($1)) on conflict (email) do nothing returning id",
    )
    .bind(&body.email)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| internal(&e))?;
    let Some(user_id) = user_id else {
        // The transaction rolls back when dropped: no job was enqueued.
        return Err((
            StatusCode::CONFLICT,
            "that address has an account".to_owned(),
        ));
    };
    let welcome = NewJob::typed(&Welcome { user_id }).map_err(|e| internal(&e))?;
    docket_queue::enqueue(&mut *tx, &welcome)
        .await
        .map_err(|e| internal(&e))?;
    let sign_in = Recovery {
        to: body.email.clone(),
        template: "sign_in".to_owned(),
        vars: serde_json::json!({ "link": format!("https://app.example/sign-in/{user_id}") }),
        locale: None,
        idempotency_key: Some(format!("sign-in:{user_id}")),
    };
    // Recovery emails go to their own queue, ahead of everything else, by themselves.
    let sign_in = NewJob::typed(&sign_in)
        .map_err(|e| internal(&e))?
        .expires_at(chrono::Utc::now() + chrono::Duration::minutes(15));
    docket_queue::enqueue(&mut *tx, &sign_in)
        .await
        .map_err(|e| internal(&e))?;
    tx.commit().await.map_err(|e| internal(&e))?;
    Ok((StatusCode::CREATED, Json(SignedUp { user_id })))
}

/// The embedded worker: the application's kinds and Docket's mail kinds, serving the
/// queues `config` names (by default `default`, `mail` and `recovery`, as `docket worker`).
pub fn worker(
    pool: PgPool,
    mailer: Arc<docket_mail::Mailer>,
    config: RuntimeConfig,
) -> Result<Runtime, docket_worker::ConfigError> {
    let mut registry = Registry::new();
    let db = pool.clone();
    registry.register(move |job: Welcome, _ctx: JobContext| {
        let db = db.clone();
        async move {
            sqlx::query("update app_users set welcomed_at = now() where id = $1")
                .bind(job.user_id)
                .execute(&db)
                .await
                .map_err(JobError::from)?;
            Ok(())
        }
    });
    docket_mail::jobs::register(&mut registry, mailer);
    Runtime::new(pool, registry, config)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")?;
    let pool = PgPool::connect(&url).await?;
    docket_queue::migrate(&pool).await?;
    create_tables(&pool).await?;
    // The settings `docket worker` reads, with its validation and "did you mean".
    let mail = docket_mail::MailConfig::from_env()?;
    let mailer = Arc::new(docket_mail::Mailer::new(pool.clone(), mail)?);
    let runtime = worker(pool.clone(), mailer, RuntimeConfig::from_env()?)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(runtime.run(stop.clone().cancelled_owned()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app(pool))
        .with_graceful_shutdown(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;
    stop.cancel();
    worker.await??;
    Ok(())
}

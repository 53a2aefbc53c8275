//! `docket migrate`: apply the embedded migrations.

use sqlx::PgPool;

pub(crate) async fn run(pool: &PgPool, json: bool) -> anyhow::Result<()> {
    crate::cmd::refuse_through_pooler("migrate")?;
    docket_queue::migrate(pool).await?;
    let applied = docket_queue::MIGRATOR.iter().count();
    if json {
        return crate::cmd::print_json(&serde_json::json!({ "known": applied, "current": true }));
    }
    println!("migrations applied: {applied} known, database is current");
    Ok(())
}

//! `docket migrate`: apply the embedded migrations.

use sqlx::PgPool;

pub(crate) async fn run(pool: &PgPool) -> anyhow::Result<()> {
    docket_queue::migrate(pool).await?;
    let applied = docket_queue::MIGRATOR.iter().count();
    println!("migrations applied: {applied} known, database is current");
    Ok(())
}

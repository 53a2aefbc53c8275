//! `docket.rate_limits`: token buckets shared by every process.

use sqlx::PgExecutor;

/// A bucket and what is asked of it.
pub(crate) struct TakeParams<'a> {
    pub(crate) name: &'a str,
    pub(crate) rate: f64,
    pub(crate) burst: f64,
    pub(crate) wanted: i32,
    pub(crate) borrow: f64,
}

/// Takes up to `wanted` tokens (see `docket.rate_limit_take`): how many were taken, and
/// the level left.
pub(crate) async fn rate_limit_take(
    exec: impl PgExecutor<'_>,
    params: &TakeParams<'_>,
) -> sqlx::Result<(i32, f64)> {
    sqlx::query_as("select granted, level from docket.rate_limit_take($1, $2, $3, $4, $5)")
        .bind(params.name)
        .bind(params.rate)
        .bind(params.burst)
        .bind(params.wanted)
        .bind(params.borrow)
        .fetch_one(exec)
        .await
}

/// Returns tokens taken but not used, up to the bucket's burst.
pub(crate) async fn rate_limit_give_back(
    exec: impl PgExecutor<'_>,
    name: &str,
    unused: i32,
) -> sqlx::Result<()> {
    sqlx::query("select docket.rate_limit_give_back($1, $2)")
        .bind(name)
        .bind(unused)
        .execute(exec)
        .await?;
    Ok(())
}

/// Empties the bucket and puts it `seconds` of refill into debt, so that every taker waits
/// that long (a relay that says "slow down"). Holds do not add up: the debt is the longer
/// of the one now (refilled up to this moment) and this hold.
pub(crate) async fn rate_limit_hold(
    exec: impl PgExecutor<'_>,
    name: &str,
    seconds: f64,
) -> sqlx::Result<()> {
    sqlx::query(
        r#"
        update docket.rate_limits
        set tokens = least(
                tokens + rate * greatest(0, extract(epoch from clock_timestamp() - updated_at)),
                -rate * $2),
            updated_at = clock_timestamp()
        where name = $1
        "#,
    )
    .bind(name)
    .bind(seconds)
    .execute(exec)
    .await?;
    Ok(())
}

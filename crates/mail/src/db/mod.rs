//! Every SQL statement of the mail crate, one function per statement.
//!
//! Names put the table first, then the verb and a qualifier (`delivery_reserve`,
//! `campaign_set_controls`), so related statements sort together. Each takes any
//! `PgExecutor`, so a caller's transaction works. Statements read and write the types of
//! [`crate::model`] and nothing above it.
//!
//! One module per table: [`bounce`] (`mail_bounces`), [`campaign`] (`mail_campaigns`), [`delivery`] (`mail_deliveries`),
//! [`status`] (`mail_status`), [`suppression`] (`mail_suppressions`).

mod bounce;
mod campaign;
mod delivery;
mod status;
mod suppression;

pub(crate) use bounce::*;
pub(crate) use campaign::*;
pub(crate) use delivery::*;
pub(crate) use status::*;
pub(crate) use suppression::*;

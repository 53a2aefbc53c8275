//! The protocol model checked, its mutations caught, and its walks replayed on PostgreSQL.

mod check;
mod mutations;
mod replay;

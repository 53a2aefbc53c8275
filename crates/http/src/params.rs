//! Request parameters the JSON API and the operations page parse alike.

use docket_queue::JobId;

use crate::error::ApiError;

/// A job id from a path: 400 naming what was given when it is not a UUID.
pub(crate) fn parse_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::BadRequest(format!("{raw:?} is not a job id (a UUID)")))
}

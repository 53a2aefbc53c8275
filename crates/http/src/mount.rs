//! Where the router is mounted, and the one way to make a URL under it.
//!
//! [`router`](crate::router) is served at the root by `docket serve`, or nested under a
//! prefix in an application's own axum router (`Router::nest("/docket", …)`). Routes match
//! either way (axum strips the prefix before they see the path); what the HTTP layer hands
//! back to a client must not lose it: the operations page's links, form actions, redirects,
//! stylesheet and cookie paths, and the OpenAPI document's server. Each is made by
//! [`Mount::url`] from a path as the router's own routes spell it (`/ops/jobs/…`).
//!
//! The prefix comes from axum's `NestedPath`, which `Router::nest` sets: nothing to
//! configure, and not mounted means today's URLs exactly. It is the pattern the router was
//! nested at, so the prefix must be a fixed path (`/docket`, `/admin/queue`), not one with a
//! `{parameter}`. A proxy that strips a prefix before the request arrives is not a mount
//! axum can see: serve under the same path the clients use.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, NestedPath};
use axum::http::request::Parts;

/// The path the router is mounted at: empty at the root, `/docket` under
/// `Router::nest("/docket", …)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mount(String);

impl Mount {
    /// Mounted at `prefix` (a final `/` is dropped: `Mount::at("/")` is the root).
    pub(crate) fn at(prefix: &str) -> Mount {
        Mount(prefix.trim_end_matches('/').to_owned())
    }

    /// The prefix: empty at the root.
    pub(crate) fn prefix(&self) -> &str {
        &self.0
    }

    /// `path`, as the router's routes spell it (`/ops/jobs/…`, with its query if any), as
    /// a client must ask for it.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Mount {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Mount, Infallible> {
        Ok(parts
            .extensions
            .get::<NestedPath>()
            .map_or_else(Mount::default, |nested| Mount::at(nested.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_root_a_url_is_the_path_itself() {
        assert_eq!(Mount::default().url("/ops/login"), "/ops/login");
        assert_eq!(Mount::at("/").url("/ops"), "/ops");
    }

    #[test]
    fn under_a_prefix_every_url_starts_with_it() {
        assert_eq!(
            Mount::at("/docket").url("/ops?done=pause"),
            "/docket/ops?done=pause"
        );
        assert_eq!(Mount::at("/admin/queue/").url("/ops"), "/admin/queue/ops");
    }
}

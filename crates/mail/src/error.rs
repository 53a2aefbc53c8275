//! The mail crate's error type.

/// What can go wrong in a mail operation.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The caller's input is wrong (an address, a filter, a recipient file).
    #[error("{0}")]
    Invalid(String),
    /// No campaign has this id.
    #[error("no campaign has id {0}")]
    CampaignNotFound(uuid::Uuid),
    /// The recipients do not give every variable the campaign's template uses, as the
    /// catalog has it now: the template and each missing variable.
    #[error("{0}")]
    TemplateVariables(String),
    /// The campaign is in a state where this action means nothing (pausing a finished
    /// one, resuming a cancelled one): the reason.
    #[error("{0}")]
    CampaignState(String),
    /// A template failed to render.
    #[error("template: {0}")]
    Template(#[from] crate::template::RenderError),
    /// The job table refused (an invalid job, a batch rule).
    #[error(transparent)]
    Queue(#[from] docket_queue::Error),
    /// The database failed or could not be reached.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// The mail crate's result type.
pub type Result<T, E = MailError> = std::result::Result<T, E>;

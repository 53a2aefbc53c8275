//! The mail settings, with named defaults and a `validate` whose messages say what would go
//! wrong; [`MailConfig::from_env`] reads them from the `SMTP_*` and `MAIL_*` rows of the
//! settings table, as the binary does.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use docket_queue::rate_limit::Rate;
use docket_settings::{self as settings, Source};

use crate::token::{Signer, TokenSecret};

/// Seconds an SMTP exchange (connect, each command) may take by default.
pub const SMTP_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Connections the SMTP pool keeps by default.
pub const SMTP_POOL_SIZE_DEFAULT: u32 = 4;

/// The template catalog's default place.
pub const TEMPLATE_DIR_DEFAULT: &str = "./templates";

/// The sender when [`settings::MAIL_FROM`] is unset (stub mode only: SMTP mode requires one).
pub const FROM_DEFAULT: &str = "Docket <docket@localhost>";

/// Recipients per `mail.campaign_batch` job by default.
pub const CAMPAIGN_BATCH_SIZE_DEFAULT: usize = 100;

/// The retry ladder for temporary failures by default: `1m,5m,15m,1h,6h`.
pub fn retry_ladder_default() -> Vec<Duration> {
    [60, 300, 900, 3600, 21_600]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

/// The refusal of a URL whose user or password holds a character URLs reserve.
fn encode_password() -> MailConfigError {
    MailConfigError::new(format!(
        "{}: the user or password holds a `/`, `?`, `#` or `@`; \
         percent-encode them (`%2F`, `%3F`, `%23`, `%40`)",
        settings::SMTP_URL
    ))
}

/// How messages leave.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// Over SMTP, to this relay.
    Smtp(SmtpUrl),
    /// Rendered and recorded (`suppressed`, reason `stub`); nothing leaves.
    Stub,
}

/// [`settings::SMTP_URL`], lettre's URL form. Its password is a secret: `Display` and `Debug`
/// redact it.
#[derive(Clone, PartialEq)]
pub struct SmtpUrl(String);

impl SmtpUrl {
    /// Checks the form (`smtp://` or `smtps://`, a host).
    ///
    /// # Errors
    ///
    /// [`MailConfigError`] naming the variable, never echoing the password.
    pub fn parse(raw: &str) -> Result<SmtpUrl, MailConfigError> {
        let url = raw.trim();
        let rest = url
            .strip_prefix("smtp://")
            .or_else(|| url.strip_prefix("smtps://"))
            .ok_or_else(|| {
                MailConfigError::new(format!(
                    "{} must start with smtp:// (plain or STARTTLS) or smtps:// (TLS)",
                    settings::SMTP_URL
                ))
            })?;
        // The user and password end at the last `@`. A password with an unencoded `/`,
        // `?` or `#` would otherwise be read as the start of a path, query or fragment,
        // and the URL's parts (so an error message naming them) would carry it.
        if let Some((userinfo, _)) = rest.rsplit_once('@') {
            if userinfo.contains(['/', '?', '#']) {
                return Err(encode_password());
            }
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        if host.is_empty() || host.starts_with(':') {
            return Err(MailConfigError::new(format!(
                "{} names no host",
                settings::SMTP_URL
            )));
        }
        // url's messages name the fault, never the input.
        url::Url::parse(url).map_err(|err| {
            MailConfigError::new(format!("{} is not a valid URL: {err}", settings::SMTP_URL))
        })?;
        Ok(SmtpUrl(url.to_owned()))
    }

    /// The URL as given, password included: only for the transport.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `smtps://`: TLS from the first byte.
    pub(crate) fn implicit_tls(&self) -> bool {
        self.0.starts_with("smtps://")
    }

    /// The `tls=` query value (`required`, `opportunistic`), if any.
    pub(crate) fn tls_query(&self) -> Option<&str> {
        let query = self.0.split_once('?')?.1;
        query.split('&').find_map(|pair| pair.strip_prefix("tls="))
    }
}

impl fmt::Display for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return f.write_str("(an unparsable URL)");
        };
        // Everything up to the last `@` is the user and password, whatever it holds.
        match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split([':', '/', '?', '#']).next().unwrap_or("");
                write!(f, "{scheme}://{user}:***@{host}")
            }
            None => write!(f, "{scheme}://{rest}"),
        }
    }
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmtpUrl({self})")
    }
}

/// Which notifications Docket sends itself to the admin address.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Notifications {
    /// A campaign's last recipient became final (`campaign_finished`).
    pub campaign_finished: bool,
    /// Jobs were dead-lettered in the last minute (`dead_letters`).
    pub dead_letters: bool,
}

impl Notifications {
    /// [`settings::MAIL_NOTIFY`]: a comma-separated list of `campaign_finished`, `dead_letters`.
    ///
    /// # Errors
    ///
    /// [`MailConfigError`] naming an unknown entry.
    pub fn parse(list: &str) -> Result<Notifications, MailConfigError> {
        let mut notifications = Notifications::default();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item {
                "campaign_finished" => notifications.campaign_finished = true,
                "dead_letters" => notifications.dead_letters = true,
                other => {
                    return Err(MailConfigError::new(format!(
                    "{}: unknown notification {other:?} (known: campaign_finished, dead_letters)",
                    settings::MAIL_NOTIFY
                )))
                }
            }
        }
        Ok(notifications)
    }
}

/// Everything the mail jobs need to know.
#[derive(Clone, Debug)]
pub struct MailConfig {
    /// [`settings::SMTP_MODE`] / [`settings::SMTP_URL`]: SMTP when a URL is set, else stub.
    pub mode: Mode,
    /// [`settings::MAIL_FROM`]: the sender, `Name <address>`. Required in SMTP mode.
    pub from: Option<String>,
    /// [`settings::TEMPLATE_DIR`]: the catalog. Default [`TEMPLATE_DIR_DEFAULT`].
    pub template_dir: PathBuf,
    /// [`settings::SMTP_TIMEOUT`]: per SMTP exchange. Default [`SMTP_TIMEOUT_DEFAULT`].
    pub timeout: Duration,
    /// [`settings::SMTP_POOL_SIZE`]: pooled SMTP connections per process. Default
    /// [`SMTP_POOL_SIZE_DEFAULT`].
    pub pool_size: u32,
    /// [`settings::SMTP_CA_FILE`]: a PEM certificate to trust besides the public roots (a relay
    /// with a private or self-signed certificate).
    pub ca_file: Option<PathBuf>,
    /// [`settings::MAIL_RATE`]: messages through the relay over all processes together
    /// (`"10/s"`); `None`: no limit.
    pub rate: Option<Rate>,
    /// [`settings::MAIL_RETRY_LADDER`]: delays after each temporary failure; one more failure
    /// than it has steps dead-letters the delivery. Default [`retry_ladder_default`].
    pub retry_ladder: Vec<Duration>,
    /// [`settings::TRACE_RECIPIENTS`]: the recipients' addresses on the SMTP exchange's
    /// trace span. Default `false`: no address in a trace.
    pub trace_recipients: bool,
    /// [`settings::ADMIN_EMAIL`]: where `mail.admin` goes when its payload names nobody.
    pub admin_email: Option<String>,
    /// [`settings::MAIL_NOTIFY`]: what Docket tells the admin address about by itself.
    pub notify: Notifications,
    /// [`settings::PUBLIC_URL`]: where `docket serve` is reached from the internet; the base of
    /// every campaign email's unsubscribe link. Required in SMTP mode.
    pub public_url: Option<String>,
    /// [`settings::MAIL_UNSUBSCRIBE_MAILTO`]: an address that also takes unsubscribe requests
    /// (a second `List-Unsubscribe` entry); unset: the link only.
    pub unsubscribe_mailto: Option<String>,
    /// [`settings::MAIL_TOKEN_SECRET`]: signs the unsubscribe links. Required in SMTP mode.
    pub token_secret: Option<TokenSecret>,
    /// [`settings::MAIL_TOKEN_SECRET_PREVIOUS`]: the secret before a rotation, whose links still
    /// work until it is removed.
    pub token_secret_previous: Option<TokenSecret>,
    /// [`settings::MAIL_BOUNCE_DOMAIN`]: each delivery's envelope sender is
    /// `bounce+<token>@<this>` (VERP), so a bounce names its delivery; unset: the sender's
    /// address, and bounces cannot be matched.
    pub bounce_domain: Option<String>,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            mode: Mode::Stub,
            from: None,
            template_dir: TEMPLATE_DIR_DEFAULT.into(),
            timeout: SMTP_TIMEOUT_DEFAULT,
            pool_size: SMTP_POOL_SIZE_DEFAULT,
            ca_file: None,
            rate: None,
            retry_ladder: retry_ladder_default(),
            trace_recipients: false,
            admin_email: None,
            notify: Notifications::default(),
            public_url: None,
            unsubscribe_mailto: None,
            token_secret: None,
            token_secret_previous: None,
            bounce_domain: None,
        }
    }
}

impl MailConfig {
    /// The sender: [`settings::MAIL_FROM`], or [`FROM_DEFAULT`].
    ///
    /// # Errors
    ///
    /// [`MailConfigError`] when it is not a mailbox.
    pub fn sender(&self) -> Result<lettre::message::Mailbox, MailConfigError> {
        self.from
            .as_deref()
            .unwrap_or(FROM_DEFAULT)
            .parse()
            .map_err(|err| MailConfigError::new(format!("{}: {err}", settings::MAIL_FROM)))
    }

    /// Checks the settings together.
    ///
    /// # Errors
    ///
    /// [`MailConfigError`] saying what would go wrong.
    pub fn validate(&self) -> Result<(), MailConfigError> {
        if matches!(self.mode, Mode::Smtp(_)) && self.from.is_none() {
            return Err(MailConfigError::new(format!(
                "{} is required in smtp mode: every message needs a sender",
                settings::MAIL_FROM
            )));
        }
        if let Some(from) = &self.from {
            from.parse::<lettre::message::Mailbox>().map_err(|err| {
                MailConfigError::new(format!(
                    "{} {from:?} is not a mailbox (`Name <address>` or an address): {err}",
                    settings::MAIL_FROM
                ))
            })?;
        }
        if let Some(admin) = &self.admin_email {
            admin.parse::<lettre::message::Mailbox>().map_err(|err| {
                MailConfigError::new(format!(
                    "{} {admin:?} is not an address: {err}",
                    settings::ADMIN_EMAIL
                ))
            })?;
        }
        if (self.notify.campaign_finished || self.notify.dead_letters) && self.admin_email.is_none()
        {
            return Err(MailConfigError::new(format!(
                "{} needs {}: there is nobody to notify",
                settings::MAIL_NOTIFY,
                settings::ADMIN_EMAIL
            )));
        }
        if self.retry_ladder.is_empty() {
            return Err(MailConfigError::new(format!(
                "{} needs at least one delay",
                settings::MAIL_RETRY_LADDER
            )));
        }
        if self.pool_size == 0 {
            return Err(MailConfigError::new(format!(
                "{} must be at least 1: no connection, no mail",
                settings::SMTP_POOL_SIZE
            )));
        }
        if self.timeout.is_zero() {
            return Err(MailConfigError::new(format!(
                "{} must be above zero: every exchange would time out",
                settings::SMTP_TIMEOUT
            )));
        }
        self.validate_links()
    }

    /// The unsubscribe links: required in SMTP mode (mailbox providers filter bulk mail
    /// without one-click unsubscribe), and well formed whenever set.
    fn validate_links(&self) -> Result<(), MailConfigError> {
        if matches!(self.mode, Mode::Smtp(_)) {
            if self.public_url.is_none() {
                return Err(MailConfigError::new(format!(
                    "{} is required in smtp mode: every campaign email carries a one-click \
                     unsubscribe link (RFC 8058) to `docket serve` at that address, e.g. \
                     https://docket.example.com",
                    settings::PUBLIC_URL
                )));
            }
            if self.token_secret.is_none() {
                return Err(MailConfigError::new(format!(
                    "{} is required in smtp mode: it signs every campaign email's unsubscribe \
                     link (at least 32 characters)",
                    settings::MAIL_TOKEN_SECRET
                )));
            }
        }
        if let Some(base) = &self.public_url {
            let url = url::Url::parse(base).map_err(|err| {
                MailConfigError::new(format!(
                    "{} {base:?} is not a URL: {err}",
                    settings::PUBLIC_URL
                ))
            })?;
            if !matches!(url.scheme(), "https" | "http")
                || url.query().is_some()
                || url.fragment().is_some()
            {
                return Err(MailConfigError::new(format!(
                    "{} {base:?} must be an http(s) URL without a query or fragment (mailbox \
                     providers expect https)",
                    settings::PUBLIC_URL
                )));
            }
        }
        if let Some(domain) = &self.bounce_domain {
            format!("bounce@{domain}")
                .parse::<lettre::Address>()
                .map_err(|_| {
                    MailConfigError::new(format!(
                        "{} {domain:?} is not a mail domain",
                        settings::MAIL_BOUNCE_DOMAIN
                    ))
                })?;
            if self.token_secret.is_none() {
                return Err(MailConfigError::new(format!(
                    "{} needs {}: it signs the bounce addresses",
                    settings::MAIL_BOUNCE_DOMAIN,
                    settings::MAIL_TOKEN_SECRET
                )));
            }
        }
        if let Some(mailto) = &self.unsubscribe_mailto {
            mailto.parse::<lettre::Address>().map_err(|err| {
                MailConfigError::new(format!(
                    "{} {mailto:?} is not an address: {err}",
                    settings::MAIL_UNSUBSCRIBE_MAILTO
                ))
            })?;
        }
        Ok(())
    }

    /// The signer of the unsubscribe links, when a secret is set.
    pub fn signer(&self) -> Option<Signer> {
        let current = self.token_secret.clone()?;
        Some(Signer::new(current, self.token_secret_previous.clone()))
    }
}

impl MailConfig {
    /// The mail settings from the environment over `docket.toml`, as the binary reads
    /// them; unset ones keep their defaults. The mode is `smtp` when a URL is set, else
    /// `stub`.
    ///
    /// # Errors
    ///
    /// A setting that cannot be read, or settings [`MailConfig::validate`] refuses.
    pub fn from_env() -> Result<MailConfig, MailConfigError> {
        MailConfig::from_source(&Source::load()?)
    }

    /// The mail settings from `source`; unset ones keep their defaults.
    ///
    /// # Errors
    ///
    /// As [`MailConfig::from_env`].
    pub fn from_source(source: &Source) -> Result<MailConfig, MailConfigError> {
        let mut config = MailConfig::default();
        let url = source
            .text(&settings::SMTP_URL)
            .map(|url| SmtpUrl::parse(&url))
            .transpose()?;
        config.mode = match (source.text(&settings::SMTP_MODE).as_deref(), url) {
            (Some("stub"), _) => Mode::Stub,
            (Some("smtp") | None, Some(url)) => Mode::Smtp(url),
            (Some("smtp"), None) => {
                return Err(MailConfigError::new(format!(
                    "{}=smtp needs {}",
                    settings::SMTP_MODE,
                    settings::SMTP_URL
                )))
            }
            (None, None) => Mode::Stub,
            (Some(other), _) => {
                return Err(MailConfigError::new(format!(
                    "{} must be `smtp` or `stub`, not {other:?}",
                    settings::SMTP_MODE
                )))
            }
        };
        config.from = source.text(&settings::MAIL_FROM);
        if let Some(dir) = source.text(&settings::TEMPLATE_DIR) {
            config.template_dir = dir.into();
        }
        if let Some(timeout) = source.seconds(&settings::SMTP_TIMEOUT)? {
            config.timeout = timeout;
        }
        if let Some(size) = source.parse(&settings::SMTP_POOL_SIZE)? {
            config.pool_size = size;
        }
        config.ca_file = source.text(&settings::SMTP_CA_FILE).map(Into::into);
        config.rate = source
            .text(&settings::MAIL_RATE)
            .map(|rate| rate.parse())
            .transpose()
            .map_err(|err| MailConfigError::new(format!("{}: {err}", settings::MAIL_RATE)))?;
        if let Some(ladder) = source.text(&settings::MAIL_RETRY_LADDER) {
            config.retry_ladder = parse_ladder(&ladder)?;
        }
        if let Some(trace) = source.parse(&settings::TRACE_RECIPIENTS)? {
            config.trace_recipients = trace;
        }
        config.admin_email = source.text(&settings::ADMIN_EMAIL);
        if let Some(notify) = source.text(&settings::MAIL_NOTIFY) {
            config.notify = Notifications::parse(&notify)?;
        }
        config.public_url = source.text(&settings::PUBLIC_URL);
        config.unsubscribe_mailto = source.text(&settings::MAIL_UNSUBSCRIBE_MAILTO);
        config.bounce_domain = source.text(&settings::MAIL_BOUNCE_DOMAIN);
        for (setting, slot) in [
            (&settings::MAIL_TOKEN_SECRET, &mut config.token_secret),
            (
                &settings::MAIL_TOKEN_SECRET_PREVIOUS,
                &mut config.token_secret_previous,
            ),
        ] {
            *slot = source
                .text(setting)
                .map(|secret| {
                    crate::token::TokenSecret::new(&secret)
                        .map_err(|err| MailConfigError::new(format!("{setting} {err}")))
                })
                .transpose()?;
        }
        config.validate()?;
        Ok(config)
    }
}

/// `1m,5m,15m,1h,6h` (also `30s`, `2`: seconds).
///
/// # Errors
///
/// [`MailConfigError`] naming the step that does not read.
pub fn parse_ladder(list: &str) -> Result<Vec<Duration>, MailConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|step| !step.is_empty())
        .map(|step| {
            let (number, unit) = step.split_at(
                step.find(|c: char| c.is_ascii_alphabetic())
                    .unwrap_or(step.len()),
            );
            let seconds = match unit {
                "" | "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                _ => 0,
            };
            match number.trim().parse::<u64>() {
                Ok(n) if seconds > 0 => Ok(Duration::from_secs(n * seconds)),
                _ => Err(MailConfigError::new(format!(
                    "{}: {step:?} is not a delay (write e.g. 30s, 5m, 1h)",
                    settings::MAIL_RETRY_LADDER
                ))),
            }
        })
        .collect()
}

/// A setting that would not work, with what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MailConfigError(String);

impl MailConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        MailConfigError(message.into())
    }
}

impl From<settings::Error> for MailConfigError {
    fn from(err: settings::Error) -> Self {
        MailConfigError(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smtp_password_never_prints() {
        let url = SmtpUrl::parse("smtp://mailer:s3cret@relay.internal:587?tls=required").unwrap();
        for shown in [url.to_string(), format!("{url:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("relay.internal:587"), "{shown}");
        }
        assert_eq!(url.tls_query(), Some("required"));
    }

    /// A password with a reserved character, unencoded, is refused without being echoed,
    /// and an encoded one is accepted and never printed.
    #[test]
    fn no_error_prints_the_password_whatever_it_holds() {
        for bad in [
            "smtp://mailer:Zx9/Qw_LEAKPW@127.0.0.1:2525",
            "smtp://mailer:Zx9?Qw_LEAKPW@127.0.0.1:2525",
            "smtp://mailer:Zx9#Qw_LEAKPW@127.0.0.1:2525",
            "smtp://mailer:1234/LEAKPW@relay:25?tls=required",
            "smtp://mailer:LEAKPW@relay:25x",
            "smtp://mailer:LEAKPW@[::1",
        ] {
            let err = SmtpUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains("DOCKET_SMTP_URL"), "{bad}: {err}");
            assert!(!err.contains("LEAKPW"), "{err}");
        }
        let url = SmtpUrl::parse("smtp://mailer:Zx9%2FQw_LEAKPW@127.0.0.1:2525").unwrap();
        for shown in [url.to_string(), format!("{url:?}")] {
            assert!(!shown.contains("LEAKPW"), "{shown}");
            assert!(shown.contains("mailer:***@127.0.0.1:2525"), "{shown}");
        }
        let url = SmtpUrl("smtp://mailer:Zx9/Qw_LEAKPW@127.0.0.1:2525".into());
        assert_eq!(url.to_string(), "smtp://mailer:***@127.0.0.1:2525");
    }

    #[test]
    fn urls_without_a_scheme_or_host_are_refused_without_echoing_them() {
        for bad in ["relay:25", "http://relay", "smtp://", "smtp://user:pw@:25"] {
            let err = SmtpUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains("DOCKET_SMTP_URL"), "{bad}: {err}");
            assert!(!err.contains("pw"), "{err}");
        }
    }

    #[test]
    fn ladders_read_seconds_minutes_and_hours() {
        assert_eq!(
            parse_ladder("1m, 5m,15m,1h,6h").unwrap(),
            retry_ladder_default()
        );
        assert_eq!(
            parse_ladder("1,2s").unwrap(),
            [Duration::from_secs(1), Duration::from_secs(2)]
        );
        assert!(parse_ladder("5 minutes").is_err());
    }

    #[test]
    fn smtp_mode_needs_a_sender_and_notifications_need_an_admin() {
        let mut config = MailConfig {
            mode: Mode::Smtp(SmtpUrl::parse("smtp://localhost:25").unwrap()),
            ..MailConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("DOCKET_MAIL_FROM"));
        config.from = Some("Docket <docket@example.com>".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("DOCKET_PUBLIC_URL is required"), "{err}");
        config.public_url = Some("https://docket.example.com/".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("DOCKET_MAIL_TOKEN_SECRET is required"),
            "{err}"
        );
        config.token_secret = Some(TokenSecret::new(&"s".repeat(32)).unwrap());
        config.validate().unwrap();
        config.public_url = Some("ftp://docket.example.com/?a=b".into());
        assert!(config.validate().is_err());
        config.public_url = Some("https://docket.example.com/".into());
        config.notify = Notifications::parse("dead_letters").unwrap();
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("DOCKET_ADMIN_EMAIL"));
        assert!(Notifications::parse("everything").is_err());
    }
}

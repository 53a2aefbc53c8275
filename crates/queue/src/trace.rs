//! Trace context: the W3C `traceparent` / `tracestate` a job is enqueued in, stored with the
//! job (`docket.jobs.trace_context`) so that its attempts join the trace of whatever caused
//! it, and the helpers that move it between `tracing` spans and the table.
//!
//! The library only speaks `tracing` and the OpenTelemetry API: a span's context is read
//! and set through `tracing-opentelemetry`, so it is there only where the application
//! installed an OpenTelemetry layer (the `docket` binary does when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set). Without one, [`TraceContext::of_span`] is `None`
//! and nothing is stored: the spans below cost what a disabled span costs.
//!
//! Every span Docket makes for tracing has the target [`TARGET`], so that a subscriber
//! without an OpenTelemetry layer can switch them all off (the binary does).

use std::str::FromStr as _;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The `tracing` target of Docket's tracing spans (enqueue, attempt, SMTP exchange, cron
/// tick).
pub const TARGET: &str = "docket::trace";

/// The longest `tracestate` kept, in bytes (the W3C limit is 32 entries; 512 bytes is what
/// the recommendation asks a platform to propagate at least). Longer ones are dropped.
pub const TRACESTATE_MAX: usize = 512;

/// One W3C trace context: a `traceparent` (version 00) and its `tracestate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TraceContext {
    /// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
    pub traceparent: String,
    /// The vendors' entries that travel with it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// What is stored with a job: the context it was enqueued in (its first attempt's parent,
/// its retries' link) and contexts every attempt links to (a batch callback's batch).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobTrace {
    /// The enqueue's context.
    #[serde(flatten)]
    pub parent: Option<TraceContext>,
    /// Contexts linked from every attempt, without a parent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<TraceContext>,
}

impl TraceContext {
    /// A `traceparent` header (and its `tracestate`) if it is valid W3C trace context;
    /// `None` for a malformed one, which is ignored, as the W3C recommendation asks. A
    /// version above 00 is read as 00 (its first four fields). A `tracestate` longer than
    /// [`TRACESTATE_MAX`] or with characters outside printable ASCII is dropped.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
        let text = traceparent.trim();
        let bytes = text.as_bytes();
        let hex = |range: std::ops::Range<usize>| {
            bytes
                .get(range)
                .is_some_and(|part| part.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        };
        let shaped = bytes.len() >= 55
            && hex(0..2)
            && hex(3..35)
            && hex(36..52)
            && hex(53..55)
            && [2, 35, 52].iter().all(|&at| bytes[at] == b'-');
        if !shaped {
            return None;
        }
        let version = &text[..2];
        if version == "ff" || (version == "00" && bytes.len() != 55) {
            return None;
        }
        if version != "00" && bytes.len() > 55 && bytes[55] != b'-' {
            return None;
        }
        if text[3..35].bytes().all(|b| b == b'0') || text[36..52].bytes().all(|b| b == b'0') {
            return None;
        }
        let tracestate = tracestate
            .map(str::trim)
            .filter(|state| {
                !state.is_empty()
                    && state.len() <= TRACESTATE_MAX
                    && state.bytes().all(|b| (b' '..=b'~').contains(&b))
            })
            .map(str::to_owned);
        Some(TraceContext {
            traceparent: format!("00-{}", &text[3..55]),
            tracestate,
        })
    }

    /// The context of `span` as OpenTelemetry sees it; `None` when no OpenTelemetry layer
    /// is installed (or the span is disabled, or not sampled into a valid context).
    pub fn of_span(span: &tracing::Span) -> Option<TraceContext> {
        if span.is_disabled() {
            return None;
        }
        let context = span.context();
        TraceContext::of_span_context(context.span().span_context())
    }

    /// The context of the caller's current span ([`TraceContext::of_span`]).
    pub fn current() -> Option<TraceContext> {
        TraceContext::of_span(&tracing::Span::current())
    }

    fn of_span_context(context: &SpanContext) -> Option<TraceContext> {
        if !context.is_valid() {
            return None;
        }
        let state = context.trace_state().header();
        Some(TraceContext {
            traceparent: format!(
                "00-{}-{}-{:02x}",
                context.trace_id(),
                context.span_id(),
                context.trace_flags().to_u8()
            ),
            tracestate: (!state.is_empty()).then_some(state),
        })
    }

    /// The OpenTelemetry span context (remote) it names.
    pub fn span_context(&self) -> Option<SpanContext> {
        let text = &self.traceparent;
        let trace_id = TraceId::from_hex(text.get(3..35)?).ok()?;
        let span_id = SpanId::from_hex(text.get(36..52)?).ok()?;
        let flags = u8::from_str_radix(text.get(53..55)?, 16).ok()?;
        let state = self
            .tracestate
            .as_deref()
            .and_then(|state| TraceState::from_str(state).ok())
            .unwrap_or_default();
        let context = SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, state);
        context.is_valid().then_some(context)
    }

    /// The trace id, 32 hex digits.
    pub fn trace_id(&self) -> &str {
        self.traceparent.get(3..35).unwrap_or_default()
    }

    /// The span id, 16 hex digits.
    pub fn span_id(&self) -> &str {
        self.traceparent.get(36..52).unwrap_or_default()
    }
}

/// Makes `parent` the parent of `span` (which must not have been entered yet). Does nothing
/// without an OpenTelemetry layer.
pub fn set_parent(span: &tracing::Span, parent: &TraceContext) {
    if span.is_disabled() {
        return;
    }
    if let Some(context) = parent.span_context() {
        // Fails only without a layer or once the span started: nothing to do either way.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(context));
    }
}

/// Links `span` to `linked`. Does nothing without an OpenTelemetry layer.
pub fn add_link(span: &tracing::Span, linked: &TraceContext) {
    if span.is_disabled() {
        return;
    }
    if let Some(context) = linked.span_context() {
        span.add_link(context);
    }
}

/// Ties an attempt's span to the job's stored context, as the OpenTelemetry messaging
/// conventions describe: the first attempt is a child of the enqueue; a retry starts a
/// trace of its own, linked to the enqueue (a trace per attempt keeps a job retried for
/// days from making one endless trace). Links stored with the job (a batch callback's
/// batch) are added to every attempt.
pub fn attach_attempt(span: &tracing::Span, trace: &JobTrace, attempt: i32) {
    if span.is_disabled() {
        return;
    }
    if let Some(parent) = &trace.parent {
        if attempt <= 1 {
            set_parent(span, parent);
        } else {
            // A root: an empty parent context keeps the caller's current span out.
            let _ = span.set_parent(opentelemetry::Context::new());
            add_link(span, parent);
        }
    } else {
        let _ = span.set_parent(opentelemetry::Context::new());
    }
    for linked in &trace.links {
        add_link(span, linked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_kept_and_a_malformed_one_ignored() {
        let parsed = TraceContext::parse(VALID, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(parsed.traceparent, VALID);
        assert_eq!(parsed.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id(), "00f067aa0ba902b7");
        assert!(parsed.span_context().is_some());
        // A future version is read as 00; extra fields are allowed there only.
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what";
        assert_eq!(
            TraceContext::parse(future, None).unwrap().traceparent,
            VALID
        );
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad}");
        }
        let long = "a=".to_owned() + &"b".repeat(TRACESTATE_MAX);
        assert_eq!(
            TraceContext::parse(VALID, Some(&long)).unwrap().tracestate,
            None
        );
    }

    #[test]
    fn the_stored_object_reads_as_parent_and_links() {
        let stored: JobTrace = serde_json::from_value(serde_json::json!({
            "traceparent": VALID, "tracestate": "a=b"
        }))
        .unwrap();
        assert_eq!(stored.parent.unwrap().tracestate.as_deref(), Some("a=b"));
        let stored: JobTrace =
            serde_json::from_value(serde_json::json!({"links": [{"traceparent": VALID}]})).unwrap();
        assert_eq!((stored.parent, stored.links.len()), (None, 1));
    }

    #[test]
    fn without_a_layer_there_is_no_context() {
        let span = tracing::info_span!(target: TARGET, "test");
        assert_eq!(TraceContext::of_span(&span), None);
    }
}

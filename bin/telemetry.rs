//! Logging and tracing: tracing-subscriber, JSON in production, pretty on a terminal, level
//! by `RUST_LOG` (default `info`; `warn` for one-shot commands). Logs go to stderr (or a
//! file, for the demo); command output to stdout.
//!
//! With an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`, see
//! [`crate::config::trace_export_wanted`]), Docket's spans (target
//! [`docket_queue::trace::TARGET`]) go out over OTLP/HTTP (protobuf) through the
//! OpenTelemetry SDK's batch processor on the tokio runtime, and every JSON log line written
//! inside one carries `otel_trace_id` and `otel_span_id`. Without one, no OpenTelemetry layer
//! is installed and those spans are switched off at their call sites: they cost what a
//! disabled `tracing` span costs.

use std::fmt::{self, Write as _};
use std::io::IsTerminal as _;

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// What must outlive the program's work: the span exporter, flushed by [`Telemetry::shutdown`].
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered (bounded by the SDK's export timeout). Call it off the
    /// async runtime's threads, with the runtime still alive.
    pub(crate) fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(err) = provider.shutdown() {
                eprintln!("warning: traces not all exported at exit: {err}");
            }
        }
    }
}

/// `quiet`: a one-shot command whose output is its answer (a table, an id): it logs
/// warnings and errors only, so that no info line lands among what it prints (RUST_LOG
/// can still ask for more). Services (`serve`, `worker`, the demo) and the commands timers
/// run (`backup`, `restore-check`) log from info up. `export`: send spans over OTLP (call
/// it inside the tokio runtime then: the batch processor runs on it).
pub(crate) fn init(
    format: LogFormat,
    file: Option<std::fs::File>,
    quiet: bool,
    export: bool,
) -> Telemetry {
    // PostgreSQL's notices ("relation ... already exists, skipping" at each migrate) are
    // noise at info; RUST_LOG can still ask for them.
    let default = if quiet {
        "warn"
    } else {
        "info,sqlx::postgres::notice=warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let provider = if export {
        match tracer_provider() {
            Ok(provider) => Some(provider),
            Err(err) => {
                eprintln!("warning: traces not exported: {err}");
                None
            }
        }
    } else {
        None
    };
    // Docket's tracing spans are for OpenTelemetry alone: on whenever it is (whatever the
    // log level), off at their call sites when it is not.
    let directive = if provider.is_some() {
        "docket::trace=info"
    } else {
        "docket::trace=off"
    };
    let filter = match directive.parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let otel = provider.as_ref().map(|provider| {
        // Lean spans: the attributes Docket names, not the layer's timings, source
        // location, thread and target on each.
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("docket"))
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
    });
    // A file is read later, not on a terminal: JSON lines.
    let to_file = file.is_some();
    let writer = match file {
        Some(file) => BoxMakeWriter::new(std::sync::Mutex::new(file)),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let format = if to_file { LogFormat::Json } else { format };
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .event_format(WithTraceIds(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            ))
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .boxed(),
        // Colours only for a terminal: redirected to a file, no escape codes.
        // Field values are written with control characters escaped, as the JSON format
        // does: a job kind or an error text cannot start a line or colour the terminal.
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .compact()
            .with_ansi(std::io::stderr().is_terminal())
            .fmt_fields(
                tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
                    let mut out = Escaped(writer);
                    if field.name() == "message" {
                        write!(out, "{value:?}")
                    } else {
                        write!(out, "{field}={value:?}")
                    }
                })
                .delimited(" "),
            )
            .boxed(),
    };
    // The log layer never prints spans (their ids come from the OpenTelemetry context):
    // Docket's tracing spans skip it, so that it does not format their fields for nothing.
    let logs = logs.with_filter(tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.is_span() && meta.target() == docket_queue::trace::TARGET)
    }));
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(logs)
        .try_init();
    if let Err(err) = result {
        eprintln!("warning: logging not set up: {err}");
    }
    Telemetry { provider }
}

/// The OTLP/HTTP exporter behind a batch processor on the tokio runtime. The SDK reads the
/// standard variables: the endpoint, headers, timeout, the batch sizes (`OTEL_BSP_*`), the
/// sampler (`OTEL_TRACES_SAMPLER`), `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`; the
/// service is `docket` when neither names it.
fn tracer_provider() -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|err| err.to_string())?;
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let mut resource = opentelemetry_sdk::Resource::builder().build();
    let named = resource
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if !named {
        resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("docket")
            .build();
    }
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

/// The JSON format with `otel_trace_id` and `otel_span_id` first in every line written
/// inside a span that has an OpenTelemetry context (the layer makes an entered span's
/// context current on its thread). Lines outside one are written as they are.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let ids = opentelemetry::Context::map_current(|cx| {
            let span = cx.span();
            let context = span.span_context();
            context
                .is_valid()
                .then(|| (context.trace_id(), context.span_id()))
        });
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"otel_trace_id\":\"{trace_id}\",\"otel_span_id\":\"{span_id}\",{rest}"
            ),
            None => writer.write_str(&line),
        }
    }
}

/// Writes through to `W`, each control character (a newline, an escape) as its Rust escape
/// (`\n`, `\u{1b}`).
struct Escaped<W>(W);

impl<W: fmt::Write> fmt::Write for Escaped<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for part in text.split_inclusive(char::is_control) {
            match part.char_indices().last() {
                Some((at, c)) if c.is_control() => {
                    self.0.write_str(&part[..at])?;
                    write!(self.0, "{}", c.escape_default())?;
                }
                _ => self.0.write_str(part)?,
            }
        }
        Ok(())
    }
}

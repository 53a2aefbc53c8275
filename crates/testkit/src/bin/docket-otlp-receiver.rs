//! An OTLP/HTTP trace receiver for tests and benchmarks: listens on `127.0.0.1` (a free
//! port, or `--port N`), takes `POST /v1/traces` in protobuf, decodes each request with the
//! official protocol definitions (`opentelemetry-proto`'s generated types) and writes each
//! span as one JSON line on stdout: `trace_id`, `span_id`, `parent_span_id`, `name`, `kind`,
//! `service`, `attributes`, `links` (`trace_id`, `span_id`), `status` (`code`, `message`).
//! The first line is `{"listening": "127.0.0.1:PORT"}`. `--count` writes a running count
//! instead (`{"spans": N}` after each request), for benchmarks.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message as _;
use serde_json::{json, Map, Value};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count_only = args.iter().any(|a| a == "--count");
    let port = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|at| args.get(at + 1))
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the receiver's port");
    let out = Arc::new(Mutex::new(std::io::stdout()));
    {
        let mut out = out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let addr = listener.local_addr().expect("the receiver's address");
        let _ = writeln!(out, "{}", json!({"listening": addr.to_string()}));
        let _ = out.flush();
    }
    let total = Arc::new(AtomicU64::new(0));
    for stream in listener.incoming().flatten() {
        let (out, total) = (out.clone(), total.clone());
        std::thread::spawn(move || serve(stream, &out, &total, count_only));
    }
}

/// One connection: requests until the client closes it (keep-alive).
fn serve(stream: TcpStream, out: &Mutex<std::io::Stdout>, total: &AtomicU64, count_only: bool) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = if request_line.starts_with("POST /v1/traces") {
            match ExportTraceServiceRequest::decode(body.as_slice()) {
                Ok(request) => {
                    let spans = spans_of(&request);
                    let count =
                        total.fetch_add(spans.len() as u64, Ordering::Relaxed) + spans.len() as u64;
                    let mut out = out
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if count_only {
                        let _ = writeln!(out, "{}", json!({ "spans": count }));
                    } else {
                        for span in spans {
                            let _ = writeln!(out, "{span}");
                        }
                    }
                    let _ = out.flush();
                    "200 OK"
                }
                Err(_) => "400 Bad Request",
            }
        } else {
            "404 Not Found"
        };
        // An empty body is an empty ExportTraceServiceResponse: everything accepted.
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
        );
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn spans_of(request: &ExportTraceServiceRequest) -> Vec<Value> {
    let mut spans = Vec::new();
    for resource in &request.resource_spans {
        let service = resource
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .and_then(|attrs| attrs.get("service.name").cloned())
            .unwrap_or(Value::Null);
        for scope in &resource.scope_spans {
            for span in &scope.spans {
                let links: Vec<Value> = span
                    .links
                    .iter()
                    .map(|link| {
                        json!({
                            "trace_id": hex(&link.trace_id),
                            "span_id": hex(&link.span_id),
                            "attributes": attributes(&link.attributes),
                        })
                    })
                    .collect();
                let status = span.status.as_ref().map_or(
                    json!({"code": 0, "message": ""}),
                    |s| json!({"code": s.code, "message": s.message}),
                );
                spans.push(json!({
                    "trace_id": hex(&span.trace_id),
                    "span_id": hex(&span.span_id),
                    "parent_span_id": hex(&span.parent_span_id),
                    "name": span.name,
                    "kind": span.kind,
                    "service": service,
                    "attributes": attributes(&span.attributes),
                    "links": links,
                    "status": status,
                }));
            }
        }
    }
    spans
}

fn attributes(list: &[KeyValue]) -> Map<String, Value> {
    list.iter()
        .map(|kv| (kv.key.clone(), value(kv.value.as_ref())))
        .collect()
}

fn value(any: Option<&AnyValue>) -> Value {
    match any.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|v| value(Some(v))).collect())
        }
        Some(any_value::Value::KvlistValue(list)) => Value::Object(attributes(&list.values)),
        Some(any_value::Value::BytesValue(b)) => json!(hex(b)),
        _ => Value::Null,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

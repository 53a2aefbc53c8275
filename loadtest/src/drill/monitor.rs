//! The drill plays the monitor: once a second it reads the bearer health document (status,
//! depth by state, oldest ready age, dead letters) and times the public route, as an
//! uptime checker and a dashboard would.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One reading.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Sample {
    /// Seconds since the drill started.
    pub(crate) at_s: f64,
    /// `ok`, `degraded`, `down`, or `unreachable`.
    pub(crate) status: String,
    /// The snapshot's figures; `None` when the document had none (the database down).
    pub(crate) pending: Option<i64>,
    pub(crate) retrying: Option<i64>,
    pub(crate) processing: Option<i64>,
    pub(crate) dead_letter: Option<i64>,
    pub(crate) oldest_ready_age_s: Option<f64>,
    /// Latency of the public `GET /api/health`, in milliseconds.
    pub(crate) public_ms: Option<f64>,
}

impl Sample {
    /// Jobs not finished yet; `None` when the document did not say.
    pub(crate) fn live(&self) -> Option<i64> {
        Some(self.pending? + self.retrying? + self.processing?)
    }
}

/// One HTTP/1.1 GET over a fresh loopback connection: the status and the body.
pub(crate) async fn get(port: u16, path: &str, bearer: Option<&str>) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let auth = bearer.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
        let head =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\r\n");
        stream.write_all(head.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let response = String::from_utf8_lossy(&response).into_owned();
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// Takes one reading.
pub(crate) async fn sample(port: u16, secret: &str, at_s: f64) -> Sample {
    let started = Instant::now();
    let public = get(port, "/api/health", None).await;
    let public_ms = public.map(|_| started.elapsed().as_secs_f64() * 1000.0);
    let document = get(port, "/api/health", Some(secret))
        .await
        .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok());
    read(document.as_ref(), at_s, public_ms)
}

/// A reading from the bearer health document (`None`: no answer).
fn read(document: Option<&Value>, at_s: f64, public_ms: Option<f64>) -> Sample {
    let total = document.map(|doc| &doc["queue"]).filter(|q| q.is_object());
    let figure = |name: &str| total.and_then(|t| t[name].as_i64());
    Sample {
        at_s,
        status: document
            .map_or("unreachable", |doc| {
                doc["status"].as_str().unwrap_or("unknown")
            })
            .to_owned(),
        pending: figure("pending"),
        retrying: figure("retrying"),
        processing: figure("processing"),
        dead_letter: figure("dead_letter"),
        oldest_ready_age_s: total.and_then(|t| t["oldest_ready_age_seconds"].as_f64()),
        public_ms,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_document_without_figures_says_nothing_about_the_backlog() {
        let down = json!({"status": "down", "checks": {"database": "down"}, "queue": null});
        let sample = read(Some(&down), 1.0, None);
        assert_eq!(sample.status, "down");
        assert_eq!(sample.live(), None, "not zero: unknown");
        let ok = json!({"status": "ok", "queue": {"pending": 2, "retrying": 1, "processing": 3,
                        "dead_letter": 4, "oldest_ready_age_seconds": 0.5}});
        let sample = read(Some(&ok), 2.0, Some(1.0));
        assert_eq!((sample.live(), sample.dead_letter), (Some(6), Some(4)));
        assert_eq!(read(None, 3.0, None).status, "unreachable");
    }
}

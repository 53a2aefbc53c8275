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
    pub(crate) pending: i64,
    pub(crate) retrying: i64,
    pub(crate) processing: i64,
    pub(crate) dead_letter: i64,
    pub(crate) oldest_ready_age_s: Option<f64>,
    /// Latency of the public `GET /api/health`, in milliseconds.
    pub(crate) public_ms: Option<f64>,
}

impl Sample {
    /// Jobs not finished yet.
    pub(crate) fn live(&self) -> i64 {
        self.pending + self.retrying + self.processing
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
    let Some(doc) = document else {
        return Sample {
            at_s,
            status: "unreachable".into(),
            pending: 0,
            retrying: 0,
            processing: 0,
            dead_letter: 0,
            oldest_ready_age_s: None,
            public_ms,
        };
    };
    let total = &doc["queue"];
    let figure = |name: &str| total[name].as_i64().unwrap_or(0);
    Sample {
        at_s,
        status: doc["status"].as_str().unwrap_or("unknown").to_owned(),
        pending: figure("pending"),
        retrying: figure("retrying"),
        processing: figure("processing"),
        dead_letter: figure("dead_letter"),
        oldest_ready_age_s: total["oldest_ready_age_seconds"].as_f64(),
        public_ms,
    }
}

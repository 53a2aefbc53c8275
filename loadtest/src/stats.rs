//! Percentiles of timed samples.

use std::time::Duration;

/// p50, p95 and p99 of the samples, as a printable line.
pub(crate) fn percentiles(samples: &mut [Duration]) -> String {
    samples.sort();
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(index).copied().unwrap_or_default()
    };
    format!(
        "p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms",
        ms(at(0.50)),
        ms(at(0.95)),
        ms(at(0.99))
    )
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

//! What a run prints: human-readable lines, then exactly one JSON object on
//! the last line (no prefix), for scripts to take with `tail -n 1`.

use super::Common;
use super::driver::Counters;
use super::histogram::Histogram;
use serde_json::{Map, Value, json};
use std::io::{self, Write};

/// CPU use above this share of the bench's core earns a warning.
const BUSY_PERCENT: f64 = 90.0;

#[derive(Debug)]
pub struct Report {
    pub lines: Vec<String>,
    pub json: Map<String, Value>,
}

impl Report {
    pub fn new(scenario: &str, common: &Common) -> Report {
        let mut json = Map::new();
        json.insert("scenario".into(), scenario.into());
        json.insert("url".into(), common.target.url().into());
        Report {
            lines: Vec::new(),
            json,
        }
    }

    pub fn line(&mut self, line: String) {
        self.lines.push(line);
    }

    /// Adds the fields of `value` (an object) to the JSON line.
    pub fn json(&mut self, value: Value) {
        if let Value::Object(fields) = value {
            self.json.extend(fields);
        }
    }

    pub fn latency_line(&mut self, what: &str, h: &Histogram) {
        if h.count() == 0 {
            return self.line(format!("  {what} latency: no samples"));
        }
        self.line(format!(
            "  {what} latency: p50 {} p99 {} p99.9 {} max {} (mean {}, {} samples)",
            duration(h.quantile(0.5)),
            duration(h.quantile(0.99)),
            duration(h.quantile(0.999)),
            duration(h.max()),
            duration(h.mean() as u64),
            h.count()
        ));
    }

    pub fn cpu_lines(&mut self, bench: Option<f64>, server: Option<f64>) {
        let show = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.0}%"));
        self.line(format!(
            "  cpu: bench {} of one core, server {}",
            show(bench),
            if server.is_some() {
                show(server)
            } else {
                "n/a (no --server-pid)".to_owned()
            }
        ));
        if let Some(b) = bench
            && b >= BUSY_PERCENT
        {
            self.line(format!(
                "  WARNING: the bench used {b:.0}% of its core; it may be the bottleneck, not the server"
            ));
        }
    }

    pub fn counter_lines(&mut self, c: &Counters, still_open: usize, opened: usize) {
        if c.failures() == 0 {
            return;
        }
        self.line(format!(
            "  connections: {opened} opened, {still_open} still open at the end; failures: {} connect, {} handshake, {} handshake timeout, {} closed by the server, {} broken",
            c.connect_failed, c.handshake_failed, c.handshake_timeouts, c.closed_by_server, c.broken
        ));
        if let Some(e) = &c.first_error {
            self.line(format!("  first failure: {e}"));
        }
    }

    /// The human lines, then the JSON line. A closed stdout (`| head`)
    /// is not an error worth a panic.
    pub fn print(&self) {
        let mut out = std::io::stdout().lock();
        for line in &self.lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "{}", Value::Object(self.json.clone()));
        let _ = out.flush();
    }
}

/// Nanoseconds as a short human duration.
pub fn duration(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

pub fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

/// Latency quantiles in microseconds.
pub fn latency_json(h: &Histogram) -> Value {
    let us = |ns: u64| round(ns as f64 / 1e3, 1);
    json!({
        "p50": us(h.quantile(0.5)),
        "p99": us(h.quantile(0.99)),
        "p999": us(h.quantile(0.999)),
        "max": us(h.max()),
        "mean": us(h.mean() as u64),
        "samples": h.count(),
    })
}

/// The error for a run where not one connection opened.
pub fn no_connections(c: &Counters) -> io::Error {
    io::Error::other(format!(
        "no connection opened: {}",
        c.first_error.as_deref().unwrap_or("unknown failure")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(999), "999 ns");
        assert_eq!(duration(12_345), "12.3 us");
        assert_eq!(duration(2_500_000), "2.50 ms");
        assert_eq!(duration(3_000_000_000), "3.00 s");
        assert_eq!(round(1.256, 1), 1.3);
    }
}

//! The load generators: wrk (HTTP/1.1 keep-alive) and h2load (h2c, prior knowledge), run pinned
//! to the load CPU, and what their output says: requests served, errors, throughput and the
//! p50 / p99 latency.

use std::fmt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, bail};

use super::sys;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 keep-alive, driven by wrk.
    H1,
    /// HTTP/2 prior knowledge over cleartext, driven by h2load.
    H2c,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::H1 => "http/1.1",
            Protocol::H2c => "h2c",
        })
    }
}

/// How hard to drive a proxy.
#[derive(Clone, Debug)]
pub struct Load {
    pub cpu: Option<usize>,
    pub duration: Duration,
    /// wrk connections.
    pub connections: u32,
    /// h2load connections and concurrent streams per connection.
    pub h2_connections: u32,
    pub h2_streams: u32,
    /// `Host` / `:authority` of every request.
    pub host: String,
}

/// What one run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Requests answered with a 2xx or 3xx status.
    pub ok: u64,
    /// Requests that failed or got another status.
    pub errors: u64,
    pub seconds: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Outcome {
    pub fn rps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ok as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Drives `url` (`http://127.0.0.1:PORT/`) for `load.duration`; h2load writes its per-request
/// log to `log` (the latency percentiles come from it).
pub fn run(protocol: Protocol, url: &str, load: &Load, log: &Path) -> anyhow::Result<Outcome> {
    let secs = load.duration.as_secs().max(1).to_string();
    match protocol {
        Protocol::H1 => {
            let mut cmd = sys::pinned("wrk", load.cpu);
            cmd.args([
                "-t1",
                "-c",
                &load.connections.to_string(),
                "-d",
                &format!("{secs}s"),
                "--latency",
                "-H",
                &format!("Host: {}", load.host),
                url,
            ]);
            let out = output(cmd, "wrk")?;
            let text = String::from_utf8_lossy(&out.stdout);
            parse_wrk(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))
        }
        Protocol::H2c => {
            let mut cmd = sys::pinned("h2load", load.cpu);
            cmd.args([
                "-t1",
                "-c",
                &load.h2_connections.to_string(),
                "-m",
                &load.h2_streams.to_string(),
                "-D",
                &secs,
                "-H",
                &format!(":authority: {}", load.host),
                "--log-file",
            ])
            .arg(log)
            .arg(url);
            let out = output(cmd, "h2load")?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut outcome = parse_h2load(&text)
                .with_context(|| format!("cannot read h2load's output:\n{text}"))?;
            let log_text = std::fs::read_to_string(log)
                .with_context(|| format!("reading h2load's log {}", log.display()))?;
            let mut latencies = parse_h2load_log(&log_text);
            (outcome.p50_us, outcome.p99_us) = percentiles(&mut latencies);
            Ok(outcome)
        }
    }
}

fn output(mut cmd: Command, what: &str) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// wrk's `--latency` report.
fn parse_wrk(text: &str) -> Option<Outcome> {
    let mut out = Outcome::default();
    let mut requests = None;
    let mut latency_block = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("Latency Distribution") {
            latency_block = true;
            continue;
        }
        if latency_block {
            match line.split_once('%') {
                Some(("50", v)) => out.p50_us = duration_us(v.trim())?,
                Some(("99", v)) => {
                    out.p99_us = duration_us(v.trim())?;
                    latency_block = false;
                }
                _ => {}
            }
            continue;
        }
        // `635886 requests in 10.00s, 100.65MB read`
        if let Some((n, rest)) = line.split_once(" requests in ") {
            requests = Some(n.trim().parse::<u64>().ok()?);
            out.seconds = duration_us(rest.split(',').next()?.trim())? / 1e6;
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            out.errors += n.trim().parse::<u64>().ok()?;
        } else if let Some(errs) = line.strip_prefix("Socket errors:") {
            // `connect 0, read 0, write 0, timeout 0`
            for part in errs.split(',') {
                out.errors += part.split_whitespace().nth(1)?.parse::<u64>().ok()?;
            }
        }
    }
    out.ok = requests?.checked_sub(out.errors.min(requests?))?;
    (out.seconds > 0.0 && out.p99_us > 0.0).then_some(out)
}

/// wrk's durations: `761.00us`, `1.29ms`, `2.00s`, `1.00m`.
fn duration_us(v: &str) -> Option<f64> {
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        "m" => n * 60e6,
        "h" => n * 3600e6,
        _ => return None,
    })
}

/// h2load's summary (latency comes from its log). `succeeded` counts 2xx and 3xx answers;
/// `failed` counts the rest, HTTP-level failures included (`errored` and `timeout` are subsets).
fn parse_h2load(text: &str) -> Option<Outcome> {
    let mut out = Outcome::default();
    let (mut finished, mut requests) = (false, false);
    for line in text.lines().map(str::trim) {
        // `finished in 10.00s, 51234.50 req/s, 3.12MB/s`
        if let Some(rest) = line.strip_prefix("finished in ") {
            out.seconds = duration_us(rest.split(',').next()?.trim())? / 1e6;
            finished = true;
        // `requests: 512345 total, 512395 started, 512345 done, 512340 succeeded, 5 failed, ...`
        } else if let Some(rest) = line.strip_prefix("requests:") {
            for part in rest.split(',') {
                let mut words = part.split_whitespace();
                let (Some(n), Some(what)) = (words.next(), words.next()) else {
                    continue;
                };
                match what {
                    "succeeded" => out.ok = n.parse().ok()?,
                    "failed" => out.errors = n.parse().ok()?,
                    _ => {}
                }
            }
            requests = true;
        }
    }
    (finished && requests && out.seconds > 0.0).then_some(out)
}

/// Microseconds to the end of each response: the third column of h2load's `--log-file`.
fn parse_h2load_log(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect()
}

/// (p50, p99) of latencies in µs, nearest rank.
fn percentiles(v: &mut [u64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    v.sort_unstable();
    let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] as f64;
    (rank(0.50), rank(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "\
Running 10s test @ http://127.0.0.1:8080/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   785.03us  150.12us   6.20ms   90.30%
    Req/Sec    63.90k     2.11k   67.41k    72.00%
  Latency Distribution
     50%  761.00us
     75%  810.00us
     90%  886.00us
     99%    1.29ms
  635886 requests in 10.00s, 100.65MB read
  Non-2xx or 3xx responses: 5
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:  63585.37
Transfer/sec:     10.07MB
";

    #[test]
    fn wrk_report() {
        let o = parse_wrk(WRK).unwrap();
        assert_eq!(o.ok, 635886 - 8);
        assert_eq!(o.errors, 8);
        assert_eq!(o.seconds, 10.0);
        assert_eq!(o.p50_us, 761.0);
        assert_eq!(o.p99_us, 1290.0);
    }

    #[test]
    fn wrk_report_without_errors_or_latency() {
        let clean: String = WRK
            .lines()
            .filter(|l| !l.contains("Non-2xx") && !l.contains("Socket errors"))
            .map(|l| format!("{l}\n"))
            .collect();
        let o = parse_wrk(&clean).unwrap();
        assert_eq!((o.ok, o.errors), (635886, 0));
        assert!(parse_wrk("Running 10s test\n").is_none());
    }

    #[test]
    fn wrk_durations() {
        assert_eq!(duration_us("761.00us"), Some(761.0));
        assert_eq!(duration_us("1.29ms"), Some(1290.0));
        assert_eq!(duration_us("2.00s"), Some(2e6));
        assert_eq!(duration_us("1.00m"), Some(60e6));
        assert_eq!(duration_us("1.00 parsecs"), None);
    }

    const H2LOAD: &str = "\
starting benchmark...
spawning thread #0: 10 total client(s). Timing-based test with 0s of warm-up time and 10s of main duration for measurements.
Warm-up phase is over for thread #0.
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 10.00s, 51234.50 req/s, 3.12MB/s
requests: 512345 total, 512395 started, 512345 done, 512340 succeeded, 5 failed, 0 errored, 5 timeout
status codes: 512340 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 31.29MB (32812345) total, 1.46MB (1534567) headers (space savings 95.12%), 10.75MB (11270590) data
                     min         max         mean         sd        +/- sd
time for request:      120us      9.87ms       950us       210us    80.12%
";

    #[test]
    fn h2load_report() {
        let o = parse_h2load(H2LOAD).unwrap();
        assert_eq!((o.ok, o.errors), (512340, 5));
        assert_eq!(o.seconds, 10.0);
        assert!(parse_h2load("starting benchmark...\n").is_none());
    }

    #[test]
    fn h2load_log_percentiles() {
        let log: String = (1..=200)
            .map(|i| format!("1700000000{i:06}\t200\t{}\n", i * 10))
            .collect();
        let mut v = parse_h2load_log(&log);
        assert_eq!(v.len(), 200);
        assert_eq!(percentiles(&mut v), (1000.0, 1980.0));
        assert_eq!(percentiles(&mut []), (0.0, 0.0));
    }
}

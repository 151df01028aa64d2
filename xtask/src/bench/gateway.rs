//! `cargo xtask bench gateway`: bowline-gateway and nginx as the same reverse proxy, driven in
//! the same run, interleaved over several repeats.
//!
//! Layout (2+ CPUs): the load generator (wrk or h2load) and the upstream share the load CPU; each
//! proxy is pinned to the proxy CPU and runs one worker (nginx `worker_processes 1`,
//! bowline-gateway `--worker-threads 1`). The upstream is a second nginx answering a small static
//! body from memory: the cheapest HTTP/1.1 server at hand, so it is never the bottleneck, and the
//! same for both proxies. Both proxies speak HTTP/1.1 with keep-alive to it (nginx cannot proxy
//! h2c to a plain HTTP upstream), add `X-Forwarded-For` / `-Proto`, and log nothing per request.
//!
//! Proxies: `nginx`; `bowline` (one VirtualGateway, one catch-all GatewayRoute); `bowline-1k`
//! (a second gateway with `--routes` GatewayRoutes over `--routes`/10 exact hostnames plus the
//! catch-all, for the memory bar). Every request carries `Host: svc-0050.bench.test`, a host of
//! the large table, so `bowline-1k` matches through a virtual host with 11 routes.
//!
//! Per proxy × protocol it reports requests/s, p50 and p99 latency (median of the repeats), CPU
//! time per request (the proxy's utime+stime over its runs, from `/proc/<pid>/stat`, divided by
//! the requests it answered: the honest figure when the load side saturates first) and peak RSS
//! (`VmHWM`; for nginx, master + worker), each also as a ratio to nginx; then the bars of issue 3.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::load::{self, Load, Outcome, Protocol};
use super::sys::{self, CpuTicks, H2LOAD, NGINX, PERF, TASKSET, WRK};

/// The `Host` of every benchmark request (a host of the large route table).
const HOST_INDEX: usize = 50;
/// Bars of issue 3.
const CPU_BAR: f64 = 0.8;
const RSS_BAR: u64 = 16 * 1024 * 1024;
const UPSTREAM_BODY: &str = "hello from the upstream\n";

#[derive(clap::Args, Debug)]
pub struct Gateway {
    /// Seconds of load per proxy × protocol × repeat.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Rounds; each round runs every proxy with both protocols, in a rotated order.
    #[arg(long, default_value_t = 3)]
    repeats: u32,
    /// Seconds of unmeasured load per proxy × protocol before the first round.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// wrk connections (HTTP/1.1 keep-alive, one request in flight each).
    #[arg(long, default_value_t = 50)]
    connections: u32,
    /// h2load connections (h2c).
    #[arg(long, default_value_t = 10)]
    h2_connections: u32,
    /// Concurrent streams per h2c connection.
    #[arg(long, default_value_t = 5)]
    h2_streams: u32,
    /// GatewayRoutes of the `bowline-1k` gateway (0: leave it out).
    #[arg(long, default_value_t = 1000)]
    routes: usize,
    /// Worker processes of nginx and worker threads of bowline-gateway.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// CPU of the load generator and the upstream.
    #[arg(long, default_value_t = 0)]
    load_cpu: usize,
    /// CPU of the proxies.
    #[arg(long, default_value_t = 1)]
    proxy_cpu: usize,
    /// Skip `cargo build --release` (use the binaries already in target/release).
    #[arg(long)]
    no_build: bool,
    /// After the measured rounds, profile nginx and bowline with `perf record` during one more
    /// run per protocol; the top symbols go to `target/bench/gateway/perf-*.txt`.
    #[arg(long)]
    perf: bool,
}

/// A proxy under test.
struct Proxy {
    name: &'static str,
    /// Process whose CPU time and memory are the proxy's (nginx: the master; its workers are
    /// found as its children).
    pid: u32,
    /// HTTP/1.1 and h2c URLs.
    h1: String,
    h2c: String,
}

/// Measurements of one proxy × protocol over all rounds.
#[derive(Default)]
struct Runs {
    outcomes: Vec<Outcome>,
    cpu: CpuTicks,
}

impl Gateway {
    pub fn run(self, root: &Path) -> anyhow::Result<()> {
        if self.repeats == 0 || self.duration == 0 {
            bail!("--repeats and --duration must be at least 1");
        }
        if self.workers == 0 {
            bail!("--workers must be at least 1");
        }
        let cpus = sys::cpu_count();
        if self.load_cpu >= cpus || self.proxy_cpu >= cpus || self.load_cpu == self.proxy_cpu {
            bail!(
                "--load-cpu {} and --proxy-cpu {} must be two different CPUs of the {cpus} here",
                self.load_cpu,
                self.proxy_cpu
            );
        }
        let mut tools = vec![NGINX, WRK, H2LOAD, TASKSET];
        if self.perf {
            tools.push(PERF);
        }
        sys::require_tools(&tools)?;
        let nginx_bin = sys::find_program(NGINX.program).context("nginx is not installed")?;

        if !self.no_build {
            build(root)?;
        }
        let bin = sys::target_dir(root, "release");
        let dir = sys::target_dir(root, "bench").join("gateway");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir.join("manifests"))
            .with_context(|| format!("creating {}", dir.display()))?;

        let stop = Arc::new(AtomicBool::new(false));
        {
            let stop = stop.clone();
            ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
                .context("installing the Ctrl-C handler")?;
        }

        let ports = Ports::pick()?;
        let host = host_name(HOST_INDEX);
        let load_before = sys::load_average();
        let mut procs = Procs::default();

        // The upstream and the control plane share the load CPU.
        let load_cpu = Some(self.load_cpu);
        let proxy_cpu = Some(self.proxy_cpu);
        write(
            &dir.join("upstream.conf"),
            &upstream_conf(&dir, ports.upstream),
        )?;
        let mut cmd = sys::pinned(&nginx_bin, load_cpu);
        cmd.arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("upstream.conf"));
        procs.spawn("upstream", cmd, &dir)?;
        wait_http(&mut procs, "upstream", ports.upstream, &host)?;

        write(
            &dir.join("nginx.conf"),
            &nginx_conf(&dir, self.workers, &ports),
        )?;
        let mut cmd = sys::pinned(&nginx_bin, proxy_cpu);
        cmd.arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"));
        let nginx_pid = procs.spawn("nginx", cmd, &dir)?;
        wait_http(&mut procs, "nginx", ports.nginx_h1, &host)?;

        write_manifests(&dir.join("manifests"), &ports, self.routes)?;
        let mut cmd = sys::pinned(bin.join("bowline-control-plane"), load_cpu);
        cmd.arg("--manifests")
            .arg(dir.join("manifests"))
            .args(["--grpc-addr", &ports.cp_grpc.to_string()])
            .args(["--admin-addr", &ports.cp_admin.to_string()])
            .args(["--log-level", "warn"]);
        procs.spawn("control-plane", cmd, &dir)?;
        wait_ready(&mut procs, "control-plane", ports.cp_admin)?;

        let mut proxies = vec![Proxy {
            name: "nginx",
            pid: nginx_pid,
            h1: format!("http://127.0.0.1:{}/", ports.nginx_h1),
            h2c: format!("http://127.0.0.1:{}/", ports.nginx_h2c),
        }];
        let mut gateways = vec![("bowline", "bench/gw", ports.bowline, ports.bowline_admin)];
        if self.routes > 0 {
            gateways.push((
                "bowline-1k",
                "bench-1k/gw",
                ports.bowline_1k,
                ports.bowline_1k_admin,
            ));
        }
        for (name, gateway, port, admin) in gateways {
            let mut cmd = sys::pinned(bin.join("bowline-gateway"), proxy_cpu);
            cmd.args(["--gateway", gateway, "--bind", "127.0.0.1"])
                .args(["--control-plane", &format!("http://{}", ports.cp_grpc)])
                .args(["--admin-addr", &admin.to_string()])
                .args(["--worker-threads", &self.workers.to_string()])
                .args(["--log-level", "warn"]);
            let pid = procs.spawn(name, cmd, &dir)?;
            wait_ready(&mut procs, name, admin)?;
            wait_http(&mut procs, name, port, &host)?;
            let url = format!("http://127.0.0.1:{port}/");
            proxies.push(Proxy {
                name,
                pid,
                h1: url.clone(),
                h2c: url,
            });
        }

        let load = Load {
            cpu: load_cpu,
            duration: Duration::from_secs(self.duration),
            connections: self.connections,
            h2_connections: self.h2_connections,
            h2_streams: self.h2_streams,
            host: host.clone(),
        };
        let h2_log = dir.join("h2load.log");
        let protocols = [Protocol::H1, Protocol::H2c];

        // Every proxy answers both protocols before anything is measured.
        for p in &proxies {
            for proto in protocols {
                let warm = Load {
                    duration: Duration::from_secs(self.warmup.max(1)),
                    ..load.clone()
                };
                let o = load::run(proto, p.url(proto), &warm, &h2_log)
                    .with_context(|| format!("warming up {} over {proto}", p.name))?;
                if o.ok == 0 || o.errors > 0 {
                    bail!(
                        "{} over {proto}: {} answered, {} errors during warm-up (logs in {})",
                        p.name,
                        o.ok,
                        o.errors,
                        dir.display()
                    );
                }
                procs.check()?;
            }
        }

        let total = self.repeats as u64 * protocols.len() as u64 * proxies.len() as u64;
        println!(
            "measuring: {} rounds × {} protocols × {} proxies × {} s (about {} s)",
            self.repeats,
            protocols.len(),
            proxies.len(),
            self.duration,
            total * (self.duration + 1)
        );
        let mut runs: Vec<Vec<Runs>> = proxies
            .iter()
            .map(|_| protocols.iter().map(|_| Runs::default()).collect())
            .collect();
        for round in 0..self.repeats as usize {
            for (pi, proto) in protocols.iter().enumerate() {
                // Rotate the order so no proxy always runs first or right after another.
                for k in 0..proxies.len() {
                    if stop.load(Ordering::SeqCst) {
                        bail!("interrupted");
                    }
                    let i = (k + round) % proxies.len();
                    let p = &proxies[i];
                    let before = p.cpu_ticks()?;
                    let o = load::run(*proto, p.url(*proto), &load, &h2_log)
                        .with_context(|| format!("loading {} over {proto}", p.name))?;
                    let after = p.cpu_ticks()?;
                    procs.check()?;
                    println!(
                        "  round {} {:<10} {:<8} {:>9.0} req/s  p50 {:>7.0} µs  p99 {:>7.0} µs{}",
                        round + 1,
                        p.name,
                        proto.to_string(),
                        o.rps(),
                        o.p50_us,
                        o.p99_us,
                        if o.errors > 0 {
                            format!("  ({} errors)", o.errors)
                        } else {
                            String::new()
                        }
                    );
                    let r = &mut runs[i][pi];
                    r.cpu = r.cpu + after.since(before);
                    r.outcomes.push(o);
                }
            }
        }
        let rss: Vec<u64> = proxies
            .iter()
            .map(Proxy::peak_rss)
            .collect::<anyhow::Result<_>>()?;
        let load_after = sys::load_average();
        let mut profiles = Vec::new();
        if self.perf {
            for p in proxies.iter().filter(|p| p.name != "bowline-1k") {
                for proto in protocols {
                    if stop.load(Ordering::SeqCst) {
                        bail!("interrupted");
                    }
                    profiles.push(profile(p, proto, &load, &dir, &h2_log)?);
                    procs.check()?;
                }
            }
        }
        drop(procs);

        let report = Report {
            gateway: &self,
            proxies: &proxies,
            protocols: &protocols,
            runs: &runs,
            rss: &rss,
            ticks_per_sec: sys::clock_ticks() as f64,
            load: (load_before, load_after),
            host: &host,
        }
        .render();
        print!("\n{report}");
        write(&dir.join("report.txt"), &report)?;
        println!("(also in {})", dir.join("report.txt").display());
        for (path, top) in &profiles {
            println!("\n{}\n{top}", path.display());
        }
        Ok(())
    }
}

fn build(root: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "bowline-gateway",
            "-p",
            "bowline-control-plane",
            "-p",
            "bowline-tests",
            "--bins",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    Ok(())
}

/// Samples the proxy's processes with `perf record` (cpu-clock works without a hardware PMU)
/// during one load run; returns the report's path and its first lines.
fn profile(
    p: &Proxy,
    proto: Protocol,
    load: &Load,
    dir: &Path,
    h2_log: &Path,
) -> anyhow::Result<(PathBuf, String)> {
    let slug = match proto {
        Protocol::H1 => "h1",
        Protocol::H2c => "h2c",
    };
    let data = dir.join(format!("perf-{}-{slug}.data", p.name));
    let pids: Vec<String> = p.pids().iter().map(u32::to_string).collect();
    let log = File::create(dir.join(format!("perf-{}-{slug}.log", p.name)))?;
    let mut record = Command::new("perf")
        .args(["record", "-F", "999", "-o"])
        .arg(&data)
        .args(["-p", &pids.join(","), "--", "sleep"])
        .arg(load.duration.as_secs().max(1).to_string())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting perf record")?;
    let outcome = load::run(proto, p.url(proto), load, h2_log);
    let status = record.wait().context("waiting for perf record")?;
    let o = outcome.with_context(|| format!("loading {} over {proto} under perf", p.name))?;
    if !status.success() {
        bail!(
            "perf record failed ({status}); see its log in {}",
            dir.display()
        );
    }
    let mut text = format!(
        "perf: {} over {proto}, {:.0} req/s while sampled at 999 Hz (cpu-clock)\n",
        p.name,
        o.rps()
    );
    for sort in ["dso", "dso,symbol"] {
        let out = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--percent-limit",
                "0.7",
            ])
            .args(["--sort", sort, "-i"])
            .arg(&data)
            .output()
            .context("running perf report")?;
        if !out.status.success() {
            bail!(
                "perf report failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let report = String::from_utf8_lossy(&out.stdout);
        text.extend(
            report
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                // Drop the empty IPC columns (no hardware counters under cpu-clock).
                .map(|l| format!("{}\n", l.trim_end_matches([' ', '-']))),
        );
        text.push('\n');
    }
    let path = dir.join(format!("perf-{}-{slug}.txt", p.name));
    write(&path, &text)?;
    let top: String = text.lines().take(45).map(|l| format!("{l}\n")).collect();
    Ok((path, top))
}

// === impl Proxy ===

impl Proxy {
    fn url(&self, proto: Protocol) -> &str {
        match proto {
            Protocol::H1 => &self.h1,
            Protocol::H2c => &self.h2c,
        }
    }

    /// The proxy's processes: the main one and its children (nginx's workers).
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.pid];
        pids.extend(sys::children(self.pid));
        pids
    }

    fn cpu_ticks(&self) -> anyhow::Result<CpuTicks> {
        self.pids().into_iter().map(sys::cpu_ticks).sum()
    }

    fn peak_rss(&self) -> anyhow::Result<u64> {
        self.pids().into_iter().map(sys::peak_rss).sum()
    }
}

// === impl Report ===

struct Report<'a> {
    gateway: &'a Gateway,
    proxies: &'a [Proxy],
    protocols: &'a [Protocol],
    /// By proxy, then protocol.
    runs: &'a [Vec<Runs>],
    rss: &'a [u64],
    ticks_per_sec: f64,
    load: (Option<f64>, Option<f64>),
    host: &'a str,
}

/// One row of the table.
struct Row {
    rps: f64,
    p50: f64,
    p99: f64,
    /// µs of proxy CPU per request: total, in user space, in the kernel.
    cpu: f64,
    user: f64,
    system: f64,
    rss: u64,
    errors: u64,
}

impl Report<'_> {
    fn row(&self, proxy: usize, proto: usize) -> Row {
        let r = &self.runs[proxy][proto];
        let median = |f: fn(&Outcome) -> f64| {
            let mut v: Vec<f64> = r.outcomes.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        let ok: u64 = r.outcomes.iter().map(|o| o.ok).sum();
        let per_request = |ticks: u64| {
            if ok > 0 {
                ticks as f64 / self.ticks_per_sec * 1e6 / ok as f64
            } else {
                0.0
            }
        };
        Row {
            rps: median(Outcome::rps),
            p50: median(|o| o.p50_us),
            p99: median(|o| o.p99_us),
            cpu: per_request(r.cpu.total()),
            user: per_request(r.cpu.user),
            system: per_request(r.cpu.system),
            rss: self.rss[proxy],
            errors: r.outcomes.iter().map(|o| o.errors).sum(),
        }
    }

    fn render(&self) -> String {
        let g = self.gateway;
        let mut out = String::new();
        let tools: [(&str, &[&str]); 3] = [
            ("nginx", &["-v"]),
            ("wrk", &["-v"]),
            ("h2load", &["--version"]),
        ];
        let load = |l: Option<f64>| l.map_or("?".into(), |l| format!("{l:.2}"));
        let _ = writeln!(out, "bowline-gateway vs nginx");
        for (k, v) in sys::machine(&tools) {
            let _ = writeln!(out, "  {k:<8} {v}");
        }
        let _ = writeln!(
            out,
            "  load     1-min load average {} before, {} after",
            load(self.load.0),
            load(self.load.1)
        );
        let _ = writeln!(
            out,
            "  setup    {} worker(s) per proxy on CPU {}; load generator + upstream (nginx, static body) on CPU {}",
            g.workers, g.proxy_cpu, g.load_cpu
        );
        let _ = writeln!(
            out,
            "  load     http/1.1: wrk -t1 -c{}; h2c: h2load -t1 -c{} -m{}; Host {}; {} rounds × {} s, interleaved",
            g.connections, g.h2_connections, g.h2_streams, self.host, g.repeats, g.duration
        );
        let _ = writeln!(
            out,
            "  columns  req/s, p50 and p99: median of the rounds; CPU: proxy utime + stime / requests answered;\n           RSS: peak (VmHWM; nginx: master + worker)\n"
        );
        let _ = writeln!(
            out,
            "{:<11} {:<9} {:>17} {:>17} {:>17} {:>19} {:>12} {:>18}",
            "proxy",
            "protocol",
            "req/s",
            "p50 µs",
            "p99 µs",
            "CPU µs/req",
            "= usr + sys",
            "peak RSS MiB"
        );
        let ratio = |v: f64, base: f64| {
            if base > 0.0 {
                format!("({:.2}×)", v / base)
            } else {
                "(—)".into()
            }
        };
        let mut warnings = Vec::new();
        for (pi, proto) in self.protocols.iter().enumerate() {
            let base = self.row(0, pi);
            for (i, p) in self.proxies.iter().enumerate() {
                let r = self.row(i, pi);
                let mib = r.rss as f64 / (1024.0 * 1024.0);
                let base_mib = base.rss as f64 / (1024.0 * 1024.0);
                let _ = writeln!(
                    out,
                    "{:<11} {:<9} {:>9.0} {:>7} {:>9.0} {:>7} {:>9.0} {:>7} {:>11.2} {:>7} {:>12} {:>10.1} {:>7}",
                    p.name,
                    proto.to_string(),
                    r.rps,
                    ratio(r.rps, base.rps),
                    r.p50,
                    ratio(r.p50, base.p50),
                    r.p99,
                    ratio(r.p99, base.p99),
                    r.cpu,
                    ratio(r.cpu, base.cpu),
                    format!("{:.1} + {:.1}", r.user, r.system),
                    mib,
                    ratio(mib, base_mib),
                );
                if r.errors > 0 {
                    warnings.push(format!(
                        "{} over {proto}: {} failed requests",
                        p.name, r.errors
                    ));
                }
            }
        }
        for w in &warnings {
            let _ = writeln!(out, "warning: {w}");
        }

        let _ = writeln!(out, "\nbars (issue 3):");
        let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
        let bowline = self.proxies.iter().position(|p| p.name == "bowline");
        if let Some(b) = bowline {
            for (pi, proto) in self.protocols.iter().enumerate() {
                let (n, r) = (self.row(0, pi), self.row(b, pi));
                let x = r.cpu / n.cpu;
                let _ = writeln!(
                    out,
                    "  {}  CPU per request ≤ {CPU_BAR}× nginx ({proto}): {:.2} vs {:.2} µs = {x:.2}×",
                    verdict(x <= CPU_BAR),
                    r.cpu,
                    n.cpu
                );
            }
            for (pi, proto) in self.protocols.iter().enumerate() {
                let (n, r) = (self.row(0, pi), self.row(b, pi));
                let _ = writeln!(
                    out,
                    "  {}  p99 ≤ nginx ({proto}): {:.0} vs {:.0} µs",
                    verdict(r.p99 <= n.p99),
                    r.p99,
                    n.p99
                );
            }
            if let Some(pi) = self.protocols.iter().position(|p| *p == Protocol::H2c) {
                let (n, r) = (self.row(0, pi), self.row(b, pi));
                let _ = writeln!(
                    out,
                    "  {}  h2c throughput ≥ nginx: {:.0} vs {:.0} req/s",
                    verdict(r.rps >= n.rps),
                    r.rps,
                    n.rps
                );
            }
        }
        match self.proxies.iter().position(|p| p.name == "bowline-1k") {
            Some(k) => {
                let rss = self.rss[k];
                let _ = writeln!(
                    out,
                    "  {}  RSS ≤ 16 MiB with {} routes loaded: {:.1} MiB",
                    verdict(rss <= RSS_BAR),
                    g.routes,
                    rss as f64 / (1024.0 * 1024.0)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  ----  RSS with 1,000 routes: not measured (--routes 0)"
                );
            }
        }
        out
    }
}

// === impl Ports ===

/// Free loopback ports, picked by binding port 0 (all held until every one is picked).
struct Ports {
    upstream: u16,
    nginx_h1: u16,
    nginx_h2c: u16,
    bowline: u16,
    bowline_1k: u16,
    bowline_admin: SocketAddr,
    bowline_1k_admin: SocketAddr,
    cp_grpc: SocketAddr,
    cp_admin: SocketAddr,
}

impl Ports {
    fn pick() -> anyhow::Result<Ports> {
        let held: Vec<TcpListener> = (0..9)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()
            .context("picking free loopback ports")?;
        let p: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()?;
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        Ok(Ports {
            upstream: p[0],
            nginx_h1: p[1],
            nginx_h2c: p[2],
            bowline: p[3],
            bowline_1k: p[4],
            bowline_admin: addr(p[5]),
            bowline_1k_admin: addr(p[6]),
            cp_grpc: addr(p[7]),
            cp_admin: addr(p[8]),
        })
    }
}

// === configuration files ===

fn host_name(i: usize) -> String {
    format!("svc-{i:04}.bench.test")
}

/// Settings both nginx instances share: foreground, logs and temporary files in the work
/// directory (so a non-root user can run them), no access log.
fn nginx_common(dir: &Path, name: &str, workers: usize) -> String {
    let d = dir.display();
    format!(
        "daemon off;\n\
         worker_processes {workers};\n\
         pid {d}/{name}.pid;\n\
         error_log {d}/{name}.error.log warn;\n\
         events {{ worker_connections 4096; }}\n"
    )
}

fn nginx_http_common(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "    access_log off;\n\
         \x20   client_body_temp_path {d}/tmp-body;\n\
         \x20   proxy_temp_path {d}/tmp-proxy;\n\
         \x20   fastcgi_temp_path {d}/tmp-fastcgi;\n\
         \x20   uwsgi_temp_path {d}/tmp-uwsgi;\n\
         \x20   scgi_temp_path {d}/tmp-scgi;\n\
         \x20   keepalive_requests 1000000;\n\
         \x20   keepalive_timeout 300s;\n"
    )
}

/// The upstream: a static body from memory, keep-alive without a request limit.
fn upstream_conf(dir: &Path, port: u16) -> String {
    format!(
        "{}http {{\n{}\
         \x20   default_type text/plain;\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port} backlog=4096;\n\
         \x20       location / {{ return 200 \"{}\\n\"; }}\n\
         \x20   }}\n\
         }}\n",
        nginx_common(dir, "upstream", 1),
        nginx_http_common(dir),
        UPSTREAM_BODY.trim_end()
    )
}

/// nginx as the reverse proxy bowline-gateway is compared with: HTTP/1.1 and h2c listeners
/// (h2c prior knowledge needs its own `listen … http2` socket in nginx 1.22), keep-alive
/// connections to the upstream, the same forwarding headers bowline adds.
fn nginx_conf(dir: &Path, workers: usize, ports: &Ports) -> String {
    format!(
        "{}http {{\n{}\
         \x20   upstream backend {{\n\
         \x20       server 127.0.0.1:{};\n\
         \x20       keepalive 128;\n\
         \x20       keepalive_requests 1000000;\n\
         \x20   }}\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{} backlog=4096;\n\
         \x20       listen 127.0.0.1:{} http2 backlog=4096;\n\
         \x20       location / {{\n\
         \x20           proxy_pass http://backend;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20           proxy_set_header Host $host;\n\
         \x20           proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         \x20           proxy_set_header X-Forwarded-Proto $scheme;\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n",
        nginx_common(dir, "nginx", workers),
        nginx_http_common(dir),
        ports.upstream,
        ports.nginx_h1,
        ports.nginx_h2c,
    )
}

/// The mesh, and for each gateway namespace: the upstream as a Service + EndpointSlice +
/// VirtualNode + VirtualService, a VirtualGateway and its GatewayRoutes.
fn write_manifests(dir: &Path, ports: &Ports, routes: usize) -> anyhow::Result<()> {
    write(
        &dir.join("mesh.yaml"),
        "apiVersion: mesh.bowline.io/v1alpha1\n\
         kind: Mesh\n\
         metadata:\n  name: bench\n\
         spec:\n  namespaceSelector:\n    matchLabels:\n      mesh: bench\n",
    )?;
    write(
        &dir.join("bench.yaml"),
        &(namespace("bench", ports.bowline, ports.upstream) + &catch_all("bench")),
    )?;
    if routes > 0 {
        let mut text = namespace("bench-1k", ports.bowline_1k, ports.upstream);
        for i in 0..routes {
            let (h, r) = (i / 10, i % 10);
            let _ = write!(
                text,
                "---\napiVersion: mesh.bowline.io/v1alpha1\nkind: GatewayRoute\n\
                 metadata:\n  name: r{i:05}\n  namespace: bench-1k\n\
                 spec:\n  httpRoute:\n    match:\n      hostname:\n        exact: {}\n      \
                 prefix: /api{r}/\n    action:\n      target:\n        virtualService:\n          \
                 virtualServiceRef:\n            name: upstream\n",
                host_name(h)
            );
        }
        text.push_str(&catch_all("bench-1k"));
        write(&dir.join("bench-1k.yaml"), &text)?;
    }
    Ok(())
}

fn namespace(ns: &str, gateway_port: u16, upstream_port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    mesh: bench\n\
         ---\napiVersion: v1\nkind: Service\nmetadata:\n  name: upstream\n  namespace: {ns}\n\
         spec:\n  ports:\n    - name: http\n      port: 8080\n      targetPort: http\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: upstream-1\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: upstream\n\
         addressType: IPv4\nports:\n  - name: http\n    port: {upstream_port}\n    protocol: TCP\n\
         endpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions:\n      ready: true\n\
         ---\napiVersion: mesh.bowline.io/v1alpha1\nkind: VirtualNode\n\
         metadata:\n  name: upstream\n  namespace: {ns}\n\
         spec:\n  listeners:\n    - portMapping:\n        port: 8080\n        protocol: http\n  \
         serviceDiscovery:\n    dns:\n      hostname: upstream.{ns}.svc.cluster.local\n\
         ---\napiVersion: mesh.bowline.io/v1alpha1\nkind: VirtualService\n\
         metadata:\n  name: upstream\n  namespace: {ns}\n\
         spec:\n  provider:\n    virtualNode:\n      virtualNodeRef:\n        name: upstream\n\
         ---\napiVersion: mesh.bowline.io/v1alpha1\nkind: VirtualGateway\n\
         metadata:\n  name: gw\n  namespace: {ns}\n\
         spec:\n  listeners:\n    - portMapping:\n        port: {gateway_port}\n        protocol: http\n"
    )
}

fn catch_all(ns: &str) -> String {
    format!(
        "---\napiVersion: mesh.bowline.io/v1alpha1\nkind: GatewayRoute\n\
         metadata:\n  name: all\n  namespace: {ns}\n\
         spec:\n  httpRoute:\n    match:\n      prefix: /\n    action:\n      target:\n        \
         virtualService:\n          virtualServiceRef:\n            name: upstream\n"
    )
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

// === impl Procs ===

/// The processes of a run; stopped (SIGTERM, then SIGKILL after 5 s) in reverse order on drop.
#[derive(Default)]
struct Procs(Vec<(String, Child, PathBuf)>);

impl Procs {
    /// Starts a process with its output in `<dir>/<name>.log`; returns its pid.
    fn spawn(&mut self, name: &str, mut cmd: Command, dir: &Path) -> anyhow::Result<u32> {
        let log_path = dir.join(format!("{name}.log"));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = child.id();
        self.0.push((name.to_string(), child, log_path));
        Ok(pid)
    }

    /// Fails if a process exited, with the end of its log.
    fn check(&mut self) -> anyhow::Result<()> {
        for (name, child, log) in &mut self.0 {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&*log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "{name} exited ({status}); end of {}:\n{}",
                    log.display(),
                    tail.join("\n")
                );
            }
        }
        Ok(())
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, child, _) in self.0.iter_mut().rev() {
            if let Ok(None) = child.try_wait() {
                // nginx's master stops its workers on SIGTERM; SIGKILL would orphan them.
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (name, child, _) in self.0.iter_mut().rev() {
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            if let Ok(None) = child.try_wait() {
                eprintln!("killing {name}");
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Polls the admin server's `/ready` for up to 60 s.
fn wait_ready(procs: &mut Procs, what: &str, admin: SocketAddr) -> anyhow::Result<()> {
    poll(procs, what, || {
        http_get(admin, "/ready", "localhost").is_some_and(|(s, _)| s == 200)
    })
}

/// Polls `GET /` on a proxy or the upstream until it answers 200 with the upstream's body.
fn wait_http(procs: &mut Procs, what: &str, port: u16, host: &str) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    poll(procs, what, || {
        http_get(addr, "/", host).is_some_and(|(s, body)| s == 200 && body == UPSTREAM_BODY)
    })
}

fn poll(procs: &mut Procs, what: &str, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ok() {
            return Ok(());
        }
        procs.check()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} did not answer within 60 s")
}

/// One HTTP/1.0 request: status and body.
fn http_get(addr: SocketAddr, path: &str, host: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_name_every_route_host_and_port() {
        let dir = std::env::temp_dir().join(format!("bowline-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ports = Ports::pick().unwrap();
        write_manifests(&dir, &ports, 25).unwrap();
        let large = std::fs::read_to_string(dir.join("bench-1k.yaml")).unwrap();
        assert_eq!(
            large.matches("kind: GatewayRoute").count(),
            26,
            "25 + catch-all"
        );
        assert!(large.contains(&format!("exact: {}", host_name(2))));
        assert!(!large.contains(&host_name(3)), "25 routes use 3 hosts");
        assert!(large.contains(&format!("port: {}", ports.upstream)));
        let small = std::fs::read_to_string(dir.join("bench.yaml")).unwrap();
        assert_eq!(small.matches("kind: GatewayRoute").count(), 1);
        assert!(small.contains(&format!("port: {}", ports.bowline)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nginx_proxy_config_speaks_h2c_on_its_own_port() {
        let ports = Ports::pick().unwrap();
        let conf = nginx_conf(Path::new("/tmp/x"), 1, &ports);
        assert!(conf.contains(&format!("listen 127.0.0.1:{} http2", ports.nginx_h2c)));
        assert!(conf.contains("worker_processes 1;"));
        assert!(conf.contains("access_log off;"));
        assert!(conf.contains("keepalive 128;"));
    }
}

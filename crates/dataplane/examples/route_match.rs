//! Route-matching micro-benchmark (issue 3, point 1): the cost of [`Router::route`] with 10 routes
//! over 1 host against 1,000 routes over 100 hosts and 10,000 routes over 1,000 hosts. The bar:
//! about the same per match.
//!
//! Run it in release mode, through `cargo xtask bench routes` or directly:
//!
//! ```text
//! cargo run --release -p bowline-dataplane --example route_match [-- --millis 200 --batches 7]
//! ```
//!
//! Every virtual host carries the same realistic mix of 10 routes (exact path, prefixes, one with a
//! method, two with header matches, one regular expression, a catch-all). In the larger tables four
//! hosts in five are exact hosts (`svc-0042.example.com`) and one in five a suffix host
//! (`*.tenant-0044.example.net`). Each case routes one request again and again and reports the
//! median of several timed batches, in nanoseconds per match; the route each case must reach is
//! checked before timing, so a case that stopped matching fails loudly instead of timing an error.
//!
//! Snapshots are built from JSON (the IR's wire form) so that IR fields added later with serde
//! defaults do not break this program.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bowline_dataplane::metrics::ProxyMetrics;
use bowline_dataplane::router::{CompileContext, RequestHead, RouteError, Router};
use bowline_dataplane::upstream::Upstreams;
use bowline_model::ir;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::{Value, json};

const PORT: u16 = 8080;
const ROUTES_PER_HOST: usize = 10;

/// How a host of the table is matched.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HostKind {
    Exact,
    Suffix,
}

/// The request host that reaches host `i` of a table.
fn request_host(i: usize, kind: HostKind) -> String {
    match kind {
        HostKind::Exact => format!("svc-{i:04}.example.com"),
        HostKind::Suffix => format!("app.tenant-{i:04}.example.net"),
    }
}

fn host_match(i: usize, kind: HostKind) -> Value {
    match kind {
        HostKind::Exact => json!({ "exact": format!("svc-{i:04}.example.com") }),
        HostKind::Suffix => json!({ "suffix": format!(".tenant-{i:04}.example.net") }),
    }
}

/// The 10 routes of host `i`, in precedence order.
fn routes(i: usize) -> Vec<Value> {
    let fwd = json!({ "forward": { "clusters": [{ "cluster": "upstream", "weight": 1 }] } });
    let route =
        |n: usize, m: Value| json!({ "name": format!("h{i}/r{n}"), "match": m, "action": fwd });
    vec![
        route(0, json!({ "path": { "exact": "/healthz" } })),
        route(
            1,
            json!({
                "path": { "prefix": "/api/v1/users" },
                "headers": [{ "name": "x-tenant", "match": { "exact": "gold" } }]
            }),
        ),
        route(2, json!({ "path": { "prefix": "/api/v1/users" } })),
        route(
            3,
            json!({ "path": { "prefix": "/api/v1/orders" }, "method": "POST" }),
        ),
        route(4, json!({ "path": { "prefix": "/api/v1/orders" } })),
        route(
            5,
            json!({
                "path": { "prefix": "/api/v2/" },
                "headers": [{ "name": "x-canary", "match": "present" }]
            }),
        ),
        route(6, json!({ "path": { "prefix": "/api/v2/" } })),
        route(
            7,
            json!({ "path": { "regex": "/static/[a-z0-9]+\\.(css|js)" } }),
        ),
        route(8, json!({ "path": { "prefix": "/static/" } })),
        route(9, json!({ "path": { "prefix": "/" } })),
    ]
}

/// One listener, one route table of `hosts` virtual hosts with [`ROUTES_PER_HOST`] routes each,
/// one cluster.
fn snapshot(hosts: usize, kind_of: impl Fn(usize) -> HostKind) -> ir::Snapshot {
    let vhosts: Vec<Value> = (0..hosts)
        .map(|i| {
            json!({
                "name": format!("host-{i}"),
                "hosts": [host_match(i, kind_of(i))],
                "routes": routes(i),
            })
        })
        .collect();
    let snapshot = json!({
        "listeners": [{ "name": "http", "port": PORT, "protocol": "http", "routeTable": "main" }],
        "routeTables": [{ "name": "main", "virtualHosts": vhosts }],
        "clusters": [{ "name": "upstream", "protocol": "http", "connectTimeoutMs": 1000 }],
        "endpoints": [{
            "cluster": "upstream",
            "endpoints": [{ "address": "127.0.0.1", "port": 9000, "weight": 1 }]
        }],
    });
    serde_json::from_value(snapshot).expect("the benchmark snapshot is valid IR")
}

/// Large tables: every fifth host is a suffix host.
fn mixed(i: usize) -> HostKind {
    if i % 5 == 4 {
        HostKind::Suffix
    } else {
        HostKind::Exact
    }
}

/// One request to route, and what it must reach (`None`: no route).
struct Case {
    name: String,
    host: String,
    method: Method,
    path: &'static str,
    headers: HeaderMap,
    expect: Option<String>,
}

/// The request of every hit case: past 6 routes (one header check on the way) to route 6.
const HIT_PATH: &str = "/api/v2/items";
const HIT_ROUTE: usize = 6;

fn hit(name: &str, host: usize, kind: HostKind) -> Case {
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    headers.insert("accept", HeaderValue::from_static("*/*"));
    Case {
        name: name.into(),
        host: request_host(host, kind),
        method: Method::GET,
        path: HIT_PATH,
        headers,
        expect: Some(format!("h{host}/r{HIT_ROUTE}")),
    }
}

fn miss() -> Case {
    Case {
        name: "miss (unknown host)".into(),
        host: "nowhere.example.org".into(),
        method: Method::GET,
        path: HIT_PATH,
        headers: HeaderMap::new(),
        expect: None,
    }
}

struct Options {
    batch: Duration,
    batches: usize,
}

fn parse_options() -> Options {
    let mut opts = Options {
        batch: Duration::from_millis(200),
        batches: 9,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |flag: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{flag} needs a positive number")))
        };
        match a.as_str() {
            "--millis" => opts.batch = Duration::from_millis(value("--millis").max(1)),
            "--batches" => opts.batches = value("--batches").max(1) as usize,
            "--help" | "-h" => {
                println!("route_match [--millis MS_PER_BATCH (200)] [--batches N (9)]");
                std::process::exit(0);
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    opts
}

fn usage(msg: &str) -> ! {
    eprintln!("route_match: {msg} (see --help)");
    std::process::exit(64)
}

fn compile(snapshot: &ir::Snapshot) -> (Router, Duration) {
    let upstreams = Upstreams::default();
    let metrics = ProxyMetrics::default();
    let start = Instant::now();
    let router = Router::compile(
        snapshot,
        CompileContext {
            upstreams: &upstreams,
            metrics: &metrics,
            previous: None,
        },
    )
    .unwrap_or_else(|e| panic!("the benchmark snapshot compiles: {e}"));
    (router, start.elapsed())
}

/// Median nanoseconds per match of `case` on `router`.
fn measure(router: &Router, case: &Case, opts: &Options) -> f64 {
    let listener = router.listener(PORT).expect("the listener exists");
    let (path, query) = case
        .path
        .split_once('?')
        .map_or((case.path, None), |(p, q)| (p, Some(q)));
    let head = RequestHead {
        method: &case.method,
        path,
        query,
        headers: &case.headers,
        port: PORT,
        scheme: "http",
    };
    let outcome = router
        .route(listener, &case.host, &head)
        .map(|r| r.route.name.clone());
    match (&case.expect, outcome) {
        (Some(want), Ok(got)) if *want == got => {}
        (None, Err(RouteError::NoRoute)) => {}
        (want, got) => panic!("{}: expected {want:?}, routed to {got:?}", case.name),
    }
    let once = || {
        let routed = router.route(listener, black_box(&case.host), black_box(&head));
        black_box(routed.is_ok());
    };
    // Calibrate: how many matches fill one batch.
    let mut n: u64 = 1_000;
    loop {
        let start = Instant::now();
        for _ in 0..n {
            once();
        }
        let took = start.elapsed();
        if took >= opts.batch / 4 {
            let per = took.as_secs_f64() / n as f64;
            n = ((opts.batch.as_secs_f64() / per) as u64).max(1);
            break;
        }
        n *= 4;
    }
    let mut samples: Vec<f64> = (0..opts.batches)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..n {
                once();
            }
            start.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Which host of a table a hit targets.
#[derive(Clone, Copy)]
enum Position {
    First,
    Middle,
    Last,
}

/// The host of a `hosts`-host mixed table at `position` among the hosts of `kind`.
fn host_at(hosts: usize, kind: HostKind, position: Position) -> usize {
    let of_kind: Vec<usize> = (0..hosts).filter(|&i| mixed(i) == kind).collect();
    assert!(!of_kind.is_empty(), "a {hosts}-host table has both kinds");
    match position {
        Position::First => of_kind[0],
        Position::Middle => of_kind[of_kind.len() / 2],
        Position::Last => of_kind[of_kind.len() - 1],
    }
}

fn main() {
    let opts = parse_options();
    let sizes = [100, 1_000];
    let small_exact = snapshot(1, |_| HostKind::Exact);
    let small_suffix = snapshot(1, |_| HostKind::Suffix);
    // The first compile pays one-time initialisation; time the later ones.
    drop(compile(&small_exact));
    let (small_exact, t_small) = compile(&small_exact);
    let (small_suffix, _) = compile(&small_suffix);
    let mixed_tables: Vec<(usize, Router, Duration)> = sizes
        .iter()
        .map(|&hosts| {
            let (router, took) = compile(&snapshot(hosts, mixed));
            (hosts, router, took)
        })
        .collect();

    println!(
        "Route matching: ns per Router::route call, median of {} batches of ~{} ms",
        opts.batches,
        opts.batch.as_millis()
    );
    println!(
        "tables: {ROUTES_PER_HOST} routes over 1 host (exact, or suffix; compiled in {:.2} ms); \
         then {ROUTES_PER_HOST} routes per host over",
        t_small.as_secs_f64() * 1e3
    );
    for (hosts, _, took) in &mixed_tables {
        println!(
            "  {hosts} hosts, 1 in 5 a suffix host: {} routes, compiled in {:.1} ms",
            hosts * ROUTES_PER_HOST,
            took.as_secs_f64() * 1e3
        );
    }
    println!(
        "every hit passes 6 routes (one header check) and matches the 7th; the 1-host suffix \
         table has no exact host, so it skips the exact-host probe the mixed tables make\n"
    );
    println!(
        "{:<26} {:>10} {:>13} {:>14} {:>11}",
        "case", "10 routes", "1,000 routes", "10,000 routes", "10,000/10"
    );
    let mut rows: Vec<(String, &Router, Case, Vec<Case>)> = Vec::new();
    for (kind, kind_name, small) in [
        (HostKind::Exact, "exact", &small_exact),
        (HostKind::Suffix, "suffix", &small_suffix),
    ] {
        for (position, pos_name) in [
            (Position::First, "first"),
            (Position::Middle, "middle"),
            (Position::Last, "last"),
        ] {
            let label = format!("hit, {kind_name} host, {pos_name}");
            let cases = mixed_tables
                .iter()
                .map(|(hosts, _, _)| hit(&label, host_at(*hosts, kind, position), kind))
                .collect();
            rows.push((label.clone(), small, hit(&label, 0, kind), cases));
        }
    }
    rows.push((
        "miss (unknown host)".into(),
        &small_exact,
        miss(),
        mixed_tables.iter().map(|_| miss()).collect(),
    ));

    let mut worst: f64 = 0.0;
    for (label, small, small_case, cases) in &rows {
        let s = measure(small, small_case, &opts);
        let t: Vec<f64> = mixed_tables
            .iter()
            .zip(cases)
            .map(|((_, router, _), case)| measure(router, case, &opts))
            .collect();
        let largest = t.last().copied().unwrap_or(s);
        let ratio = largest / s;
        worst = worst.max(ratio);
        println!(
            "{label:<26} {s:>7.1} ns {:>10.1} ns {:>11.1} ns {ratio:>10.2}×",
            t[0], t[1]
        );
    }
    println!("\nworst ratio 10,000 routes / 10 routes: {worst:.2}×");
}

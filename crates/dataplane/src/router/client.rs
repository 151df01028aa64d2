//! Per-client policies of a route: access control by client address, request rates and
//! concurrency per client address (in shared, named zones), and the request body limit.
//!
//! Compiled once per config update. A route without any of them pays nothing: the policy is
//! part of the route's [`RouteFilters`](super::RouteFilters), absent for most routes. Zones
//! keep their counters across config updates while their limits stay the same, so a config
//! push does not hand every client a fresh allowance.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bowline_model::ir;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::StatusCode;
use ipnet::IpNet;

use super::CompileError;
use crate::proxy::edge::{canonical, parse_trusted};

/// Rate-limit checks between two sweeps of idle client entries.
const SWEEP_EVERY: u32 = 4096;

type KeyedLimiter = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>;

/// The client policies of one route.
#[derive(Debug, Default)]
pub struct ClientPolicy {
    access: Option<AccessList>,
    limits: Option<ZoneLimits>,
    /// `Some(0)`: no limit.
    pub(super) max_body: Option<u64>,
}

#[derive(Debug)]
struct AccessList {
    allow: Box<[IpNet]>,
    deny: Box<[IpNet]>,
}

/// A route's use of a zone.
#[derive(Debug)]
struct ZoneLimits {
    zone: Arc<Zone>,
    exempt: Box<[IpNet]>,
    status: StatusCode,
}

/// Counters shared by the routes that name the same zone.
#[derive(Debug)]
pub struct Zone {
    name: String,
    /// What the zone was compiled from: a zone whose limits change starts afresh.
    spec: (Vec<ir::RateLimit>, Option<u32>),
    rates: Box<[KeyedLimiter]>,
    max_concurrent: Option<u32>,
    in_flight: Mutex<HashMap<IpAddr, u32>>,
    checks: AtomicU32,
}

/// Zones by name: the previous router's (to keep counters) and this compile's.
#[derive(Debug)]
pub struct Zones<'a> {
    pub previous: Option<&'a HashMap<String, Arc<Zone>>>,
    pub next: HashMap<String, Arc<Zone>>,
}

/// Why a client's request is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client address is not allowed.
    Denied,
    /// A request rate of the zone is exceeded; retry after this long.
    Rate {
        zone: String,
        status: StatusCode,
        retry_after: Duration,
    },
    /// The client has too many requests in flight in the zone.
    Concurrency {
        zone: String,
        status: StatusCode,
        limit: u32,
    },
}

/// A request in flight, counted in its zone until dropped (when the response has ended).
#[derive(Debug)]
pub struct ClientSlot {
    zone: Arc<Zone>,
    client: IpAddr,
}

// === impl ClientPolicy ===

impl ClientPolicy {
    /// The route's client policy, or `None` when it has none.
    pub(super) fn compile(
        r: &ir::Route,
        zones: &mut Zones<'_>,
        err: &dyn Fn(&str, String) -> CompileError,
    ) -> Result<Option<ClientPolicy>, CompileError> {
        if r.access.is_none() && r.client_limits.is_none() && r.max_request_body_bytes.is_none() {
            return Ok(None);
        }
        let access = r
            .access
            .as_deref()
            .map(|a| {
                Ok::<_, CompileError>(AccessList {
                    allow: nets(&a.allow, "access.allow", err)?,
                    deny: nets(&a.deny, "access.deny", err)?,
                })
            })
            .transpose()?;
        let limits = r
            .client_limits
            .as_deref()
            .map(|l| ZoneLimits::compile(l, zones, err))
            .transpose()?;
        Ok(Some(ClientPolicy {
            access,
            limits,
            max_body: r.max_request_body_bytes,
        }))
    }

    /// Whether this policy needs the client's address.
    pub(super) fn needs_client(&self) -> bool {
        self.access.is_some() || self.limits.is_some()
    }

    /// Checks `client` against the access list and the zone's limits. A request admitted by a
    /// zone with a concurrency limit holds a slot in it.
    pub(super) fn admit(&self, client: IpAddr, slots: &mut Vec<ClientSlot>) -> Result<(), Refusal> {
        if let Some(a) = &self.access {
            a.check(client)?;
        }
        if let Some(l) = &self.limits
            && !l.exempt.iter().any(|n| n.contains(&client))
        {
            l.zone.admit(client, l.status, slots)?;
        }
        Ok(())
    }
}

fn nets(
    list: &[String],
    at: &str,
    err: &dyn Fn(&str, String) -> CompileError,
) -> Result<Box<[IpNet]>, CompileError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| parse_trusted(s).map_err(|e| err(&format!("{at}[{i}]"), e)))
        .collect()
}

// === impl AccessList ===

impl AccessList {
    fn check(&self, client: IpAddr) -> Result<(), Refusal> {
        if self.deny.iter().any(|n| n.contains(&client)) {
            return Err(Refusal::Denied);
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&client)) {
            return Err(Refusal::Denied);
        }
        Ok(())
    }
}

// === impl ZoneLimits ===

impl ZoneLimits {
    fn compile(
        l: &ir::ClientLimits,
        zones: &mut Zones<'_>,
        err: &dyn Fn(&str, String) -> CompileError,
    ) -> Result<ZoneLimits, CompileError> {
        if l.zone.is_empty() {
            return Err(err("clientLimits.zone", "must not be empty".into()));
        }
        if l.rates.is_empty() && l.max_concurrent.is_none() {
            return Err(err(
                "clientLimits",
                "sets neither rates nor maxConcurrent".into(),
            ));
        }
        let status = StatusCode::from_u16(l.status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .ok_or_else(|| {
                err(
                    "clientLimits.status",
                    format!("{} is not an HTTP error status (400..=599)", l.status),
                )
            })?;
        let spec = (l.rates.clone(), l.max_concurrent);
        let zone = match zones.next.entry(l.zone.clone()) {
            Entry::Occupied(z) => {
                if z.get().spec != spec {
                    return Err(err(
                        "clientLimits",
                        format!(
                            "zone {:?} is used by another route with different rates or \
                             maxConcurrent",
                            l.zone
                        ),
                    ));
                }
                z.get().clone()
            }
            Entry::Vacant(v) => {
                let kept = zones
                    .previous
                    .and_then(|p| p.get(&l.zone))
                    .filter(|z| z.spec == spec)
                    .cloned();
                let zone = match kept {
                    Some(z) => z,
                    None => Arc::new(Zone::new(&l.zone, spec, err)?),
                };
                v.insert(zone).clone()
            }
        };
        Ok(ZoneLimits {
            zone,
            exempt: nets(&l.exempt, "clientLimits.exempt", err)?,
            status,
        })
    }
}

// === impl Zone ===

impl Zone {
    fn new(
        name: &str,
        spec: (Vec<ir::RateLimit>, Option<u32>),
        err: &dyn Fn(&str, String) -> CompileError,
    ) -> Result<Zone, CompileError> {
        let mut rates = Vec::with_capacity(spec.0.len());
        for (i, r) in spec.0.iter().enumerate() {
            let at = format!("clientLimits.rates[{i}]");
            if r.requests == 0 {
                return Err(err(&format!("{at}.requests"), "must be at least 1".into()));
            }
            if r.period_seconds == 0 {
                return Err(err(
                    &format!("{at}.periodSeconds"),
                    "must be at least 1".into(),
                ));
            }
            // One request every period / requests, and `burst` more at once (nginx's
            // `limit_req burst=N nodelay`): a bucket of burst + 1.
            let interval = Duration::from_secs(u64::from(r.period_seconds)) / r.requests;
            let capacity = NonZeroU32::new(r.burst.saturating_add(1)).expect("at least 1");
            let quota = Quota::with_period(interval)
                .ok_or_else(|| err(&at, "the interval between requests is zero".into()))?
                .allow_burst(capacity);
            rates.push(RateLimiter::keyed(quota));
        }
        if spec.1 == Some(0) {
            return Err(err(
                "clientLimits.maxConcurrent",
                "must be at least 1".into(),
            ));
        }
        Ok(Zone {
            name: name.to_string(),
            max_concurrent: spec.1,
            spec,
            rates: rates.into(),
            in_flight: Mutex::default(),
            checks: AtomicU32::new(0),
        })
    }

    fn admit(
        self: &Arc<Self>,
        client: IpAddr,
        status: StatusCode,
        slots: &mut Vec<ClientSlot>,
    ) -> Result<(), Refusal> {
        if !self.rates.is_empty() {
            if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
                for r in self.rates.iter() {
                    r.retain_recent();
                    r.shrink_to_fit();
                }
            }
            for r in self.rates.iter() {
                if let Err(not_until) = r.check_key(&client) {
                    let now = DefaultClock::default().now();
                    return Err(Refusal::Rate {
                        zone: self.name.clone(),
                        status,
                        retry_after: not_until.wait_time_from(now),
                    });
                }
            }
        }
        if let Some(limit) = self.max_concurrent {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            let n = in_flight.entry(client).or_insert(0);
            if *n >= limit {
                if *n == 0 {
                    in_flight.remove(&client);
                }
                return Err(Refusal::Concurrency {
                    zone: self.name.clone(),
                    status,
                    limit,
                });
            }
            *n += 1;
            slots.push(ClientSlot {
                zone: self.clone(),
                client,
            });
        }
        Ok(())
    }

    /// Clients with requests in flight (for tests).
    #[cfg(test)]
    fn in_flight(&self, client: IpAddr) -> u32 {
        let map = self.in_flight.lock().unwrap();
        map.get(&client).copied().unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut in_flight = self
            .zone
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Entry::Occupied(mut e) = in_flight.entry(self.client) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// The address a client policy judges: the peer, or, when the peer is a trusted proxy, the
/// last `X-Forwarded-For` entry that is not itself a trusted proxy (nginx's
/// `real_ip_recursive on`); the first entry when every one is trusted.
pub fn client_address(
    peer: IpAddr,
    headers: &http::HeaderMap,
    trusts: impl Fn(IpAddr) -> bool,
) -> IpAddr {
    let peer = canonical(peer);
    if !trusts(peer) {
        return peer;
    }
    let mut client = peer;
    let values = headers
        .get_all(&crate::proxy::edge::X_FORWARDED_FOR)
        .iter()
        .rev();
    for v in values {
        let Ok(v) = v.to_str() else { return client };
        for entry in v.rsplit(',') {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                return client;
            };
            client = canonical(ip);
            if !trusts(client) {
                return client;
            }
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(path: &str, reason: String) -> CompileError {
        CompileError {
            resource: "routeTable/t".into(),
            path: path.into(),
            reason,
        }
    }

    fn route(access: Option<ir::ClientAccess>, limits: Option<ir::ClientLimits>) -> ir::Route {
        let mut r = ir::Route::new(
            "r",
            ir::RouteMatch::default(),
            ir::RouteAction::DirectResponse(ir::DirectResponse {
                status: 200,
                body: String::new(),
            }),
        );
        r.access = access.map(Box::new);
        r.client_limits = limits.map(Box::new);
        r
    }

    fn limits(zone: &str, rates: Vec<ir::RateLimit>, max: Option<u32>) -> ir::ClientLimits {
        ir::ClientLimits {
            zone: zone.into(),
            rates,
            max_concurrent: max,
            exempt: vec![],
            status: 503,
        }
    }

    fn compile(r: &ir::Route, zones: &mut Zones<'_>) -> Result<ClientPolicy, CompileError> {
        ClientPolicy::compile(r, zones, &err).map(|p| p.expect("a policy"))
    }

    fn fresh() -> Zones<'static> {
        Zones {
            previous: None,
            next: HashMap::new(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn deny_wins_then_allow_must_match() {
        let r = route(
            Some(ir::ClientAccess {
                allow: vec!["10.0.0.0/8".into(), "192.168.1.7".into()],
                deny: vec!["10.9.0.0/16".into()],
            }),
            None,
        );
        let p = compile(&r, &mut fresh()).unwrap();
        let mut slots = Vec::new();
        assert_eq!(p.admit(ip("10.1.2.3"), &mut slots), Ok(()));
        assert_eq!(p.admit(ip("192.168.1.7"), &mut slots), Ok(()));
        assert_eq!(p.admit(ip("10.9.1.1"), &mut slots), Err(Refusal::Denied));
        assert_eq!(p.admit(ip("172.16.0.1"), &mut slots), Err(Refusal::Denied));
        assert!(slots.is_empty());
    }

    #[test]
    fn bad_ranges_name_the_field() {
        let r = route(
            Some(ir::ClientAccess {
                allow: vec![],
                deny: vec!["10.0.0.0/8".into(), "10.0.0.300".into()],
            }),
            None,
        );
        let e = compile(&r, &mut fresh()).unwrap_err();
        assert_eq!(e.path, "access.deny[1]");
        assert!(e.reason.contains("10.0.0.300"), "{e}");
    }

    #[test]
    fn rate_allows_the_burst_then_refuses_with_retry_after() {
        let rate = ir::RateLimit {
            requests: 1,
            period_seconds: 60,
            burst: 4,
        };
        let r = route(None, Some(limits("z", vec![rate], None)));
        let p = compile(&r, &mut fresh()).unwrap();
        let mut slots = Vec::new();
        for _ in 0..5 {
            assert_eq!(p.admit(ip("10.0.0.1"), &mut slots), Ok(()));
        }
        match p.admit(ip("10.0.0.1"), &mut slots) {
            Err(Refusal::Rate {
                zone,
                status,
                retry_after,
            }) => {
                assert_eq!(zone, "z");
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
                assert!(retry_after > Duration::from_secs(50), "{retry_after:?}");
            }
            other => panic!("{other:?}"),
        }
        // Another client has its own allowance.
        assert_eq!(p.admit(ip("10.0.0.2"), &mut slots), Ok(()));
    }

    #[test]
    fn concurrency_counts_until_the_slot_is_dropped() {
        let r = route(None, Some(limits("z", vec![], Some(2))));
        let p = compile(&r, &mut fresh()).unwrap();
        let c = ip("10.0.0.1");
        let mut held = Vec::new();
        assert_eq!(p.admit(c, &mut held), Ok(()));
        assert_eq!(p.admit(c, &mut held), Ok(()));
        let mut more = Vec::new();
        assert!(matches!(
            p.admit(c, &mut more),
            Err(Refusal::Concurrency { limit: 2, .. })
        ));
        assert!(more.is_empty());
        let zone = p.limits.as_ref().unwrap().zone.clone();
        assert_eq!(zone.in_flight(c), 2);
        held.pop();
        assert_eq!(zone.in_flight(c), 1);
        assert_eq!(p.admit(c, &mut more), Ok(()));
        drop(held);
        drop(more);
        assert_eq!(zone.in_flight(c), 0);
        assert!(zone.in_flight.lock().unwrap().is_empty());
    }

    #[test]
    fn exempt_clients_are_not_counted() {
        let mut l = limits("z", vec![], Some(1));
        l.exempt = vec!["127.0.0.0/8".into()];
        let p = compile(&route(None, Some(l)), &mut fresh()).unwrap();
        let mut slots = Vec::new();
        for _ in 0..3 {
            assert_eq!(p.admit(ip("127.0.0.1"), &mut slots), Ok(()));
        }
        assert!(slots.is_empty());
    }

    #[test]
    fn routes_of_a_zone_share_counters_and_updates_keep_them() {
        let rate = ir::RateLimit {
            requests: 1,
            period_seconds: 3600,
            burst: 0,
        };
        let r = route(
            None,
            Some(limits("ingress/shop/web", vec![rate.clone()], None)),
        );
        let mut zones = fresh();
        let a = compile(&r, &mut zones).unwrap();
        let b = compile(&r, &mut zones).unwrap();
        let mut slots = Vec::new();
        assert_eq!(a.admit(ip("10.0.0.1"), &mut slots), Ok(()));
        assert!(b.admit(ip("10.0.0.1"), &mut slots).is_err());

        // The next config update with the same limits keeps the counters ...
        let previous = zones.next;
        let mut next = Zones {
            previous: Some(&previous),
            next: HashMap::new(),
        };
        let c = compile(&r, &mut next).unwrap();
        assert!(c.admit(ip("10.0.0.1"), &mut slots).is_err());
        // ... and new limits start afresh.
        let mut faster = rate;
        faster.requests = 2;
        let r2 = route(None, Some(limits("ingress/shop/web", vec![faster], None)));
        let mut next = Zones {
            previous: Some(&previous),
            next: HashMap::new(),
        };
        let d = compile(&r2, &mut next).unwrap();
        assert_eq!(d.admit(ip("10.0.0.1"), &mut slots), Ok(()));
    }

    #[test]
    fn one_zone_with_two_specs_is_refused() {
        let mut zones = fresh();
        compile(&route(None, Some(limits("z", vec![], Some(1)))), &mut zones).unwrap();
        let e = compile(&route(None, Some(limits("z", vec![], Some(2)))), &mut zones).unwrap_err();
        assert_eq!(e.path, "clientLimits");
        assert!(e.reason.contains("zone \"z\""), "{e}");
    }

    #[test]
    fn invalid_limits_name_the_field() {
        let zero = ir::RateLimit {
            requests: 0,
            period_seconds: 1,
            burst: 0,
        };
        let e = compile(
            &route(None, Some(limits("z", vec![zero], None))),
            &mut fresh(),
        )
        .unwrap_err();
        assert_eq!(e.path, "clientLimits.rates[0].requests");
        let e = compile(&route(None, Some(limits("z", vec![], None))), &mut fresh()).unwrap_err();
        assert_eq!(e.path, "clientLimits");
        let mut l = limits("z", vec![], Some(1));
        l.status = 200;
        let e = compile(&route(None, Some(l)), &mut fresh()).unwrap_err();
        assert_eq!(e.path, "clientLimits.status");
    }

    #[test]
    fn client_address_walks_forwarded_for_past_trusted_proxies() {
        let trusted: IpNet = "10.0.0.0/8".parse().unwrap();
        let trusts = |ip: IpAddr| trusted.contains(&ip);
        let mut h = http::HeaderMap::new();
        h.append(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.2".parse().unwrap(),
        );
        h.append("x-forwarded-for", "10.0.0.5".parse().unwrap());
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(client_address(ip("192.0.2.1"), &h, trusts), ip("192.0.2.1"));
        // A trusted peer: the last untrusted entry.
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, trusts),
            ip("198.51.100.2")
        );
        // Every entry trusted: the first one.
        let mut all = http::HeaderMap::new();
        all.append("x-forwarded-for", "10.0.0.7, 10.0.0.8".parse().unwrap());
        assert_eq!(client_address(ip("10.0.0.1"), &all, trusts), ip("10.0.0.7"));
        // Garbage stops the walk at the last good address.
        let mut bad = http::HeaderMap::new();
        bad.append("x-forwarded-for", "nonsense, 10.0.0.9".parse().unwrap());
        assert_eq!(client_address(ip("10.0.0.1"), &bad, trusts), ip("10.0.0.9"));
        // IPv4-mapped IPv6 peers count as IPv4.
        assert_eq!(
            client_address(ip("::ffff:192.0.2.1"), &h, trusts),
            ip("192.0.2.1")
        );
    }
}

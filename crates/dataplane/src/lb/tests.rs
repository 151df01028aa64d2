//! Distribution and disruption of every policy, on fixed key sets: the statistics below are
//! computed over the same keys on every run.

use http::{HeaderMap, Uri};

use super::*;

/// Fake endpoints: availability, load and latency (nanoseconds) per index.
struct Fake {
    down: Vec<bool>,
    load: Vec<usize>,
    rtt: Vec<f64>,
}

impl Fake {
    fn up(n: usize) -> Fake {
        Fake {
            down: vec![false; n],
            load: vec![0; n],
            rtt: vec![1e6; n],
        }
    }
}

impl Endpoints for Fake {
    fn count(&self) -> usize {
        self.down.len()
    }
    fn available(&self, i: usize) -> bool {
        !self.down[i]
    }
    fn in_flight(&self, i: usize) -> usize {
        self.load[i]
    }
    fn rtt_estimate(&self, i: usize, _now_ms: u64) -> f64 {
        self.rtt[i]
    }
}

fn ids(n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| hash_bytes(format!("10.0.0.{i}:8080").as_bytes()))
        .collect()
}

/// 100,000 request keys, as hashes of user names.
fn keys() -> Vec<u64> {
    (0..100_000)
        .map(|i| hash_bytes(format!("user-{i}").as_bytes()))
        .collect()
}

fn balancer(policy: ir::LbPolicy, weights: &[u32]) -> Balancer {
    Balancer::new(policy, &ids(weights.len()), weights, None).unwrap()
}

fn counts(b: &Balancer, eps: &Fake, keys: &[u64]) -> Vec<usize> {
    let mut c = vec![0; eps.count()];
    for &k in keys {
        c[b.pick(eps, k, Tried::NONE).unwrap()] += 1;
    }
    c
}

/// Pearson's chi-square statistic of `observed` against shares proportional to `weights`.
fn chi_square(observed: &[usize], weights: &[u32]) -> f64 {
    let n: usize = observed.iter().sum();
    let total: u32 = weights.iter().sum();
    observed
        .iter()
        .zip(weights)
        .map(|(&o, &w)| {
            let e = n as f64 * f64::from(w) / f64::from(total);
            (o as f64 - e).powi(2) / e
        })
        .sum()
}

/// Largest relative deviation of each endpoint's share from its weight's share.
fn max_deviation(observed: &[usize], weights: &[u32]) -> f64 {
    let n: usize = observed.iter().sum();
    let total: u32 = weights.iter().sum();
    observed
        .iter()
        .zip(weights)
        .map(|(&o, &w)| {
            let e = n as f64 * f64::from(w) / f64::from(total);
            (o as f64 - e).abs() / e
        })
        .fold(0.0, f64::max)
}

// Critical values of the chi-square distribution at p = 0.001.
const CHI2_DF3: f64 = 16.27;
const CHI2_DF4: f64 = 18.47;

#[test]
fn random_follows_the_weights() {
    let weights = [1, 2, 3, 4];
    let b = balancer(ir::LbPolicy::Random, &weights);
    let c = counts(&b, &Fake::up(4), &keys());
    assert!(chi_square(&c, &weights) < CHI2_DF3, "{c:?}");
    let equal = [5, 5, 5, 5, 5];
    let b = balancer(ir::LbPolicy::Random, &equal);
    let c = counts(&b, &Fake::up(5), &keys());
    assert!(chi_square(&c, &equal) < CHI2_DF4, "{c:?}");
}

#[test]
fn peak_ewma_prefers_the_faster_endpoint_and_weighs_load() {
    // Equal latency and load: the weights decide.
    let weights = [1, 2, 3, 4];
    let b = balancer(ir::LbPolicy::PeakEwma, &weights);
    let c = counts(&b, &Fake::up(4), &keys());
    assert!(chi_square(&c, &weights) < CHI2_DF3, "{c:?}");

    // Endpoint 0 five times slower: it wins only when both draws land on it.
    let b = balancer(ir::LbPolicy::PeakEwma, &[1, 1]);
    let slow = Fake {
        rtt: vec![5e6, 1e6],
        ..Fake::up(2)
    };
    let c = counts(&b, &slow, &keys());
    assert!(c[1] as f64 / 100_000.0 > 0.7, "{c:?}");

    // Latency × (in flight + 1): 1 ms with 9 in flight (10) costs more than 4 ms idle (4).
    let loaded = Fake {
        rtt: vec![1e6, 4e6],
        load: vec![9, 0],
        ..Fake::up(2)
    };
    let c = counts(&b, &loaded, &keys());
    assert!(c[1] > c[0] * 2, "{c:?}");
}

#[test]
fn least_request_follows_the_weights_when_idle_and_prefers_the_least_loaded() {
    let weights = [1, 2, 3, 4];
    let b = balancer(ir::LbPolicy::LeastRequest, &weights);
    let c = counts(&b, &Fake::up(4), &keys());
    assert!(chi_square(&c, &weights) < CHI2_DF3, "{c:?}");

    // Equal weights, endpoint 0 busy: it wins only when both draws land on it.
    let b = balancer(ir::LbPolicy::LeastRequest, &[1, 1]);
    let busy = Fake {
        load: vec![10, 0],
        ..Fake::up(2)
    };
    let c = counts(&b, &busy, &keys());
    assert!(c[1] as f64 / 100_000.0 > 0.85, "{c:?}");

    // Load is compared per unit of weight: 10 in flight on weight 10 is lighter than 2 on 1.
    let b = balancer(ir::LbPolicy::LeastRequest, &[10, 1]);
    let weighted = Fake {
        load: vec![10, 2],
        ..Fake::up(2)
    };
    let c = counts(&b, &weighted, &keys());
    assert!(c[0] > c[1] * 10, "{c:?}");
}

#[test]
fn ring_hash_shares_follow_the_weights() {
    let equal = [1; 8];
    let c = counts(
        &balancer(ir::LbPolicy::RingHash, &equal),
        &Fake::up(8),
        &keys(),
    );
    assert!(max_deviation(&c, &equal) < 0.15, "{c:?}");
    // A ring is as even as its points are many (here 256 and 768): within 15 %, where Maglev is
    // within 3 %.
    let weights = [1, 3];
    let c = counts(
        &balancer(ir::LbPolicy::RingHash, &weights),
        &Fake::up(2),
        &keys(),
    );
    assert!(max_deviation(&c, &weights) < 0.15, "{c:?}");
}

#[test]
fn maglev_is_nearly_even_and_follows_the_weights() {
    let equal = [1; 8];
    let c = counts(
        &balancer(ir::LbPolicy::Maglev, &equal),
        &Fake::up(8),
        &keys(),
    );
    assert!(chi_square(&c, &equal) < 24.32, "df 7: {c:?}");
    let weights = [1, 2, 3, 4];
    let c = counts(
        &balancer(ir::LbPolicy::Maglev, &weights),
        &Fake::up(4),
        &keys(),
    );
    assert!(max_deviation(&c, &weights) < 0.03, "{c:?}");
}

#[test]
fn maglev_table_is_prime_with_a_hundred_slots_per_endpoint() {
    assert_eq!(maglev::table_size(1), 65_537);
    assert_eq!(maglev::table_size(655), 65_537);
    let big = maglev::table_size(1000);
    assert!(big >= 100_000, "{big}");
    assert!((2..1000).all(|d| !big.is_multiple_of(d)), "{big} is prime");
    let m = maglev::Maglev::new(&ids(3), &[1, 1, 1]).unwrap();
    assert_eq!(m.table_len(), 65_537);
}

#[test]
fn round_robin_is_exact() {
    let b = balancer(ir::LbPolicy::RoundRobin, &[3, 1]);
    let c = counts(&b, &Fake::up(2), &keys()[..1000]);
    assert_eq!(c, [750, 250]);
}

/// Share of keys whose endpoint (by address) differs between two endpoint sets.
fn moved(policy: ir::LbPolicy, before: &[u64], after: &[u64]) -> f64 {
    let b1 = Balancer::new(policy, before, &vec![1; before.len()], None).unwrap();
    let b2 = Balancer::new(policy, after, &vec![1; after.len()], None).unwrap();
    let (f1, f2) = (Fake::up(before.len()), Fake::up(after.len()));
    let keys = keys();
    let n = keys
        .iter()
        .filter(|&&k| {
            let e1 = before[b1.pick(&f1, k, Tried::NONE).unwrap()];
            let e2 = after[b2.pick(&f2, k, Tried::NONE).unwrap()];
            e1 != e2
        })
        .count();
    n as f64 / keys.len() as f64
}

#[test]
fn hash_policies_move_few_keys_when_endpoints_change() {
    let ten = ids(10);
    let nine: Vec<u64> = ten.iter().copied().filter(|&id| id != ten[3]).collect();
    let eleven = ids(11);
    for policy in [ir::LbPolicy::RingHash, ir::LbPolicy::Maglev] {
        // Removing 1 of 10 must move about a tenth of the keys (those of the removed endpoint).
        let removed = moved(policy, &ten, &nine);
        assert!((0.05..0.13).contains(&removed), "{policy:?}: {removed}");
        // Adding an 11th moves about an eleventh.
        let added = moved(policy, &ten, &eleven);
        assert!((0.05..0.12).contains(&added), "{policy:?}: {added}");
    }
    // The ring moves exactly the removed endpoint's keys.
    let c = counts(
        &Balancer::new(ir::LbPolicy::RingHash, &ten, &[1; 10], None).unwrap(),
        &Fake::up(10),
        &keys(),
    );
    let share = c[3] as f64 / 100_000.0;
    assert!((moved(ir::LbPolicy::RingHash, &ten, &nine) - share).abs() < 1e-9);
}

#[test]
fn unavailable_endpoints_are_skipped_and_other_keys_stay() {
    for policy in [ir::LbPolicy::RingHash, ir::LbPolicy::Maglev] {
        let b = balancer(policy, &[1; 5]);
        let all = Fake::up(5);
        let mut one_down = Fake::up(5);
        one_down.down[2] = true;
        for &k in &keys()[..20_000] {
            let before = b.pick(&all, k, Tried::NONE).unwrap();
            let after = b.pick(&one_down, k, Tried::NONE).unwrap();
            assert_ne!(after, 2, "{policy:?}");
            if before != 2 {
                assert_eq!(
                    before, after,
                    "{policy:?}: a key of a healthy endpoint moved"
                );
            }
        }
    }
    for policy in [
        ir::LbPolicy::RoundRobin,
        ir::LbPolicy::Random,
        ir::LbPolicy::LeastRequest,
        ir::LbPolicy::PeakEwma,
    ] {
        let b = balancer(policy, &[1, 1, 1]);
        let mut f = Fake::up(3);
        f.down[0] = true;
        f.down[1] = true;
        let c = counts(&b, &f, &keys()[..1000]);
        assert_eq!(c, [0, 0, 1000], "{policy:?}");
    }
}

#[test]
fn panic_mode_uses_every_endpoint_when_none_is_available() {
    for policy in [
        ir::LbPolicy::RoundRobin,
        ir::LbPolicy::Random,
        ir::LbPolicy::LeastRequest,
        ir::LbPolicy::PeakEwma,
        ir::LbPolicy::RingHash,
        ir::LbPolicy::Maglev,
    ] {
        let b = balancer(policy, &[1, 1, 1]);
        let f = Fake {
            down: vec![true; 3],
            ..Fake::up(3)
        };
        let c = counts(&b, &f, &keys()[..3000]);
        assert!(c.iter().all(|&n| n > 500), "{policy:?}: {c:?}");
    }
}

#[test]
fn retries_avoid_the_endpoints_already_tried() {
    for policy in [
        ir::LbPolicy::RoundRobin,
        ir::LbPolicy::Random,
        ir::LbPolicy::LeastRequest,
        ir::LbPolicy::PeakEwma,
        ir::LbPolicy::RingHash,
        ir::LbPolicy::Maglev,
    ] {
        let b = balancer(policy, &[1, 1, 1]);
        let f = Fake::up(3);
        for &k in &keys()[..1000] {
            let first = b.pick(&f, k, Tried::NONE).unwrap();
            let mut tried = Tried::NONE;
            tried.insert(first);
            let second = b.pick(&f, k, tried).unwrap();
            assert_ne!(first, second, "{policy:?}");
            tried.insert(second);
            let third = b.pick(&f, k, tried).unwrap();
            assert!(third != first && third != second, "{policy:?}");
            // Everything tried: an available endpoint again rather than nothing.
            tried.insert(third);
            assert!(b.pick(&f, k, tried).is_some());
        }
    }
}

#[test]
fn a_single_endpoint_takes_everything() {
    for policy in [
        ir::LbPolicy::RoundRobin,
        ir::LbPolicy::Random,
        ir::LbPolicy::LeastRequest,
        ir::LbPolicy::PeakEwma,
        ir::LbPolicy::RingHash,
        ir::LbPolicy::Maglev,
    ] {
        let b = balancer(policy, &[7]);
        assert_eq!(
            counts(&b, &Fake::up(1), &keys()[..100]),
            [100],
            "{policy:?}"
        );
    }
    assert!(Balancer::new(ir::LbPolicy::Maglev, &[], &[], None).is_none());
}

// === request keys ===

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

#[test]
fn source_ip_and_header_keys_are_stable() {
    let ip = HashPolicy::compile(&ir::HashOn::SourceIp).unwrap();
    let h = headers(&[]);
    assert_eq!(
        ip.key(b"10.1.2.3", &Uri::from_static("/"), &h).hash,
        ip.key(b"10.1.2.3", &Uri::from_static("/"), &h).hash
    );
    assert_ne!(
        ip.key(b"10.1.2.3", &Uri::from_static("/"), &h).hash,
        ip.key(b"10.1.2.4", &Uri::from_static("/"), &h).hash
    );

    let user = HashPolicy::compile(&ir::HashOn::Header {
        name: "x-user".into(),
    })
    .unwrap();
    let alice = headers(&[("x-user", "alice")]);
    assert_eq!(
        user.key(b"1.1.1.1", &Uri::from_static("/"), &alice).hash,
        user.key(b"2.2.2.2", &Uri::from_static("/"), &alice).hash
    );
    // Without the header: a random key each time.
    let seen: std::collections::HashSet<u64> = (0..10)
        .map(|_| user.key(b"1.1.1.1", &Uri::from_static("/"), &h).hash)
        .collect();
    assert_eq!(seen.len(), 10);
}

#[test]
fn sticky_cookies_are_set_once_and_then_followed() {
    let policy = HashPolicy::compile(&ir::HashOn::Cookie {
        name: "sticky".into(),
        ttl_seconds: 3600,
        path: Some("/shop".into()),
        domain: None,
        secure: false,
        same_site: None,
    })
    .unwrap();
    let first = policy.key(b"1.1.1.1", &Uri::from_static("/"), &headers(&[]));
    let set = first.set_cookie.expect("a new session sets the cookie");
    let set = set.to_str().unwrap();
    let (pair, attributes) = set.split_once(';').unwrap();
    assert_eq!(attributes, " Path=/shop; Max-Age=3600; HttpOnly");
    let value = pair.strip_prefix("sticky=").unwrap();
    assert_eq!(value.len(), 16);

    // The next request carries it (among other cookies) and hashes as the first did.
    let cookie = format!("a=1; sticky={value}; b=2");
    let next = policy.key(
        b"9.9.9.9",
        &Uri::from_static("/"),
        &headers(&[("cookie", &cookie)]),
    );
    assert_eq!(next.hash, first.hash);
    assert!(next.set_cookie.is_none());

    // Session cookie without a path.
    let session = HashPolicy::compile(&ir::HashOn::Cookie {
        name: "s".into(),
        ttl_seconds: 0,
        path: None,
        domain: None,
        secure: false,
        same_site: None,
    })
    .unwrap();
    let set = session
        .key(b"1.1.1.1", &Uri::from_static("/"), &headers(&[]))
        .set_cookie
        .unwrap();
    assert!(set.to_str().unwrap().ends_with("; HttpOnly"));
    assert!(!set.to_str().unwrap().contains("Max-Age"));
}

#[test]
fn invalid_hash_keys_name_the_field() {
    let bad_header = HashPolicy::compile(&ir::HashOn::Header {
        name: "bad name".into(),
    })
    .unwrap_err();
    assert_eq!(bad_header.0, "hashOn.header.name");
    let bad_cookie = HashPolicy::compile(&ir::HashOn::Cookie {
        name: "a=b".into(),
        ttl_seconds: 0,
        path: None,
        domain: None,
        secure: false,
        same_site: None,
    })
    .unwrap_err();
    assert_eq!(bad_cookie.0, "hashOn.cookie.name");
}

#[test]
fn cookie_lookup_handles_several_headers_and_spaces() {
    let h = headers(&[("cookie", "x=1"), ("cookie", " sid = nope ;sid=42")]);
    assert_eq!(cookie(&h, "sid"), Some("42"));
    assert_eq!(cookie(&h, "x"), Some("1"));
    assert_eq!(cookie(&h, "missing"), None);
}

#[test]
fn random_draws_are_uniform_enough() {
    let mut buckets = [0usize; 4];
    for _ in 0..40_000 {
        buckets[below(random_u64(), 4) as usize] += 1;
    }
    // 20 standard deviations either way: this draws from the thread's generator, so only a
    // broken generator fails it.
    assert!(
        buckets.iter().all(|&b| (8_000..12_000).contains(&b)),
        "{buckets:?}"
    );
}

#[test]
fn template_keys_hash_the_parts_of_the_request() {
    let host_uri = HashPolicy::compile(&ir::HashOn::Template {
        parts: vec![ir::HashPart::Host, ir::HashPart::RequestUri],
    })
    .unwrap();
    let key = |p: &HashPolicy, uri: &'static str, h: &[(&str, &str)]| {
        p.key(b"1.1.1.1", &Uri::from_static(uri), &headers(h)).hash
    };
    let shop = [("host", "Shop.Example:8080")];
    assert_eq!(
        key(&host_uri, "/a?x=1", &shop),
        key(&host_uri, "/a?x=1", &[("host", "shop.example")])
    );
    assert_ne!(
        key(&host_uri, "/a?x=1", &shop),
        key(&host_uri, "/a?x=2", &shop)
    );
    assert_ne!(
        key(&host_uri, "/a", &shop),
        key(&host_uri, "/a", &[("host", "other")])
    );

    let by_param = HashPolicy::compile(&ir::HashOn::Template {
        parts: vec![
            ir::HashPart::Literal("user:".into()),
            ir::HashPart::QueryParam("user".into()),
            ir::HashPart::Cookie("tenant".into()),
        ],
    })
    .unwrap();
    assert_eq!(
        key(&by_param, "/x?user=ann&y=1", &[("cookie", "tenant=t1")]),
        key(
            &by_param,
            "/other?y=2&user=ann",
            &[("cookie", "a=b; tenant=t1")]
        )
    );
    assert_ne!(
        key(&by_param, "/x?user=ann", &[("cookie", "tenant=t1")]),
        key(&by_param, "/x?user=bob", &[("cookie", "tenant=t1")])
    );

    // A template that is empty for a request spreads it at random.
    let uri_only = HashPolicy::compile(&ir::HashOn::Template {
        parts: vec![ir::HashPart::Header("x-user".into())],
    })
    .unwrap();
    let spread: std::collections::HashSet<u64> =
        (0..10).map(|_| key(&uri_only, "/", &[])).collect();
    assert!(spread.len() > 1);
    assert!(HashPolicy::compile(&ir::HashOn::Template { parts: vec![] }).is_err());
}

#[test]
fn sticky_cookie_attributes_domain_secure_and_same_site() {
    let policy = HashPolicy::compile(&ir::HashOn::Cookie {
        name: "route".into(),
        ttl_seconds: 60,
        path: Some("/".into()),
        domain: Some(".shop.example".into()),
        secure: true,
        same_site: Some("None".into()),
    })
    .unwrap();
    let set = policy
        .key(b"1.1.1.1", &Uri::from_static("/"), &headers(&[]))
        .set_cookie
        .unwrap();
    let (_, attributes) = set.to_str().unwrap().split_once(';').unwrap();
    assert_eq!(
        attributes,
        " Path=/; Domain=.shop.example; Max-Age=60; HttpOnly; Secure; SameSite=None"
    );
    let bad = |domain: Option<&str>, same_site: Option<&str>| {
        HashPolicy::compile(&ir::HashOn::Cookie {
            name: "route".into(),
            ttl_seconds: 0,
            path: None,
            domain: domain.map(Into::into),
            secure: false,
            same_site: same_site.map(Into::into),
        })
        .unwrap_err()
        .0
    };
    assert_eq!(bad(Some("a;b"), None), "hashOn.cookie.domain");
    assert_eq!(bad(None, Some("lax")), "hashOn.cookie.sameSite");
}

//! Virtual host selection: exact host (case-insensitive hash lookup), then the longest matching
//! suffix, then the first "any" host. Among equals, the virtual host listed first wins.

use std::collections::HashMap;

use bowline_model::ir;

#[derive(Debug, Default)]
pub(super) struct HostMap {
    /// Lower-case host → virtual host index.
    exact: HashMap<Box<str>, usize>,
    /// Lower-case suffix → virtual host index, longest suffix first.
    suffixes: Vec<(Box<str>, usize)>,
    any: Option<usize>,
}

/// Hosts longer than this are lower-cased on the heap instead of on the stack.
const STACK_HOST: usize = 256;

impl HostMap {
    pub(super) fn new<'a>(vhosts: impl Iterator<Item = &'a [ir::HostMatch]>) -> Self {
        let mut map = HostMap::default();
        for (i, hosts) in vhosts.enumerate() {
            for h in hosts {
                match h {
                    ir::HostMatch::Any => {
                        map.any.get_or_insert(i);
                    }
                    ir::HostMatch::Exact(host) => {
                        map.exact.entry(normalize(host).into()).or_insert(i);
                    }
                    ir::HostMatch::Suffix(suffix) => {
                        let s = suffix.strip_prefix('*').unwrap_or(suffix);
                        map.suffixes.push((s.to_ascii_lowercase().into(), i));
                    }
                }
            }
        }
        // Stable: equal lengths keep the order of the virtual hosts.
        map.suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        map
    }

    /// The virtual host for a request host (port already removed).
    pub(super) fn find(&self, host: &str) -> Option<usize> {
        if !self.exact.is_empty() {
            let found = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                if host.len() <= STACK_HOST {
                    let mut buf = [0u8; STACK_HOST];
                    let lower = &mut buf[..host.len()];
                    lower.copy_from_slice(host.as_bytes());
                    lower.make_ascii_lowercase();
                    // ASCII lower-casing keeps UTF-8 valid.
                    std::str::from_utf8(lower)
                        .ok()
                        .and_then(|h| self.exact.get(h))
                        .copied()
                } else {
                    self.exact.get(host.to_ascii_lowercase().as_str()).copied()
                }
            } else {
                self.exact.get(host).copied()
            };
            if found.is_some() {
                return found;
            }
        }
        let h = host.as_bytes();
        for (suffix, i) in &self.suffixes {
            let s = suffix.as_bytes();
            if h.len() >= s.len() && h[h.len() - s.len()..].eq_ignore_ascii_case(s) {
                return Some(*i);
            }
        }
        self.any
    }
}

fn normalize(host: &str) -> String {
    strip_port(host).to_ascii_lowercase()
}

/// The host of a `Host` header or `:authority`, without port or trailing dot.
pub fn strip_port(authority: &str) -> &str {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        // IPv6 literal: keep the brackets.
        match rest.find(']') {
            Some(end) => &authority[..end + 2],
            None => authority,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

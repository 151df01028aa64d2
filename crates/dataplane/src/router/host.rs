//! Virtual host selection: exact host (case-insensitive hash lookup), then a one-label wildcard
//! (the Ingress `*.example.com`: a hash lookup of the host without its first label), then the
//! longest matching suffix, then the first "any" host. Among equals, the virtual host listed first wins.
//!
//! Suffixes live in a trie keyed by their reversed, lower-cased bytes: a lookup walks the host
//! once from its end, so it costs the same with one suffix or thousands. Suffixes match
//! character-wise (App Mesh's `suffix`); a Gateway API wildcard `*.example.com` arrives as the
//! suffix `.example.com` and so matches one or more labels before `example.com`, never
//! `example.com` itself.

use std::collections::HashMap;

use bowline_model::ir;

use super::trie::{ByteTrie, TrieBuilder};

#[derive(Debug, Default)]
pub(super) struct HostMap {
    /// Lower-case host → virtual host index.
    exact: HashMap<Box<str>, usize>,
    /// Reversed lower-case suffix → virtual host index.
    suffixes: Option<ByteTrie<Option<usize>>>,
    /// Lower-case domain of a one-label wildcard → virtual host index.
    wildcards: HashMap<Box<str>, usize>,
    any: Option<usize>,
}

/// Hosts longer than this are lower-cased on the heap instead of on the stack.
const STACK_HOST: usize = 256;

impl HostMap {
    pub(super) fn new<'a>(vhosts: impl Iterator<Item = &'a [ir::HostMatch]>) -> Self {
        let mut map = HostMap::default();
        let mut suffixes = TrieBuilder::<Option<usize>>::new();
        let mut any_suffix = false;
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
                        let key: Vec<u8> =
                            s.bytes().rev().map(|b| b.to_ascii_lowercase()).collect();
                        // Equal suffixes: the virtual host listed first wins.
                        suffixes.entry(&key).get_or_insert(i);
                        any_suffix = true;
                    }
                    ir::HostMatch::Wildcard(domain) => {
                        let d = domain.strip_prefix("*.").unwrap_or(domain);
                        map.wildcards.entry(normalize(d).into()).or_insert(i);
                    }
                }
            }
        }
        map.suffixes = any_suffix.then(|| suffixes.build());
        map
    }

    /// The virtual host for a request host (port already removed).
    pub(super) fn find(&self, host: &str) -> Option<usize> {
        if !self.exact.is_empty() {
            let found = get_lower(&self.exact, host);
            if found.is_some() {
                return found;
            }
        }
        if !self.wildcards.is_empty()
            && let Some(found) = self.find_wildcard(host)
        {
            return Some(found);
        }
        if let Some(trie) = &self.suffixes {
            let h = host.as_bytes();
            let mut longest = None;
            trie.walk(
                h.len(),
                |i| h[h.len() - 1 - i].to_ascii_lowercase(),
                |v, _| {
                    if v.is_some() {
                        longest = *v;
                    }
                },
            );
            if longest.is_some() {
                return longest;
            }
        }
        self.any
    }
}

impl HostMap {
    /// The virtual host of a one-label wildcard: the host without its first label, looked up.
    fn find_wildcard(&self, host: &str) -> Option<usize> {
        let (label, domain) = host.split_once('.')?;
        if label.is_empty() {
            return None;
        }
        get_lower(&self.wildcards, domain)
    }
}

/// Looks `key` up lower-cased: as is when it has no upper-case letter, else lower-cased on the
/// stack (on the heap beyond [`STACK_HOST`] bytes).
fn get_lower(map: &HashMap<Box<str>, usize>, key: &str) -> Option<usize> {
    if !key.bytes().any(|b| b.is_ascii_uppercase()) {
        return map.get(key).copied();
    }
    if key.len() <= STACK_HOST {
        let mut buf = [0u8; STACK_HOST];
        let lower = &mut buf[..key.len()];
        lower.copy_from_slice(key.as_bytes());
        lower.make_ascii_lowercase();
        // ASCII lower-casing keeps UTF-8 valid.
        std::str::from_utf8(lower)
            .ok()
            .and_then(|k| map.get(k))
            .copied()
    } else {
        map.get(key.to_ascii_lowercase().as_str()).copied()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matches_exactly_one_label_after_exact_hosts() {
        let vhosts = [
            vec![ir::HostMatch::Wildcard("foo.com".into())],
            vec![ir::HostMatch::Exact("bar.foo.com".into())],
            vec![ir::HostMatch::Suffix(".foo.com".into())],
            vec![ir::HostMatch::Any],
        ];
        let map = HostMap::new(vhosts.iter().map(Vec::as_slice));
        assert_eq!(map.find("baz.foo.com"), Some(0));
        assert_eq!(map.find("BAZ.Foo.COM"), Some(0));
        assert_eq!(map.find("bar.foo.com"), Some(1));
        assert_eq!(map.find("a.b.foo.com"), Some(2));
        assert_eq!(map.find("foo.com"), Some(3));
        assert_eq!(map.find(".foo.com"), Some(2));
    }
}

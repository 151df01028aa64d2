//! Virtual host selection: exact host (case-insensitive hash lookup), then the longest matching
//! suffix, then the first "any" host. Among equals, the virtual host listed first wins.
//!
//! Suffixes that start with a dot (`.example.com`, from `*.example.com`) are hashed too: such a
//! suffix can only match from one of the host's dots, so trying the host's tails from its first
//! dot on finds the longest one in a few lookups however many there are. Other suffixes (any
//! string may be a suffix) are compared one by one, longest first, and only while they are longer
//! than the dotted match found.

use std::collections::HashMap;

use bowline_model::ir;

#[derive(Debug, Default)]
pub(super) struct HostMap {
    /// Lower-case host → virtual host index.
    exact: HashMap<Box<str>, usize>,
    /// Lower-case suffix starting with a dot → virtual host index.
    dotted: HashMap<Box<str>, usize>,
    /// Bit `n` set: some dotted suffix is `n` bytes long (bit 255: 255 or longer). A host's tail
    /// of a length no dotted suffix has is not hashed.
    dotted_lens: [u64; 4],
    /// The other lower-case suffixes → virtual host index, longest suffix first.
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
                        let s = s.to_ascii_lowercase();
                        if s.starts_with('.') {
                            let n = s.len().min(255);
                            map.dotted_lens[n / 64] |= 1 << (n % 64);
                            map.dotted.entry(s.into()).or_insert(i);
                        } else {
                            map.suffixes.push((s.into(), i));
                        }
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
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            if host.len() <= STACK_HOST {
                let mut buf = [0u8; STACK_HOST];
                let lower = &mut buf[..host.len()];
                lower.copy_from_slice(host.as_bytes());
                lower.make_ascii_lowercase();
                // ASCII lower-casing keeps UTF-8 valid.
                std::str::from_utf8(lower)
                    .ok()
                    .and_then(|h| self.find_lower(h))
            } else {
                self.find_lower(&host.to_ascii_lowercase())
            }
        } else {
            self.find_lower(host)
        }
    }

    /// [`HostMap::find`] for a lower-case host.
    fn find_lower(&self, host: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        // The longest dotted suffix starts at the host's first dot that has one.
        let dotted = if self.dotted.is_empty() {
            None
        } else {
            host.match_indices('.').find_map(|(at, _)| {
                let n = (host.len() - at).min(255);
                if self.dotted_lens[n / 64] & (1 << (n % 64)) == 0 {
                    return None;
                }
                self.dotted.get(&host[at..]).map(|&i| (host.len() - at, i))
            })
        };
        for (suffix, i) in &self.suffixes {
            if dotted.is_some_and(|(len, _)| suffix.len() <= len) {
                break;
            }
            if host.ends_with(&**suffix) {
                return Some(*i);
            }
        }
        dotted.map(|(_, i)| i).or(self.any)
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

    fn map(vhosts: &[&[ir::HostMatch]]) -> HostMap {
        HostMap::new(vhosts.iter().copied())
    }

    fn exact(h: &str) -> ir::HostMatch {
        ir::HostMatch::Exact(h.into())
    }

    fn suffix(s: &str) -> ir::HostMatch {
        ir::HostMatch::Suffix(s.into())
    }

    #[test]
    fn longest_suffix_wins_across_dotted_and_other_suffixes() {
        let m = map(&[
            &[suffix(".example.com")],
            &[suffix("*.api.example.com")],
            &[suffix("pi.example.com")],
            &[suffix("example.com")],
            &[suffix("-staging.example.com")],
            &[exact("api.example.com")],
            &[ir::HostMatch::Any],
        ]);
        for (host, want) in [
            ("v1.api.example.com", 1),
            ("V1.API.EXAMPLE.COM", 1),
            // "pi.example.com" (14) is longer than ".example.com" (12).
            ("xpi.example.com", 2),
            ("shop.example.com", 0),
            // Not dotted: "example.com" also matches inside a label.
            ("myexample.com", 3),
            ("example.com", 3),
            ("web-staging.example.com", 4),
            ("api.example.com", 5),
            ("example.org", 6),
            ("", 6),
        ] {
            assert_eq!(m.find(host), Some(want), "{host}");
        }
    }

    #[test]
    fn first_virtual_host_wins_among_equal_suffixes() {
        let m = map(&[
            &[suffix(".a.test"), suffix("b.test")],
            &[suffix("*.a.test"), suffix("b.test")],
        ]);
        assert_eq!(m.find("x.a.test"), Some(0));
        assert_eq!(m.find("xb.test"), Some(0));
        assert_eq!(m.find("x.c.test"), None);
    }

    #[test]
    fn many_dotted_suffixes_and_long_hosts() {
        let hosts: Vec<Vec<ir::HostMatch>> = (0..1000)
            .map(|i| vec![suffix(&format!(".tenant-{i}.example.net"))])
            .collect();
        let m = HostMap::new(hosts.iter().map(Vec::as_slice));
        assert_eq!(m.find("app.tenant-0.example.net"), Some(0));
        assert_eq!(m.find("a.b.tenant-999.example.net"), Some(999));
        assert_eq!(m.find("tenant-999.example.net"), None);
        let long = format!("{}.TENANT-7.example.net", "X".repeat(STACK_HOST));
        assert_eq!(m.find(&long), Some(7));
    }
}

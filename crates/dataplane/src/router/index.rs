//! The route index of one virtual host: which routes may match a path, in route order, without
//! trying every route.
//!
//! Routes with a prefix or exact path match go into a trie keyed by that path; routes with a
//! regex path or no path match are candidates for every request. A lookup walks the request path
//! through the trie once, collecting the (sorted) route lists of the prefixes it passes and of
//! the exact path, then tries the candidates in ascending route order, so the first route that
//! matches is the same as with a scan of the whole list: first-match-wins is preserved exactly.
//! Virtual hosts with few routes are scanned in order instead (faster than any index).

use super::trie::{ByteTrie, TrieBuilder};

/// Virtual hosts with at most this many routes are scanned in order.
pub(super) const LINEAR_MAX: usize = 8;

/// Candidate lists kept on the stack; more (a path passing more route-bearing prefixes) spill
/// to the heap.
const INLINE_LISTS: usize = 16;

/// The path key of a route, for indexing.
#[derive(Clone, Copy, Debug)]
pub(super) enum PathKey<'a> {
    Prefix(&'a str),
    Exact(&'a str),
    /// Regex or no path match: a candidate for every path.
    Any,
}

#[derive(Debug)]
pub(super) enum RouteIndex {
    Linear { len: u32 },
    Trie(Box<Indexed>),
}

#[derive(Debug)]
pub(super) struct Indexed {
    trie: ByteTrie<Lists>,
    /// Routes that are candidates for every path, ascending.
    always: Box<[u32]>,
}

/// Route indices (ascending) whose prefix or exact path ends at one trie node.
#[derive(Debug, Default)]
struct Lists {
    prefix: Vec<u32>,
    exact: Vec<u32>,
}

// === impl RouteIndex ===

impl RouteIndex {
    /// Indexes routes given in order by their path keys.
    pub(super) fn new<'a>(keys: impl ExactSizeIterator<Item = PathKey<'a>>) -> RouteIndex {
        let len = keys.len();
        if len <= LINEAR_MAX {
            return RouteIndex::Linear { len: len as u32 };
        }
        let mut trie = TrieBuilder::<Lists>::new();
        let mut always = Vec::new();
        for (i, key) in keys.enumerate() {
            let i = i as u32;
            match key {
                PathKey::Prefix(p) => trie.entry(p.as_bytes()).prefix.push(i),
                PathKey::Exact(p) => trie.entry(p.as_bytes()).exact.push(i),
                PathKey::Any => always.push(i),
            }
        }
        RouteIndex::Trie(Box::new(Indexed {
            trie: trie.build(),
            always: always.into(),
        }))
    }

    /// The first route, in order, among the candidates for `path` that `matches` accepts.
    #[inline]
    pub(super) fn find(&self, path: &str, mut matches: impl FnMut(usize) -> bool) -> Option<usize> {
        let ix = match self {
            RouteIndex::Linear { len } => return (0..*len as usize).find(|i| matches(*i)),
            RouteIndex::Trie(ix) => ix,
        };
        let mut lists = Candidates::default();
        lists.push(&ix.always);
        let bytes = path.as_bytes();
        ix.trie.walk(
            bytes.len(),
            |i| bytes[i],
            |l, whole| {
                lists.push(&l.prefix);
                if whole {
                    lists.push(&l.exact);
                }
            },
        );
        lists.first(|i| matches(i as usize)).map(|i| i as usize)
    }
}

/// Sorted candidate lists, merged on the fly.
#[derive(Default)]
struct Candidates<'a> {
    inline: [&'a [u32]; INLINE_LISTS],
    len: usize,
    spill: Vec<&'a [u32]>,
}

impl<'a> Candidates<'a> {
    #[inline]
    fn push(&mut self, list: &'a [u32]) {
        if list.is_empty() {
            return;
        }
        if self.len < INLINE_LISTS {
            self.inline[self.len] = list;
            self.len += 1;
        } else {
            self.spill.push(list);
        }
    }

    /// Tries candidates in ascending order (every route is in one list only); the first that
    /// `accept`s wins.
    fn first(mut self, mut accept: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.len == 1 {
            return self.inline[0].iter().copied().find(|i| accept(*i));
        }
        let (inline, spill) = (&mut self.inline[..self.len], &mut self.spill);
        loop {
            let mut best: Option<(&mut &'a [u32], u32)> = None;
            for list in inline.iter_mut().chain(spill.iter_mut()) {
                if let Some(&head) = list.first()
                    && best.as_ref().is_none_or(|(_, b)| head < *b)
                {
                    best = Some((list, head));
                }
            }
            let (list, head) = best?;
            *list = &list[1..];
            if accept(head) {
                return Some(head);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route for the reference scan: its key and an extra condition (an allowed path set).
    struct R {
        key: PathKey<'static>,
        /// Only paths whose length is even match (when set): a non-path condition.
        even_only: bool,
        regex: Option<regex::Regex>,
    }

    fn path_ok(r: &R, path: &str) -> bool {
        let path_ok = match r.key {
            PathKey::Prefix(p) => path.starts_with(p),
            PathKey::Exact(p) => path == p,
            PathKey::Any => r.regex.as_ref().is_none_or(|re| re.is_match(path)),
        };
        path_ok && (!r.even_only || path.len().is_multiple_of(2))
    }

    #[test]
    fn index_agrees_with_an_ordered_scan() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let segs = ["/a", "/b", "/ab", "/", "/api", "/v1", "x"];
        let path = |n: u64, next: &mut dyn FnMut() -> u64| {
            (0..n)
                .map(|_| segs[(next() % segs.len() as u64) as usize])
                .collect::<String>()
        };
        let ab = regex::Regex::new("^/a.*b$").unwrap();
        for round in 0..20 {
            let count = 5 + (next() % 200) as usize;
            let routes: Vec<R> = (0..count)
                .map(|_| {
                    let p: &'static str = Box::leak(path(next() % 4, &mut next).into_boxed_str());
                    let key = match next() % 6 {
                        0..=2 => PathKey::Prefix(p),
                        3 => PathKey::Exact(p),
                        _ => PathKey::Any,
                    };
                    let regex =
                        (matches!(key, PathKey::Any) && next() % 2 == 0).then(|| ab.clone());
                    R {
                        key,
                        even_only: next() % 3 == 0,
                        regex,
                    }
                })
                .collect();
            let index = RouteIndex::new(routes.iter().map(|r| r.key));
            assert_eq!(
                matches!(index, RouteIndex::Linear { .. }),
                count <= LINEAR_MAX
            );
            for _ in 0..300 {
                let probe = path(next() % 6, &mut next);
                let want = routes.iter().position(|r| path_ok(r, &probe));
                let got = index.find(&probe, |i| path_ok(&routes[i], &probe));
                assert_eq!(got, want, "round {round}: {probe:?}");
            }
        }
    }

    #[test]
    fn candidates_spill_past_the_inline_lists() {
        // 40 nested prefixes: a deep path passes all of them.
        let prefixes: Vec<String> = (1..=40).map(|n| "/".repeat(n)).collect();
        let keys: Vec<PathKey<'_>> = prefixes.iter().rev().map(|p| PathKey::Prefix(p)).collect();
        let index = RouteIndex::new(keys.iter().copied());
        let probe = "/".repeat(50);
        let mut tried = Vec::new();
        let got = index.find(&probe, |i| {
            tried.push(i);
            i == 39
        });
        assert_eq!(got, Some(39));
        assert_eq!(tried, (0..40).collect::<Vec<_>>(), "in route order");
    }
}

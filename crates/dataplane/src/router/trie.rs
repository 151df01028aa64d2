//! A compressed byte trie (radix tree) built once per config update. A lookup walks one key and
//! visits the value of every node whose key is a prefix of it, shortest first, so its cost
//! depends on the length of the key, not on how many keys the trie holds.
//!
//! The route index keys it by path prefixes; the host map by reversed, lower-cased host suffixes
//! (the key bytes come from a closure, so lookups never copy or allocate).

/// The finished trie: node 0 is the root (empty key).
#[derive(Debug)]
pub(super) struct ByteTrie<V> {
    nodes: Box<[Node<V>]>,
}

#[derive(Debug)]
struct Node<V> {
    /// The bytes between the parent's key and this node's key (empty for the root).
    label: Box<[u8]>,
    /// First byte of each child's label → child index, sorted by byte.
    children: Box<[(u8, u32)]>,
    value: V,
}

/// Builds a [`ByteTrie`]: every inserted key ends exactly at a node.
#[derive(Debug)]
pub(super) struct TrieBuilder<V> {
    nodes: Vec<BuildNode<V>>,
}

#[derive(Debug)]
struct BuildNode<V> {
    label: Vec<u8>,
    children: Vec<(u8, u32)>,
    value: V,
}

// === impl TrieBuilder ===

impl<V: Default> TrieBuilder<V> {
    pub(super) fn new() -> Self {
        TrieBuilder {
            nodes: vec![BuildNode {
                label: Vec::new(),
                children: Vec::new(),
                value: V::default(),
            }],
        }
    }

    /// The value of `key`'s node, created (empty) if needed.
    pub(super) fn entry(&mut self, key: &[u8]) -> &mut V {
        let mut node = 0usize;
        let mut rest = key;
        while let Some(&first) = rest.first() {
            let found = self.nodes[node]
                .children
                .iter()
                .position(|(b, _)| *b == first);
            let Some(slot) = found else {
                let child = self.push(rest.to_vec());
                self.nodes[node].children.push((first, child as u32));
                node = child;
                rest = &[];
                continue;
            };
            let child = self.nodes[node].children[slot].1 as usize;
            let label = &self.nodes[child].label;
            let common = label.iter().zip(rest).take_while(|(a, b)| a == b).count();
            if common < label.len() {
                // Split the edge: parent → mid (common part) → child (the remainder).
                let tail = self.nodes[child].label.split_off(common);
                let head = std::mem::replace(&mut self.nodes[child].label, tail);
                let mid = self.push(head);
                let child_first = self.nodes[child].label[0];
                self.nodes[mid].children.push((child_first, child as u32));
                self.nodes[node].children[slot].1 = mid as u32;
                node = mid;
            } else {
                node = child;
            }
            rest = &rest[common..];
        }
        &mut self.nodes[node].value
    }

    fn push(&mut self, label: Vec<u8>) -> usize {
        self.nodes.push(BuildNode {
            label,
            children: Vec::new(),
            value: V::default(),
        });
        self.nodes.len() - 1
    }

    pub(super) fn build(self) -> ByteTrie<V> {
        ByteTrie {
            nodes: self
                .nodes
                .into_iter()
                .map(|mut n| {
                    n.children.sort_unstable_by_key(|(b, _)| *b);
                    Node {
                        label: n.label.into(),
                        children: n.children.into(),
                        value: n.value,
                    }
                })
                .collect(),
        }
    }
}

// === impl ByteTrie ===

impl<V> ByteTrie<V> {
    /// Walks the key of `len` bytes given by `byte(i)`, calling `visit(value, whole)` for every
    /// node whose key is a prefix of it, root first; `whole` says that the node's key is the
    /// entire key.
    #[inline]
    pub(super) fn walk<'t>(
        &'t self,
        len: usize,
        byte: impl Fn(usize) -> u8,
        mut visit: impl FnMut(&'t V, bool),
    ) {
        let mut node = &self.nodes[0];
        let mut at = 0usize;
        loop {
            visit(&node.value, at == len);
            if at == len {
                return;
            }
            let first = byte(at);
            let Ok(slot) = node.children.binary_search_by_key(&first, |(b, _)| *b) else {
                return;
            };
            let child = &self.nodes[node.children[slot].1 as usize];
            let label = &child.label;
            if len - at < label.len() || !label.iter().enumerate().all(|(i, b)| byte(at + i) == *b)
            {
                return;
            }
            at += label.len();
            node = child;
        }
    }

    /// Number of nodes (for tests and sizing).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trie(keys: &[&str]) -> ByteTrie<Vec<usize>> {
        let mut b = TrieBuilder::<Vec<usize>>::new();
        for (i, k) in keys.iter().enumerate() {
            b.entry(k.as_bytes()).push(i);
        }
        b.build()
    }

    /// Keys visited for `key`, as (index of the inserted key, whole).
    fn visited(t: &ByteTrie<Vec<usize>>, key: &str) -> Vec<(usize, bool)> {
        let bytes = key.as_bytes();
        let mut out = Vec::new();
        t.walk(
            bytes.len(),
            |i| bytes[i],
            |v, whole| out.extend(v.iter().map(|i| (*i, whole))),
        );
        out
    }

    #[test]
    fn visits_every_prefix_shortest_first() {
        let keys = ["/", "/api", "/api/v1", "/apix", "/b", "", "/api/v2/users"];
        let t = trie(&keys);
        assert_eq!(
            visited(&t, "/api/v1/x"),
            [(5, false), (0, false), (1, false), (2, false)]
        );
        assert_eq!(visited(&t, "/api"), [(5, false), (0, false), (1, true)]);
        assert_eq!(
            visited(&t, "/apix"),
            [(5, false), (0, false), (1, false), (3, true)]
        );
        assert_eq!(visited(&t, "/ap"), [(5, false), (0, false)]);
        assert_eq!(visited(&t, ""), [(5, true)]);
        assert_eq!(
            visited(&t, "/api/v2/users/1"),
            [(5, false), (0, false), (1, false), (6, false)]
        );
        assert_eq!(
            visited(&t, "/api/v2/user"),
            [(5, false), (0, false), (1, false)]
        );
    }

    #[test]
    fn splits_share_nodes_and_duplicates_collect() {
        let t = trie(&["/abc", "/abd", "/abc", "/ab"]);
        // root, "/ab", "c", "d"
        assert_eq!(t.len(), 4);
        assert_eq!(visited(&t, "/abc"), [(3, false), (0, true), (2, true)]);
        assert_eq!(visited(&t, "/abd"), [(3, false), (1, true)]);
    }

    #[test]
    fn agrees_with_starts_with_on_many_keys() {
        // Deterministic pseudo-random keys over a small alphabet to force many splits.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"/ab";
        let mut gen_key = |max: u64| {
            let n = next() % max;
            (0..n)
                .map(|_| alphabet[(next() % 3) as usize] as char)
                .collect::<String>()
        };
        let keys: Vec<String> = (0..300).map(|_| gen_key(8)).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let t = trie(&refs);
        for _ in 0..500 {
            let probe = gen_key(10);
            let mut want: Vec<(usize, bool)> = keys
                .iter()
                .enumerate()
                .filter(|(_, k)| probe.starts_with(k.as_str()))
                .map(|(i, k)| (i, k.len() == probe.len()))
                .collect();
            let mut got = visited(&t, &probe);
            want.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, want, "{probe:?}");
        }
    }
}

//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted as Envoy does it: a lookup
//! table of prime size filled by each endpoint in turn along its own permutation of the slots,
//! heavier endpoints taking turns more often. A key is one table read. Permutations depend only on
//! each endpoint's identity, so a change of the endpoint set moves few keys beyond those of the
//! endpoints that changed.

use super::hash::mix;

/// Envoy's default table size: prime, enough for 655 endpoints at 100 slots each.
pub const DEFAULT_TABLE_SIZE: u64 = 65_537;

/// Slots per endpoint the table keeps at least (the paper's bound for an even spread).
const SLOTS_PER_ENDPOINT: u64 = 100;

/// Other slots tried, along a hash sequence, when the key's slot belongs to an endpoint that
/// cannot take the request.
const PROBES: u64 = 8;

#[derive(Debug)]
pub struct Maglev {
    table: Box<[u32]>,
}

impl Maglev {
    /// A table over endpoints identified by `ids` with `weights` (each at least 1). `None`
    /// without endpoints.
    pub fn new(ids: &[u64], weights: &[u32]) -> Option<Maglev> {
        let max = u64::from(weights.iter().copied().max().filter(|w| *w > 0)?);
        let size = table_size(ids.len());
        struct Entry {
            offset: u64,
            skip: u64,
            next: u64,
            weight: u64,
            target: u64,
        }
        let mut entries: Vec<Entry> = ids
            .iter()
            .zip(weights)
            .map(|(&id, &w)| Entry {
                offset: mix(id ^ 0x6d61_676c_6576_3031) % size,
                skip: mix(id ^ 0x6d61_676c_6576_3032) % (size - 1) + 1,
                next: 0,
                weight: u64::from(w.max(1)),
                target: 0,
            })
            .collect();
        let mut table = vec![u32::MAX; size as usize];
        let mut filled = 0u64;
        let mut iteration = 1u64;
        while filled < size {
            for (i, e) in entries.iter_mut().enumerate() {
                if filled == size {
                    break;
                }
                // An endpoint of the heaviest weight takes a slot every turn; one of a third of
                // that weight every third turn.
                if iteration * e.weight < e.target {
                    continue;
                }
                e.target += max;
                let mut slot = (e.offset + e.skip * e.next) % size;
                while table[slot as usize] != u32::MAX {
                    e.next += 1;
                    slot = (e.offset + e.skip * e.next) % size;
                }
                table[slot as usize] = i as u32;
                e.next += 1;
                filled += 1;
            }
            iteration += 1;
        }
        Some(Maglev {
            table: table.into_boxed_slice(),
        })
    }

    /// The endpoint of `key`'s slot, or of the first of a few other slots (along a sequence
    /// derived from the key) whose endpoint is `ok`.
    pub fn lookup(&self, key: u64, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let size = self.table.len() as u64;
        (0..PROBES)
            .map(|probe| {
                let h = if probe == 0 { key } else { mix(key ^ probe) };
                self.table[(h % size) as usize] as usize
            })
            .find(|&e| ok(e))
    }

    pub fn table_len(&self) -> usize {
        self.table.len()
    }
}

/// [`DEFAULT_TABLE_SIZE`], or the first prime with at least 100 slots per endpoint.
pub fn table_size(endpoints: usize) -> u64 {
    let want = SLOTS_PER_ENDPOINT * endpoints as u64;
    if want <= DEFAULT_TABLE_SIZE {
        return DEFAULT_TABLE_SIZE;
    }
    (want..)
        .find(|&n| is_prime(n))
        .unwrap_or(DEFAULT_TABLE_SIZE)
}

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

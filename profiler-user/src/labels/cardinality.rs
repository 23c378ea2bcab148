//! The cardinality guard: at most so many distinct values per label key, the rest recorded as `other`.
//!
//! Pyroscope makes a series of every distinct set of sample labels, so a label whose values never stop coming (a
//! rule matching generated function names, handlers made per request) would cost the user a series each. The
//! first `limit` values of a key keep their names for the whole run (a window does not reset them, so a value does
//! not flip between its name and `other`); one warning names the key when it first overflows.
use std::collections::{HashMap, HashSet};

/// What values past the limit are recorded as.
pub(crate) const OTHER: &str = "other";

/// The limit unless `--max-label-values` says otherwise.
pub(crate) const DEFAULT_MAX_VALUES: usize = 100;

#[derive(Debug)]
pub(crate) struct CardinalityGuard {
    limit: usize,
    values: HashMap<&'static str, HashSet<String>>,
}

impl CardinalityGuard {
    pub(crate) fn new(limit: usize) -> Self {
        Self { limit, values: HashMap::new() }
    }

    /// `value` if it is one of the first `limit` values of `key` seen, else `other`.
    pub(crate) fn admit(&mut self, key: &'static str, value: &str) -> String {
        let seen = self.values.entry(key).or_default();
        if seen.contains(value) {
            return value.to_owned();
        }
        if seen.len() < self.limit {
            seen.insert(value.to_owned());
            return value.to_owned();
        }
        if !seen.contains(OTHER) {
            // `other` joins the set once, which also marks the key as warned about.
            seen.insert(OTHER.to_owned());
            tracing::warn!(
                "label `{key}` has more than {} distinct values: the others are recorded as `{OTHER}` (raise \
                 --max-label-values to keep more)",
                self.limit
            );
        }
        OTHER.to_owned()
    }
}

impl Default for CardinalityGuard {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_VALUES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_limit_become_other_and_the_first_ones_stay() {
        let mut guard = CardinalityGuard::new(2);
        assert_eq!(guard.admit("endpoint", "a"), "a");
        assert_eq!(guard.admit("endpoint", "b"), "b");
        assert_eq!(guard.admit("endpoint", "c"), OTHER);
        assert_eq!(guard.admit("endpoint", "d"), OTHER);
        assert_eq!(guard.admit("endpoint", "a"), "a");
        // Per key.
        assert_eq!(guard.admit("team", "c"), "c");
    }
}

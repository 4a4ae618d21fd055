//! Counting what an in-process plugin really lost to a full queue.
//!
//! `emit` answers backpressure and the event is not taken; what the plugin
//! does next is its own choice. A plugin that drops moves on to its next
//! event; one that keeps its place (the built-in `log` source) hands the
//! same event again until it is taken. Counting every refusal as a drop
//! made the `log` source, which loses nothing, report thousands of drops
//! during a storm. So a refusal is held back: it counts as a drop once the
//! plugin emits something else, and not at all once the same event is
//! taken after all.

use xxhash_rust::xxh3::xxh3_64;

/// The drops of one source.
#[derive(Debug, Default)]
pub(crate) struct Drops {
    /// The last refused event (a hash of its JSON), not yet known to be
    /// dropped or retried.
    pending: Option<u64>,
    /// Refused events the plugin moved on from.
    dropped: u64,
}

impl Drops {
    /// The event `json` was refused.
    pub(crate) fn refused(&mut self, json: &str) {
        let h = xxh3_64(json.as_bytes());
        if let Some(p) = self.pending.replace(h)
            && p != h
        {
            self.dropped += 1;
        }
    }

    /// The event `json` was taken.
    pub(crate) fn taken(&mut self, json: &str) {
        // Only a refused event's retry needs the hash.
        if let Some(p) = self.pending.take()
            && p != xxh3_64(json.as_bytes())
        {
            self.dropped += 1;
        }
    }

    /// Drops counted since the last call.
    pub(crate) fn take(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_event_is_no_drop_and_one_moved_on_from_is() {
        let mut d = Drops::default();
        // The log source: refused three times, then taken.
        for _ in 0..3 {
            d.refused("a");
        }
        d.taken("a");
        assert_eq!(d.take(), 0);
        // A flooding plugin: each refused event followed by another.
        d.refused("b");
        d.refused("c");
        d.refused("d");
        d.taken("e");
        assert_eq!(d.take(), 3, "b, c and d were dropped");
        assert_eq!(d.take(), 0, "counted once");
        // A refusal with nothing after it yet is not counted (it may be retried).
        d.refused("f");
        assert_eq!(d.take(), 0);
        d.taken("g");
        assert_eq!(d.take(), 1);
    }
}

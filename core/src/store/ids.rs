//! UUID v7 from an injected clock and RNG.
//!
//! The store never invents identity: every UUID comes from a [`UuidSource`], which derives a
//! version-7 UUID from the time it is given and a seeded ChaCha stream. The same seed and the
//! same times give the same UUIDs, so a simulation seed replays exactly.
//!
//! The UUIDs of one source sort in the order they were made: each one's timestamp is later
//! than the one before, even when two are made in the same millisecond or the clock steps
//! back (NTP). Backup retention keeps the newest names by that order. A burst runs ahead of
//! the clock by at most one millisecond per UUID, and the source then follows the clock again
//! once it catches up.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use uuid::Uuid;

/// Produces UUID v7 values from a seeded RNG and caller-supplied times.
#[derive(Debug, Clone)]
pub struct UuidSource {
    rng: ChaCha20Rng,
    /// The timestamp of the last UUID made (0 before the first).
    last_ms: u64,
}

impl UuidSource {
    /// A deterministic source: the same seed gives the same sequence.
    pub fn from_seed(seed: u64) -> UuidSource {
        UuidSource { rng: ChaCha20Rng::seed_from_u64(seed), last_ms: 0 }
    }

    /// A source seeded from the operating system's entropy (production).
    pub fn from_entropy() -> UuidSource {
        UuidSource { rng: rand::make_rng::<ChaCha20Rng>(), last_ms: 0 }
    }

    /// A random 64-bit number from the same stream (seeds for other generators).
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// The next UUID, stamped with `now_ms` (unix milliseconds), or with one millisecond
    /// after the previous UUID's stamp if that is later (see the module docs).
    pub fn next(&mut self, now_ms: u64) -> Uuid {
        let ms = now_ms.max(self.last_ms.saturating_add(1));
        self.last_ms = ms;
        let mut random = [0u8; 10];
        self.rng.fill_bytes(&mut random);
        uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sources_replay_and_are_v7() {
        let mut a = UuidSource::from_seed(7);
        let mut b = UuidSource::from_seed(7);
        let mut c = UuidSource::from_seed(8);
        let x = a.next(1_700_000_000_000);
        assert_eq!(x, b.next(1_700_000_000_000));
        assert_ne!(x, c.next(1_700_000_000_000));
        assert_eq!(x.get_version_num(), 7);
        assert_ne!(a.next(1_700_000_000_000), x, "a stream never repeats");
        let ts = x.get_timestamp().map(|t| t.to_unix());
        assert_eq!(ts.map(|(s, _)| s), Some(1_700_000_000));
    }

    #[test]
    fn uuids_sort_in_the_order_they_were_made_whatever_the_clock_does() {
        let mut source = UuidSource::from_seed(3);
        // The same millisecond many times, then the clock steps back an hour, then forward.
        let times = [[1_700_000_000_000; 50].as_slice(), &[1_699_996_400_000; 50], &[1_700_000_100_000; 5]];
        let made: Vec<Uuid> = times.concat().into_iter().map(|t| source.next(t)).collect();
        assert!(made.windows(2).all(|w| w[0] < w[1]), "strictly increasing in order of making");
        let ms = |u: &Uuid| {
            u.get_timestamp().map(|t| t.to_unix()).map(|(s, n)| s * 1000 + u64::from(n) / 1_000_000)
        };
        // The burst ran ahead one millisecond per UUID; a later clock is followed again.
        assert_eq!(ms(&made[0]), Some(1_700_000_000_000));
        assert_eq!(ms(&made[99]), Some(1_700_000_000_099));
        assert_eq!(ms(&made[100]), Some(1_700_000_100_000));
        assert!(made.iter().all(|u| u.get_version_num() == 7));
    }
}

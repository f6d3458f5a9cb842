//! How long to wait before trying again: the relay, the expiry sweeper, the order consumer
//! and the NATS client each wait so after a failure.

use std::time::Duration;

/// The wait before attempt `failures + 1`: `first` after the first failure, doubling after
/// each one more, never over `most`.
pub fn doubling(first: Duration, failures: u32, most: Duration) -> Duration {
    // Past 2^20 times any first wait here is past every bound: the factor cannot overflow.
    let factor = 1u32 << failures.saturating_sub(1).min(20);
    first.saturating_mul(factor).min(most)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_the_first_up_to_the_most() {
        let ms = Duration::from_millis;
        let waits: Vec<u128> = (0..=9)
            .map(|failures| doubling(ms(100), failures, ms(3200)).as_millis())
            .collect();
        assert_eq!(
            waits,
            [100, 100, 200, 400, 800, 1600, 3200, 3200, 3200, 3200]
        );
        assert_eq!(doubling(ms(1), u32::MAX, ms(1000)), ms(1000));
    }
}

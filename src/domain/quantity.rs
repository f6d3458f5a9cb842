use super::InvalidInput;

/// Units in one order: 1–100. The sale's per-user limit is checked by the purchase script,
/// which is the only place that knows it atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u64 = 100;
    pub const ONE: Quantity = Quantity(1);

    pub fn parse(raw: u64) -> Result<Self, InvalidInput> {
        if raw == 0 || raw > Self::MAX {
            return Err(InvalidInput(format!(
                "quantity must be between 1 and {}",
                Self::MAX
            )));
        }
        // Lossless: raw <= 100.
        Ok(Self(raw as u32))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive() {
        assert_eq!(Quantity::parse(1).map(Quantity::get), Ok(1));
        assert_eq!(Quantity::parse(100).map(Quantity::get), Ok(100));
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(101).is_err());
    }
}

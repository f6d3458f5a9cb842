//! The outbox entries this replica's handlers are delivering right now: the relay stops short
//! of them (`Outbox::read`), so an entry its handlers confirm is published once.

use super::outbox::Outbox;
use crate::domain::Sku;

/// Held while a handler delivers an entry (`Outbox::delivering`); dropped, the entry is the
/// relay's again if it is still in the outbox.
pub struct Delivering<'a> {
    outbox: &'a Outbox,
    key: Option<(Sku, String)>,
}

impl Drop for Delivering<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.outbox.0.outboxes.delivering.lock().remove(&key);
        }
    }
}

impl Outbox {
    /// Marks an entry as being delivered by this replica's handlers until the guard drops:
    /// the relay of this replica stops short of it meanwhile, so an entry its handlers
    /// confirm is published once, whatever the timing.
    pub fn delivering(&self, sku: &Sku, id: &str) -> Delivering<'_> {
        let key = (sku.clone(), id.to_owned());
        self.0.outboxes.delivering.lock().insert(key.clone());
        Delivering {
            outbox: self,
            key: Some(key),
        }
    }

    /// Whether this replica's handlers are delivering the entry.
    pub fn is_delivering(&self, sku: &Sku, id: &str) -> bool {
        let delivering = self.0.outboxes.delivering.lock();
        !delivering.is_empty() && delivering.contains(&(sku.clone(), id.to_owned()))
    }
}

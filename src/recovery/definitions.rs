//! Sale definitions, kept in JetStream: the durable record of what each sale is, so that a
//! sale Redis has forgotten can be rebuilt (see `recovery/rebuild.rs`).
//!
//! A key-value bucket `<stream>_SALES` beside the order stream, one key per sale (its sku
//! digest, the same 16 hex digits that start its order ids, so a cancel can find the sale of
//! an order even when Redis has lost its registry). Every PUT writes a new revision before
//! Redis is written; the bucket keeps the last 64 revisions of each sale.

use std::time::Duration;

use async_nats::jetstream::{self, kv};

use tokio::sync::OnceCell;

use crate::domain::Sku;
pub use crate::domain::sale::SaleDefinition;
use crate::events::jetstream::{apply_retention, keep_retention};
use crate::support::settings::{NatsSettings, Retention};

/// Revisions kept per sale (JetStream's maximum for a key-value bucket).
const HISTORY: i64 = 64;

#[derive(Debug, thiserror::Error)]
#[error("sale definitions in jetstream: {0}")]
pub struct DefinitionError(String);

fn failed(e: impl std::fmt::Display) -> DefinitionError {
    let text = e.to_string();
    // async-nats's key-value errors carry JetStream's text only. It reads as if the bucket
    // were gone; during a stream leader election it only means no copy answers yet.
    if text.contains("no stream found") {
        return DefinitionError(format!(
            "{text} (the bucket's stream is missing, or has no leader yet, as during a leader \
             election)"
        ));
    }
    DefinitionError(text)
}

/// The bucket of sale definitions, opened (or created) on first use, so the service starts
/// while NATS is down.
pub struct SaleDefinitions {
    jetstream: jetstream::Context,
    bucket: String,
    /// Copies of the bucket's stream when this creates it (FLASHSALE_STREAM_REPLICAS).
    replicas: usize,
    /// What JetStream keeps of it (FLASHSALE_DEFINITIONS_MAX_AGE_SECS, _MAX_BYTES).
    retention: Retention,
    store: OnceCell<kv::Store>,
}

impl SaleDefinitions {
    pub fn new(nats: async_nats::Client, settings: &NatsSettings) -> Self {
        let (stream, replicas) = (&settings.stream, settings.stream_replicas);
        let mut jetstream = jetstream::new(nats);
        // Definitions are written by admin calls, not on the purchase path, and the first
        // one creates the bucket's stream: on a loaded server that took over 2 s (a PUT
        // answered 503 in CI). Better a slower PUT than a refused one.
        jetstream.set_timeout(Duration::from_secs(5));
        Self {
            jetstream,
            bucket: bucket_name(stream),
            replicas,
            retention: settings.definitions_retention,
            store: OnceCell::new(),
        }
    }

    async fn store(&self) -> Result<&kv::Store, DefinitionError> {
        self.store
            .get_or_try_init(|| async {
                if let Ok(store) = self.jetstream.get_key_value(&self.bucket).await {
                    if let Ok(mut stream) = self
                        .jetstream
                        .get_stream(format!("KV_{}", self.bucket))
                        .await
                        && let Ok(info) = stream.info().await
                        && let Err(e) = keep_retention(&self.jetstream, info, self.retention).await
                    {
                        log::warn!(
                            "bucket {}: FLASHSALE_DEFINITIONS_MAX_* not applied: {e}",
                            self.bucket
                        );
                    }
                    return Ok(store);
                }
                // The bucket's stream is created as async-nats's `create_key_value` would,
                // but directly: that call first asks for account details in a shape
                // nats-server 2.9 does not answer in.
                let mut config = jetstream::stream::Config {
                    name: format!("KV_{}", self.bucket),
                    description: Some("flashsale sale definitions (sku digest -> settings)".into()),
                    subjects: vec![format!("$KV.{}.>", self.bucket)],
                    max_messages_per_subject: HISTORY,
                    storage: jetstream::stream::StorageType::File,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: jetstream::stream::DiscardPolicy::New,
                    num_replicas: self.replicas,
                    ..Default::default()
                };
                apply_retention(&mut config, self.retention);
                let created = self.jetstream.create_stream(config).await;
                match created {
                    Ok(_) => {
                        log::info!("jetstream bucket {} created", self.bucket);
                        self.jetstream
                            .get_key_value(&self.bucket)
                            .await
                            .map_err(failed)
                    }
                    // Another replica may have created it in between.
                    Err(created) => self
                        .jetstream
                        .get_key_value(&self.bucket)
                        .await
                        .map_err(|_| failed(created)),
                }
            })
            .await
    }

    /// The sale whose sku digest is `digest`, if one was ever defined.
    pub async fn get_by_digest(
        &self,
        digest: &str,
    ) -> Result<Option<SaleDefinition>, DefinitionError> {
        let Some(entry) = self.store().await?.entry(digest).await.map_err(failed)? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let mut definition: SaleDefinition =
            serde_json::from_slice(&entry.value).map_err(failed)?;
        definition.revision = entry.revision;
        Ok(Some(definition))
    }

    pub async fn get(&self, sku: &Sku) -> Result<Option<SaleDefinition>, DefinitionError> {
        self.get_by_digest(&sku.digest()).await
    }

    /// Records a new revision of the sale; returns that revision.
    pub async fn put(&self, definition: &SaleDefinition) -> Result<u64, DefinitionError> {
        let value = serde_json::to_vec(definition).map_err(failed)?;
        self.store()
            .await?
            .put(definition.sku.digest(), value.into())
            .await
            .map_err(failed)
    }

    /// Records a new revision of the sale if its newest is still `definition.revision`;
    /// `Ok(None)` when another was written since (a PUT, another replica's archive).
    pub async fn update(
        &self,
        definition: &SaleDefinition,
    ) -> Result<Option<u64>, DefinitionError> {
        let value = serde_json::to_vec(definition).map_err(failed)?;
        match self
            .store()
            .await?
            .update(definition.sku.digest(), value.into(), definition.revision)
            .await
        {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(failed(e)),
        }
    }

    /// Records the sale unless it is already defined; returns the definition that holds.
    pub async fn create(
        &self,
        definition: &SaleDefinition,
    ) -> Result<SaleDefinition, DefinitionError> {
        let value = serde_json::to_vec(definition).map_err(failed)?;
        match self
            .store()
            .await?
            .create(definition.sku.digest(), value.into())
            .await
        {
            Ok(revision) => Ok(SaleDefinition {
                revision,
                ..definition.clone()
            }),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                self.get(&definition.sku).await?.ok_or_else(|| {
                    DefinitionError(format!("{} vanished while created", definition.sku))
                })
            }
            Err(e) => Err(failed(e)),
        }
    }

    /// The keys of every sale ever defined: their sku digests, in no order (the places
    /// keys, `<digest>.places.<n>`, left out).
    pub async fn digests(&self) -> Result<Vec<String>, DefinitionError> {
        use futures::TryStreamExt;
        let keys = self.store().await?.keys().await.map_err(failed)?;
        let keys: Vec<String> = keys.try_collect().await.map_err(failed)?;
        Ok(keys.into_iter().filter(|key| !key.contains('.')).collect())
    }

    /// How far the places of the sale's line are reserved (`lua/queue.lua`): the ceiling
    /// JetStream records and its revision (`None`: none reserved yet). `generation`: the
    /// sale's `history_from`, so a sale started anew on an archived sku has a line of its own.
    pub async fn places_reserved(
        &self,
        sku: &Sku,
        generation: u64,
    ) -> Result<(u64, Option<u64>), DefinitionError> {
        let key = places_key(sku, generation);
        let Some(entry) = self.store().await?.entry(key).await.map_err(failed)? else {
            return Ok((0, None));
        };
        let ceiling = std::str::from_utf8(&entry.value)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| DefinitionError(format!("{sku}: places ceiling {:?}", entry.value)))?;
        Ok((ceiling, Some(entry.revision)))
    }

    /// Records `ceiling` if the reservation still stands at `revision` (`None`: none yet);
    /// `Ok(false)` when another replica reserved in between (read again and retry).
    pub async fn reserve_places(
        &self,
        sku: &Sku,
        generation: u64,
        ceiling: u64,
        revision: Option<u64>,
    ) -> Result<bool, DefinitionError> {
        let store = self.store().await?;
        let (key, value) = (places_key(sku, generation), ceiling.to_string().into());
        let written = match revision {
            Some(revision) => match store.update(key, value, revision).await {
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => return Ok(false),
                written => written.map(drop).map_err(failed),
            },
            None => match store.create(key, value).await {
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(false),
                written => written.map(drop).map_err(failed),
            },
        };
        written.map(|()| true)
    }

    /// Every sale ever defined (its newest revision).
    pub async fn all(&self) -> Result<Vec<SaleDefinition>, DefinitionError> {
        let keys = self.digests().await?;
        let mut definitions = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(definition) = self.get_by_digest(&key).await? {
                definitions.push(definition);
            }
        }
        Ok(definitions)
    }

    /// Deletes the bucket (tests clean up with it).
    pub async fn delete_bucket(&self) -> Result<(), DefinitionError> {
        self.jetstream
            .delete_key_value(&self.bucket)
            .await
            .map(drop)
            .map_err(failed)
    }
}

/// The key of a sale's places ceiling, beside its definition.
fn places_key(sku: &Sku, generation: u64) -> String {
    format!("{}.places.{generation}", sku.digest())
}

/// `<stream>_SALES`: beside the order stream, named after it so each stream has its own.
pub fn bucket_name(stream: &str) -> String {
    format!("{stream}_SALES")
}

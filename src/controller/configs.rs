//! Config changes on the active controller: IncrementalAlterConfigs and AlterConfigs of
//! topics and brokers, checked against the image (`cluster::configs::alter`) and committed
//! through the quorum as config records, one entry for the whole request.

use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use tracing::{info, warn};

use super::remote::Route;
use super::Controller;
use crate::cluster::configs::{alter, ConfigChange, Refusal};
use crate::cluster::records::{ConfigResource, MetadataRecord};
use crate::cluster::MetadataImage;
use crate::protocol::envelope::ClientOrigin;

/// What became of one resource's change.
pub type ConfigOutcome = Result<(), Refusal>;

/// Whether `image` has every value `records` set.
fn reflects(image: &MetadataImage, records: &[MetadataRecord]) -> bool {
    records.iter().all(|r| match r {
        MetadataRecord::Config { resource, name, value } => {
            let configs = match resource {
                ConfigResource::Topic(t) => image.topic(t).map(|m| &m.configs),
                ConfigResource::Broker(id) => image.broker_configs.get(id),
            };
            configs.and_then(|c| c.get(name)) == value.as_ref()
        }
        _ => true,
    })
}

impl Controller {
    /// Alters configs here or at the active controller; answered once this node's image
    /// has the changes (or at `timeout`).
    pub async fn alter_configs(
        &self,
        changes: Vec<ConfigChange>,
        origin: Option<ClientOrigin>,
        validate_only: bool,
        timeout: Duration,
    ) -> Vec<ConfigOutcome> {
        let deadline = Instant::now() + timeout;
        let leader = || self.call_target();
        match self.remote.alter_configs(leader, &changes, validate_only, deadline, origin.as_ref()).await {
            Ok(Route::Here) => self.alter_configs_here(changes, validate_only, timeout).await,
            Ok(Route::There(outcomes)) => {
                // What this node's image must show before the answer: the records the
                // change makes from this node's view (the controller's may be newer).
                let image = self.image.get();
                let expected: Vec<MetadataRecord> = changes
                    .iter()
                    .zip(&outcomes)
                    .filter(|(_, o)| o.is_ok() && !validate_only)
                    .filter_map(|(c, _)| alter(&image, &self.config, c).ok())
                    .flatten()
                    .collect();
                self.published_where(|image| reflects(image, &expected), deadline).await;
                outcomes
            }
            Err(e) => changes.iter().map(|_| Err((e.code(), e.to_string()))).collect(),
        }
    }

    /// A forwarded config change, on the active controller.
    pub async fn alter_configs_forwarded(
        &self,
        changes: Vec<ConfigChange>,
        validate_only: bool,
        timeout: Duration,
    ) -> Vec<ConfigOutcome> {
        if !self.is_active() {
            let refused = (ResponseError::NotController, "this node is not the active controller".to_string());
            return changes.iter().map(|_| Err(refused.clone())).collect();
        }
        self.alter_configs_here(changes, validate_only, timeout).await
    }

    async fn alter_configs_here(
        &self,
        changes: Vec<ConfigChange>,
        validate_only: bool,
        timeout: Duration,
    ) -> Vec<ConfigOutcome> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else { return Vec::new() };
        let mut image = (*self.image.get()).clone();
        let mut outcomes = Vec::with_capacity(changes.len());
        let mut records = Vec::new();
        for change in &changes {
            // Checked against the image with the earlier resources' changes applied, so
            // a broker's change is validated over a cluster default changed before it.
            match alter(&image, &self.config, change) {
                Ok(made) => {
                    made.iter().for_each(|r| image.apply(r));
                    records.extend(made);
                    outcomes.push(Ok(()));
                }
                Err(refusal) => outcomes.push(Err(refusal)),
            }
        }
        if validate_only || records.is_empty() {
            return outcomes;
        }
        let count = records.len();
        match self.commit(records, timeout).await {
            Ok(()) => {
                for change in changes.iter().zip(&outcomes).filter(|(_, o)| o.is_ok()).map(|(c, _)| c) {
                    info!(resource = ?change.resource, changes = ?change.ops, "configs altered");
                }
                outcomes
            }
            Err(e) => {
                warn!(error = %e, records = count, "config change not committed");
                outcomes.into_iter().map(|o| o.and(Err((e.code(), e.to_string())))).collect()
            }
        }
    }
}

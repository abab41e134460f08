//! Cluster metadata: records, the metadata log they are stored in, and the immutable image
//! the control shard builds from them and publishes to every data shard.

pub mod configs;
pub mod election;
pub mod image;
pub mod metadata_log;
pub mod placement;
pub mod records;

pub use image::{BrokerMeta, ImageCell, MetadataImage, TopicMeta};

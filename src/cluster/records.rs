//! Metadata records: every change to topics is one of these, appended to the metadata log
//! and applied to the image. Applying the same records in the same order gives the same
//! image, which is what lets a Raft quorum replicate them later.
//!
//! Encoding (version 1): `type u8`, then fields; strings as `u16 length + UTF-8`, UUIDs as
//! 16 bytes, integers big-endian.

use std::collections::BTreeMap;

use thiserror::Error;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    /// A topic was created (or, with the same id, replaced).
    Topic { name: String, id: Uuid, partitions: i32, configs: BTreeMap<String, String> },
    /// A topic was deleted.
    RemoveTopic { id: Uuid },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("metadata record truncated")]
    Truncated,
    #[error("unknown metadata record type {0}")]
    UnknownType(u8),
    #[error("metadata record string is not UTF-8")]
    BadString,
}

const TYPE_TOPIC: u8 = 1;
const TYPE_REMOVE_TOPIC: u8 = 2;

impl MetadataRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            MetadataRecord::Topic { name, id, partitions, configs } => {
                out.push(TYPE_TOPIC);
                put_str(&mut out, name);
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(&partitions.to_be_bytes());
                out.extend_from_slice(&(configs.len() as u16).to_be_bytes());
                for (k, v) in configs {
                    put_str(&mut out, k);
                    put_str(&mut out, v);
                }
            }
            MetadataRecord::RemoveTopic { id } => {
                out.push(TYPE_REMOVE_TOPIC);
                out.extend_from_slice(id.as_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<MetadataRecord, RecordError> {
        let mut r = Reader { bytes, at: 0 };
        match r.u8()? {
            TYPE_TOPIC => {
                let name = r.string()?;
                let id = r.uuid()?;
                let partitions = i32::from_be_bytes(r.take(4)?.try_into().map_err(|_| RecordError::Truncated)?);
                let count = u16::from_be_bytes(r.take(2)?.try_into().map_err(|_| RecordError::Truncated)?);
                let mut configs = BTreeMap::new();
                for _ in 0..count {
                    let k = r.string()?;
                    configs.insert(k, r.string()?);
                }
                Ok(MetadataRecord::Topic { name, id, partitions, configs })
            }
            TYPE_REMOVE_TOPIC => Ok(MetadataRecord::RemoveTopic { id: r.uuid()? }),
            other => Err(RecordError::UnknownType(other)),
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let s = self.bytes.get(self.at..self.at + n).ok_or(RecordError::Truncated)?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn string(&mut self) -> Result<String, RecordError> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().map_err(|_| RecordError::Truncated)?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| RecordError::BadString)
    }
    fn uuid(&mut self) -> Result<Uuid, RecordError> {
        Uuid::from_slice(self.take(16)?).map_err(|_| RecordError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let records = [
            MetadataRecord::Topic {
                name: "orders".into(),
                id: Uuid::new_v4(),
                partitions: 6,
                configs: [("cleanup.policy".to_string(), "delete".to_string())].into(),
            },
            MetadataRecord::RemoveTopic { id: Uuid::new_v4() },
        ];
        for r in records {
            assert_eq!(MetadataRecord::decode(&r.encode()), Ok(r.clone()));
            let enc = r.encode();
            assert_eq!(MetadataRecord::decode(&enc[..enc.len() - 1]), Err(RecordError::Truncated));
        }
        assert_eq!(MetadataRecord::decode(&[9]), Err(RecordError::UnknownType(9)));
    }
}

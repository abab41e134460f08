//! Raft messages between controllers, over the controller listener.
//!
//! Kafka's own quorum RPCs (Vote, BeginQuorumEpoch, Fetch) carry KRaft's pull-based
//! protocol; raft-rs speaks push-based Raft messages, which no Kafka message carries. So
//! they travel in frames of Kafka's request framing (size, request header v1) under a
//! private API key, [`RAFT_MESSAGES_KEY`], one way and unanswered (Raft answers with
//! messages of its own). A frame's body: the sender's cluster id and voter set (a receiver
//! that disagrees drops the frame and says why), then the messages, each `length i32 |
//! eraftpb.Message (protobuf)`.
//!
//! Each other voter has one long-lived outbound connection fed by a queue ([`PeerLinks`]):
//! everything queued when the writer is free goes out as one frame. A link that cannot
//! connect or write drops what is queued (Raft retransmits) and reconnects after a backoff.
//! Runs on the control shard.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::channel::mpsc;
use futures::io::AsyncWriteExt;
use futures::StreamExt;
use glommio::net::TcpStream;
use protobuf::Message as _;
use raft::eraftpb::Message;
use tracing::{info, warn};

use crate::client::with_timeout;
use crate::config::Voter;

/// The private API key of a raft-message frame (outside Kafka's range of keys).
pub const RAFT_MESSAGES_KEY: i16 = 32_000;
/// Bytes of messages one frame carries at most (more wait for the next frame).
const FRAME_BYTES_MAX: usize = 4 << 20;
/// Wait between attempts to reach a voter that is down.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    #[error("truncated raft frame")]
    Truncated,
    #[error("undecodable raft message: {0}")]
    Message(String),
    #[error("raft frame from cluster {theirs}, but this node belongs to cluster {ours}")]
    OtherCluster { ours: String, theirs: String },
    #[error("raft frame from a node whose controller.quorum.voters are {theirs} (ids), but this node's are {ours}")]
    OtherVoters { ours: String, theirs: String },
}

/// Who the frames are from: the checks a receiver makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cluster_id: String,
    /// Node ids of the voters, sorted, comma-separated.
    pub voters: String,
}

impl Identity {
    pub fn new(cluster_id: &str, voters: &[Voter]) -> Identity {
        let mut ids: Vec<i32> = voters.iter().map(|v| v.node_id).collect();
        ids.sort_unstable();
        let voters = ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
        Identity { cluster_id: cluster_id.to_string(), voters }
    }
}

fn put_string(buf: &mut BytesMut, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    buf.put_i16(bytes.len() as i16);
    buf.put_slice(bytes);
}

fn get_string(buf: &mut Bytes) -> Result<String, TransportError> {
    if buf.remaining() < 2 {
        return Err(TransportError::Truncated);
    }
    let len = usize::try_from(buf.get_i16()).map_err(|_| TransportError::Truncated)?;
    if buf.remaining() < len {
        return Err(TransportError::Truncated);
    }
    Ok(String::from_utf8_lossy(&buf.split_to(len)).into_owned())
}

/// Encodes one whole frame (size prefix, request header, body).
pub fn encode_frame(identity: &Identity, client_id: &str, correlation_id: i32, messages: &[Message]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    buf.put_i16(RAFT_MESSAGES_KEY);
    buf.put_i16(0);
    buf.put_i32(correlation_id);
    put_string(&mut buf, client_id);
    put_string(&mut buf, &identity.cluster_id);
    put_string(&mut buf, &identity.voters);
    buf.put_i32(messages.len() as i32);
    for m in messages {
        let bytes = m.write_to_bytes().unwrap_or_default();
        buf.put_i32(bytes.len() as i32);
        buf.put_slice(&bytes);
    }
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    buf
}

/// Decodes a frame's body (what follows the request header) and checks it is from this
/// cluster and quorum.
pub fn decode_body(mut body: Bytes, ours: &Identity) -> Result<Vec<Message>, TransportError> {
    let theirs = Identity { cluster_id: get_string(&mut body)?, voters: get_string(&mut body)? };
    if theirs.cluster_id != ours.cluster_id {
        return Err(TransportError::OtherCluster { ours: ours.cluster_id.clone(), theirs: theirs.cluster_id });
    }
    if theirs.voters != ours.voters {
        return Err(TransportError::OtherVoters { ours: ours.voters.clone(), theirs: theirs.voters });
    }
    if body.remaining() < 4 {
        return Err(TransportError::Truncated);
    }
    let count = body.get_i32();
    let mut messages = Vec::new();
    for _ in 0..count.max(0) {
        if body.remaining() < 4 {
            return Err(TransportError::Truncated);
        }
        let len = usize::try_from(body.get_i32()).map_err(|_| TransportError::Truncated)?;
        if body.remaining() < len {
            return Err(TransportError::Truncated);
        }
        let bytes = body.split_to(len);
        messages.push(Message::parse_from_bytes(&bytes).map_err(|e| TransportError::Message(e.to_string()))?);
    }
    Ok(messages)
}

/// Outbound links to the other voters, by Raft id.
pub struct PeerLinks {
    links: HashMap<u64, mpsc::UnboundedSender<Message>>,
}

impl PeerLinks {
    /// Starts a link task to every voter but `me` (Raft ids are node ids + 1).
    pub fn start(voters: &[Voter], me: i32, identity: Identity, connect_timeout: Duration) -> PeerLinks {
        let mut links = HashMap::new();
        for voter in voters.iter().filter(|v| v.node_id != me) {
            let (tx, rx) = mpsc::unbounded();
            links.insert(voter.node_id as u64 + 1, tx);
            let link = Link {
                addr: voter.addr(),
                peer: voter.node_id,
                client_id: format!("weir-controller-{me}"),
                identity: identity.clone(),
                connect_timeout,
            };
            glommio::spawn_local(link.run(rx)).detach();
        }
        PeerLinks { links }
    }

    /// Queues messages for their voters; messages for unknown ids are dropped.
    pub fn send(&self, messages: Vec<Message>) {
        for m in messages {
            if let Some(link) = self.links.get(&m.to) {
                let _ = link.unbounded_send(m);
            }
        }
    }
}

struct Link {
    addr: String,
    peer: i32,
    client_id: String,
    identity: Identity,
    connect_timeout: Duration,
}

impl Link {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Message>) {
        let mut stream: Option<TcpStream> = None;
        let mut correlation_id = 0i32;
        let mut reachable = true;
        while let Some(first) = rx.next().await {
            let mut batch = vec![first];
            let mut bytes = 0;
            while bytes < FRAME_BYTES_MAX {
                match rx.try_recv() {
                    Ok(m) => {
                        bytes += m.compute_size() as usize;
                        batch.push(m);
                    }
                    _ => break,
                }
            }
            if stream.is_none() {
                stream = self.connect().await;
                if stream.is_some() != reachable {
                    reachable = stream.is_some();
                    if reachable {
                        info!(voter = self.peer, addr = %self.addr, "controller link up");
                    } else {
                        warn!(voter = self.peer, addr = %self.addr, "cannot reach voter; retrying");
                    }
                }
            }
            let Some(s) = stream.as_mut() else {
                // Drop what is queued: Raft resends what still matters.
                while rx.try_recv().is_ok() {}
                glommio::timer::sleep(RECONNECT_BACKOFF).await;
                continue;
            };
            correlation_id = correlation_id.wrapping_add(1);
            let frame = encode_frame(&self.identity, &self.client_id, correlation_id, &batch);
            let written = with_timeout(self.connect_timeout, s.write_all(&frame)).await;
            if !matches!(written, Some(Ok(()))) {
                warn!(voter = self.peer, addr = %self.addr, "controller link lost; reconnecting");
                stream = None;
            }
        }
    }

    async fn connect(&self) -> Option<TcpStream> {
        let addr = crate::client::resolve(&self.addr).ok()?;
        let connected =
            with_timeout(self.connect_timeout, TcpStream::connect_timeout(addr, self.connect_timeout)).await;
        match connected {
            Some(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Some(s)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_messages_and_refuse_strangers() {
        let voters: Vec<Voter> =
            (1..=3).map(|id| Voter { node_id: id, host: "127.0.0.1".into(), port: 9000 + id as u16 }).collect();
        let ours = Identity::new("c1", &voters);
        assert_eq!(ours.voters, "1,2,3");
        let m = Message { from: 2, to: 3, term: 7, ..Default::default() };
        let mut frame = encode_frame(&ours, "weir-controller-1", 5, &[m.clone(), m.clone()]).freeze();
        let size = frame.get_i32() as usize;
        assert_eq!(size, frame.len());
        assert_eq!(frame.get_i16(), RAFT_MESSAGES_KEY);
        let (_version, _correlation) = (frame.get_i16(), frame.get_i32());
        let _client = get_string(&mut frame).expect("client id");
        assert_eq!(decode_body(frame.clone(), &ours), Ok(vec![m.clone(), m]));
        let other = Identity { cluster_id: "c2".into(), voters: "1,2,3".into() };
        assert!(matches!(decode_body(frame.clone(), &other), Err(TransportError::OtherCluster { .. })));
        let fewer = Identity { cluster_id: "c1".into(), voters: "1,2".into() };
        assert!(matches!(decode_body(frame.clone(), &fewer), Err(TransportError::OtherVoters { .. })));
        for cut in [0, 3, frame.len() - 1] {
            assert!(decode_body(frame.slice(..cut), &ours).is_err(), "cut at {cut}");
        }
    }
}

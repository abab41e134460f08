//! What producers put in records: payload bytes (random or from a file), value sizes, keys
//! and Kafka's murmur2 key partitioning, and the 20-byte header each record carries so that
//! consumers can measure end-to-end latency and check delivery.

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};

use crate::workload::{MessageSize, Messages};

/// Header name of the load generator's record metadata.
pub const META_HEADER: &str = "lg";
/// Producer id (u32), sequence number in the (producer, partition) stream (u64) and send time
/// in wall-clock microseconds (u64), big-endian.
pub const META_LEN: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub producer: u32,
    pub seq: u64,
    pub sent_wall_us: u64,
}

impl Meta {
    pub fn put(&self, buf: &mut BytesMut) {
        buf.put_u32(self.producer);
        buf.put_u64(self.seq);
        buf.put_u64(self.sent_wall_us);
    }

    pub fn parse(b: &[u8]) -> Option<Meta> {
        if b.len() != META_LEN {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
        Some(Meta { producer: u32_at(0), seq: u64_at(4), sent_wall_us: u64_at(12) })
    }
}

/// xorshift64*: small, fast, good enough for sizes, keys and payload bytes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed so that nearby seeds give unrelated streams; never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Value sizes.
#[derive(Debug, Clone, Copy)]
pub struct Sizes(pub MessageSize);

impl Sizes {
    pub fn next(&self, rng: &mut Rng) -> u32 {
        match self.0 {
            MessageSize::Fixed(n) => n,
            MessageSize::Uniform { min, max } => min + rng.below(u64::from(max - min) + 1) as u32,
        }
    }
}

/// Bytes values are cut from: one shared buffer, so a value is a reference-counted slice.
#[derive(Debug, Clone)]
pub struct Payload {
    buf: Bytes,
    /// Values start at an offset in `0..window` (1 for file payloads: always the file's start).
    window: usize,
}

/// Random payloads rotate their start over this many bytes so values differ.
const RANDOM_WINDOW: usize = 64 * 1024;

impl Payload {
    pub fn random(max_size: u32, seed: u64) -> Payload {
        let len = max_size as usize + RANDOM_WINDOW;
        let mut rng = Rng::new(seed);
        let mut b = BytesMut::with_capacity(len + 8);
        while b.len() < len {
            b.put_u64(rng.next_u64());
        }
        b.truncate(len);
        Payload { buf: b.freeze(), window: RANDOM_WINDOW }
    }

    /// The file's bytes (repeated when a value is longer than the file).
    pub fn from_file(path: &Path, max_size: u32) -> std::io::Result<Payload> {
        let data = std::fs::read(path)?;
        if data.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "payload file is empty"));
        }
        let mut b = BytesMut::with_capacity(max_size as usize + data.len());
        while b.len() < max_size as usize {
            b.extend_from_slice(&data);
        }
        if b.is_empty() {
            b.extend_from_slice(&data);
        }
        Ok(Payload { buf: b.freeze(), window: 1 })
    }

    pub fn for_messages(m: &Messages, seed: u64) -> std::io::Result<Payload> {
        match &m.payload_file {
            Some(p) => Payload::from_file(p, m.size.max()),
            None => Ok(Payload::random(m.size.max(), seed)),
        }
    }

    /// A value of `size` bytes starting at `off` (from [`Payload::offset`]).
    pub fn value(&self, off: u32, size: u32) -> Bytes {
        let off = off as usize;
        self.buf.slice(off..off + size as usize)
    }

    pub fn offset(&self, rng: &mut Rng) -> u32 {
        if self.window <= 1 {
            0
        } else {
            rng.below(self.window as u64) as u32
        }
    }
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), seed 0x9747b28c.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ len as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The Java client's partition for a key: `toPositive(murmur2(key)) % partitions`.
pub fn key_partition(hash: i32, partitions: u32) -> u32 {
    ((hash & 0x7fff_ffff) as u32) % partitions
}

/// The keys of a keyed workload and their murmur2 hashes.
#[derive(Debug, Clone)]
pub struct Keys {
    pub keys: Vec<Bytes>,
    pub hashes: Vec<i32>,
}

impl Keys {
    pub fn new(count: u32) -> Keys {
        let keys: Vec<Bytes> = (0..count).map(|i| Bytes::from(format!("key-{i}"))).collect();
        let hashes = keys.iter().map(|k| murmur2(k)).collect();
        Keys { keys, hashes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips() {
        let m = Meta { producer: 7, seq: 1 << 40, sent_wall_us: 1_795_256_100_000_000 };
        let mut b = BytesMut::new();
        m.put(&mut b);
        assert_eq!(b.len(), META_LEN);
        assert_eq!(Meta::parse(&b), Some(m));
        assert_eq!(Meta::parse(&b[..19]), None);
    }

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58897971);
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn sizes_stay_in_range_and_cover_it() {
        let s = Sizes(MessageSize::Uniform { min: 10, max: 13 });
        let mut rng = Rng::new(1);
        let mut seen = [false; 4];
        for _ in 0..1000 {
            let n = s.next(&mut rng);
            assert!((10..=13).contains(&n));
            seen[(n - 10) as usize] = true;
        }
        assert!(seen.iter().all(|&x| x));
        assert_eq!(Sizes(MessageSize::Fixed(5)).next(&mut rng), 5);
    }

    #[test]
    fn payload_values_have_the_asked_size() {
        let p = Payload::random(100, 3);
        let mut rng = Rng::new(2);
        for _ in 0..100 {
            let off = p.offset(&mut rng);
            assert_eq!(p.value(off, 100).len(), 100);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("p.bin");
        std::fs::write(&f, b"abc").expect("write");
        let p = Payload::from_file(&f, 7).expect("payload");
        assert_eq!(&p.value(p.offset(&mut rng), 7)[..], b"abcabca");
    }
}

//! Decompression of a stored batch's records with a hard cap on the output, for the rare
//! paths that must look inside a batch (ListOffsets by timestamp). The hot path never
//! decompresses; a batch body is whatever the producer sent, so a few kilobytes could
//! otherwise expand to gigabytes (a "decompression bomb").

use std::io::Read;

use bytes::Bytes;
use kafka_protocol::records::Compression;

/// Kafka's snappy framing (xerial): magic, version 1, compatible version 1, then blocks of
/// `length u32 | raw snappy`.
const XERIAL_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// Decompresses `data` with `codec`, failing once the output would pass `cap` bytes.
pub fn decompress_capped(data: &[u8], codec: Compression, cap: usize) -> anyhow::Result<Bytes> {
    let limit = cap as u64 + 1;
    let mut out = Vec::new();
    match codec {
        Compression::None => out.extend_from_slice(data),
        Compression::Gzip => {
            flate2::read::GzDecoder::new(data).take(limit).read_to_end(&mut out)?;
        }
        Compression::Lz4 => {
            lz4::Decoder::new(data)?.take(limit).read_to_end(&mut out)?;
        }
        Compression::Zstd => {
            zstd::stream::read::Decoder::new(data)?.take(limit).read_to_end(&mut out)?;
        }
        Compression::Snappy => snappy(data, cap, &mut out)?,
    }
    anyhow::ensure!(out.len() <= cap, "decompressed batch exceeds {cap} bytes");
    Ok(Bytes::from(out))
}

fn snappy(data: &[u8], cap: usize, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let raw_block = |block: &[u8], out: &mut Vec<u8>| -> anyhow::Result<()> {
        let len = snap::raw::decompress_len(block)?;
        anyhow::ensure!(out.len() + len <= cap, "decompressed batch exceeds {cap} bytes");
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new().decompress(block, &mut out[start..])?;
        Ok(())
    };
    let Some(mut rest) = data.strip_prefix(XERIAL_MAGIC.as_slice()) else { return raw_block(data, out) };
    while !rest.is_empty() {
        anyhow::ensure!(rest.len() >= 4, "truncated snappy block length");
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let block = rest.get(4..4 + len).ok_or_else(|| anyhow::anyhow!("truncated snappy block"))?;
        raw_block(block, out)?;
        rest = &rest[4 + len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

    fn compress(codec: Compression, data: &[u8]) -> Vec<u8> {
        let mut out = bytes::BytesMut::new();
        let fill = |b: &mut bytes::BytesMut| {
            b.extend_from_slice(data);
            Ok(())
        };
        let r = match codec {
            Compression::Gzip => Gzip::compress(&mut out, fill),
            Compression::Lz4 => Lz4::compress(&mut out, fill),
            Compression::Zstd => Zstd::compress(&mut out, fill),
            Compression::Snappy => Snappy::compress(&mut out, fill),
            Compression::None => return data.to_vec(),
        };
        r.expect("compress");
        out.to_vec()
    }

    #[test]
    fn round_trips_within_the_cap_and_refuses_bombs() {
        let data = vec![7u8; 200_000];
        for codec in [Compression::Gzip, Compression::Lz4, Compression::Zstd, Compression::Snappy, Compression::None] {
            let packed = compress(codec, &data);
            assert_eq!(decompress_capped(&packed, codec, 1 << 20).expect("fits")[..], data[..], "{codec:?}");
            assert!(decompress_capped(&packed, codec, 100_000).is_err(), "{codec:?} over the cap");
        }
        // A snappy block claiming 4 GiB is refused before anything is allocated.
        let mut bomb = XERIAL_MAGIC.to_vec();
        bomb.extend_from_slice(&6u32.to_be_bytes());
        bomb.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]);
        assert!(decompress_capped(&bomb, Compression::Snappy, 1 << 20).is_err());
    }
}

//! Pure protocol code: framing and the record-batch header view. No I/O, no executor, so
//! benches, fuzzers and the load generator can use it.

pub mod batch;
pub mod decompress;
pub mod envelope;
pub mod frame;
pub mod parts;

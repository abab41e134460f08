//! Kafka framing: every request and response is a 4-byte big-endian size, then that many bytes.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame size {size} exceeds socket.request.max.bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("negative or empty frame size {0}")]
    BadSize(i32),
}

/// Checks a size prefix against the limit; returns the body length to read.
pub fn body_len(prefix: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let size = i32::from_be_bytes(prefix);
    if size < 4 {
        // The smallest request header (api key, version, correlation id) is 8 bytes; Kafka
        // refuses anything that cannot hold a size field's worth.
        return Err(FrameError::BadSize(size));
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforces_limits() {
        assert_eq!(body_len(100i32.to_be_bytes(), 1000), Ok(100));
        assert_eq!(body_len(2000i32.to_be_bytes(), 1000), Err(FrameError::TooLarge { size: 2000, max: 1000 }));
        assert_eq!(body_len((-1i32).to_be_bytes(), 1000), Err(FrameError::BadSize(-1)));
        assert_eq!(body_len(0i32.to_be_bytes(), 1000), Err(FrameError::BadSize(0)));
    }
}

//! HdrHistogram interval logs (`.hlog`, the format of the Java `HistogramLogWriter`, read by
//! `HistogramLogProcessor` and HistogramLogAnalyzer): one compressed histogram per 1 s
//! interval. Values are microseconds; the Interval_Max column is in milliseconds. Warm-up
//! intervals are tagged `warmup`, so the standard tools (which read untagged intervals unless
//! asked for a tag) and [`read_merged`] see only the measured run and its drain.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriter, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use crate::stats::{new_histogram, Class, Merged};

pub const PUBLISH_FILE: &str = "publish.hlog";
pub const E2E_FILE: &str = "e2e.hlog";
pub const WARMUP_TAG: &str = "warmup";

#[derive(Debug, thiserror::Error)]
pub enum HlogError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: cannot write a histogram: {message}")]
    Write { path: String, message: String },
    #[error("{path}: not an HdrHistogram interval log (parse error at byte {offset})")]
    Parse { path: String, offset: usize },
    #[error("{path}: cannot decode the histogram at {start:.3} s: {message}")]
    Decode { path: String, start: f64, message: String },
}

type LogWriter<'a> = IntervalLogWriter<'a, 'a, BufWriter<File>, V2DeflateSerializer>;

/// The two logs of a run, open for writing.
pub struct Hlogs<'a> {
    publish: LogWriter<'a>,
    e2e: LogWriter<'a>,
    /// The logs' BaseTime, seconds since the epoch.
    base_s: f64,
    dir: String,
}

impl Hlogs<'_> {
    /// Writes interval `m` of a run that started at `run_start_unix` (seconds) to both logs.
    pub fn write(&mut self, m: &Merged, class: Class, run_start_unix: f64) -> Result<(), HlogError> {
        let offset_s = (run_start_unix - self.base_s).max(0.0);
        let start = Duration::from_secs_f64(offset_s + m.start_us as f64 / 1e6);
        let len = Duration::from_micros(m.end_us.saturating_sub(m.start_us));
        let tag = if class == Class::Warmup { Tag::new(WARMUP_TAG) } else { None };
        let err = |f: &str, e: &dyn std::fmt::Display| HlogError::Write {
            path: format!("{}/{f}", self.dir),
            message: e.to_string(),
        };
        self.publish.write_histogram(&m.data.publish, start, len, tag).map_err(|e| err(PUBLISH_FILE, &e))?;
        self.e2e.write_histogram(&m.data.e2e, start, len, tag).map_err(|e| err(E2E_FILE, &e))?;
        Ok(())
    }
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn write_header(w: &mut BufWriter<File>, what: &str, base: SystemTime) -> std::io::Result<()> {
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut b = IntervalLogWriterBuilder::new();
        b.add_comment(&format!("[Logged with weir-loadgen {}: {what}]", env!("CARGO_PKG_VERSION")))
            .add_comment("[Histogram log format version 1.3]")
            .add_comment("[Values in microseconds; Interval_Max in milliseconds]")
            .add_comment(&format!("[Intervals tagged {WARMUP_TAG} are the warm-up, left out of the results]"))
            .with_start_time(base)
            .with_base_time(base);
        b.begin_log_with(w, &mut serializer)?;
    }
    writeln!(w, "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"")?;
    Ok(())
}

/// Opens `publish.hlog` and `e2e.hlog` in `dir` with `base` as StartTime and BaseTime, runs
/// `f` with them, and flushes them after (also when `f` returns an error).
pub fn with_hlogs<T>(dir: &Path, base: SystemTime, f: impl FnOnce(&mut Hlogs<'_>) -> T) -> Result<T, HlogError> {
    let io = |name: &'static str| move |error| HlogError::Io { path: dir.join(name).display().to_string(), error };
    let mut pf = BufWriter::new(File::create(dir.join(PUBLISH_FILE)).map_err(io(PUBLISH_FILE))?);
    let mut ef = BufWriter::new(File::create(dir.join(E2E_FILE)).map_err(io(E2E_FILE))?);
    write_header(&mut pf, "publish latency, ack time minus (intended) send time", base).map_err(io(PUBLISH_FILE))?;
    write_header(&mut ef, "end-to-end latency, receive time minus (intended) send time", base).map_err(io(E2E_FILE))?;
    let mut ps = V2DeflateSerializer::new();
    let mut es = V2DeflateSerializer::new();
    let result = {
        let mut b = IntervalLogWriterBuilder::new();
        b.with_max_value_divisor(1000.0);
        let publish = b.begin_log_with(&mut pf, &mut ps).map_err(io(PUBLISH_FILE))?;
        let e2e = b.begin_log_with(&mut ef, &mut es).map_err(io(E2E_FILE))?;
        let mut logs = Hlogs { publish, e2e, base_s: unix_secs(base), dir: dir.display().to_string() };
        f(&mut logs)
    };
    pf.flush().map_err(io(PUBLISH_FILE))?;
    ef.flush().map_err(io(E2E_FILE))?;
    Ok(result)
}

/// Reads an interval log and merges its untagged intervals (the measured run); returns the
/// histogram and the number of intervals.
pub fn read_merged(path: &Path) -> Result<(Histogram<u64>, usize), HlogError> {
    let p = path.display().to_string();
    let text = std::fs::read(path).map_err(|error| HlogError::Io { path: p.clone(), error })?;
    let mut total = new_histogram();
    let mut n = 0;
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(&text) {
        let entry = entry.map_err(|e| match e {
            hdrhistogram::serialization::interval_log::LogIteratorError::ParseError { offset } => {
                HlogError::Parse { path: p.clone(), offset }
            }
        })?;
        let LogEntry::Interval(h) = entry else { continue };
        if h.tag().is_some() {
            continue;
        }
        let start = h.start_timestamp().as_secs_f64();
        let decode = |message: String| HlogError::Decode { path: p.clone(), start, message };
        let bytes = decode_base64(h.encoded_histogram()).ok_or_else(|| decode("bad base64".into()))?;
        let hist: Histogram<u64> =
            de.deserialize(&mut std::io::Cursor::new(bytes)).map_err(|e| decode(format!("{e:?}")))?;
        total.add(&hist).map_err(|e| decode(format!("{e:?}")))?;
        n += 1;
    }
    Ok((total, n))
}

/// Standard base64 (with padding), for the histograms in interval logs.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim().trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Interval, Phase};

    fn merged(sec: u64, lat: &[u64]) -> Merged {
        let mut data = Interval::default();
        for &l in lat {
            data.record_publish(l);
            data.record_e2e(l + 1);
        }
        Merged { key: (sec, Phase::Run), start_us: sec * 1_000_000, end_us: (sec + 1) * 1_000_000, data }
    }

    #[test]
    fn base64_decodes() {
        assert_eq!(decode_base64("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode_base64("aGk=").as_deref(), Some(&b"hi"[..]));
        assert_eq!(decode_base64("YWJj").as_deref(), Some(&b"abc"[..]));
        assert_eq!(decode_base64("a?bc"), None);
    }

    /// Written logs parse with the crate's reader; warm-up is tagged and left out.
    #[test]
    fn written_logs_read_back_without_the_warmup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = SystemTime::now();
        let base_s = unix_secs(base);
        let t0 = base_s + 0.25;
        with_hlogs(dir.path(), base, |logs| {
            logs.write(&merged(0, &[5_000_000]), Class::Warmup, t0).expect("write");
            logs.write(&merged(1, &[100, 200]), Class::Measured, t0).expect("write");
            logs.write(&merged(2, &[300]), Class::Measured, t0).expect("write");
        })
        .expect("logs");
        let (h, n) = read_merged(&dir.path().join(PUBLISH_FILE)).expect("read");
        assert_eq!(n, 2);
        assert_eq!(h.len(), 3);
        assert_eq!(h.max(), h.highest_equivalent(300));
        let (h, _) = read_merged(&dir.path().join(E2E_FILE)).expect("read");
        assert_eq!(h.min(), h.lowest_equivalent(101));

        let text = std::fs::read_to_string(dir.path().join(PUBLISH_FILE)).expect("text");
        assert!(text.contains("#[StartTime: "), "{text}");
        assert!(text.contains("\"StartTimestamp\",\"Interval_Length\""), "{text}");
        assert!(text.contains("Tag=warmup,0.250,1.000,50"), "{text}");
        let starts: Vec<f64> = IntervalLogIterator::new(text.as_bytes())
            .filter_map(|e| match e {
                Ok(LogEntry::Interval(i)) => Some(i.start_timestamp().as_secs_f64()),
                _ => None,
            })
            .collect();
        assert_eq!(starts, vec![0.25, 1.25, 2.25]);
    }

    #[test]
    fn garbage_is_a_parse_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.hlog");
        std::fs::write(&p, "this is not a log\n").expect("write");
        assert!(matches!(read_merged(&p), Err(HlogError::Parse { .. })));
    }
}

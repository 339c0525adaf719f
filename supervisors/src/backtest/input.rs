//! Tick files for backtests, read as a stream: CSV (`instrument_token,timestamp,last_price
//! [,volume]`, an optional header line) or JSONL (one object per line with those keys), each
//! possibly gzipped (`.csv.gz`, `.jsonl.gz`). Memory does not grow with the file: one row is
//! parsed at a time (CSV through the `csv` crate's byte records).
//!
//! Blank lines and lines starting with `#` are skipped. A row that cannot be read stops the
//! reader with the file, the line and the column named ([`TickFileError::Row`]), or, with
//! [`BadRows::Skip`], is counted and skipped.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use alpha_panda_core::events::MarketTick;
use alpha_panda_core::{InstrumentToken, Price, Timestamp};

/// Why a tick file cannot be used: which file, line and column, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TickFileError {
    #[error("cannot read tick file {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: line {line}, column {column} ({field}): {problem}")]
    Row {
        path: String,
        line: u64,
        /// 1-based: the field's position in a CSV row, the character in a JSONL line.
        column: u64,
        field: &'static str,
        problem: String,
    },
}

/// What a bad row does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRows {
    /// Stop with the row's file, line and column.
    Stop,
    /// Count it and go on.
    Skip,
}

/// One tick as a file gives it: what the stages read, in 40 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickRow {
    pub instrument_token: InstrumentToken,
    pub timestamp: Timestamp,
    pub last_price: Price,
    pub volume: Option<u64>,
}

impl TickRow {
    pub fn to_tick(self) -> MarketTick {
        MarketTick {
            volume_traded: self.volume,
            ..MarketTick::new(self.instrument_token, self.last_price, self.timestamp)
        }
    }

    /// Makes `tick` this row's tick, as [`to_tick`](Self::to_tick) would, for a `tick` that
    /// came from `to_tick` or this method (its other fields unset): four fields written
    /// rather than a whole tick.
    pub fn write_into(self, tick: &mut MarketTick) {
        tick.instrument_token = self.instrument_token;
        tick.last_price = self.last_price;
        tick.timestamp = self.timestamp;
        tick.volume_traded = self.volume;
    }
}

const FIELDS: [&str; 4] = ["instrument_token", "timestamp", "last_price", "volume"];

enum Format {
    Csv(Box<csv::Reader<Box<dyn Read + Send>>>, csv::ByteRecord),
    Jsonl(Box<dyn BufRead + Send>, Vec<u8>, u64),
}

/// A tick file, row by row.
pub struct TickReader {
    path: String,
    format: Format,
    bad_rows: BadRows,
    skipped: u64,
    first_error: Option<TickFileError>,
    /// Bytes of the (possibly compressed) file read so far, for progress.
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
    size: u64,
}

/// Counts the bytes read from the file under a decompressor.
struct Counted<R> {
    inner: R,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

impl TickReader {
    /// Opens `path`; the format follows the name: `.jsonl`/`.json`/`.ndjson` are JSONL,
    /// anything else CSV, and a trailing `.gz` is gunzipped first.
    pub fn open(path: &Path, bad_rows: BadRows) -> Result<Self, TickFileError> {
        let shown = path.display().to_string();
        let file = File::open(path).map_err(|source| TickFileError::Unreadable {
            path: shown.clone(),
            source,
        })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = Counted {
            inner: file,
            read: read.clone(),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let (gz, name) = match name.strip_suffix(".gz") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, name),
        };
        let raw: Box<dyn Read + Send> = if gz {
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
                1 << 16,
                counted,
            )))
        } else {
            Box::new(counted)
        };
        let jsonl = [".jsonl", ".json", ".ndjson"]
            .iter()
            .any(|e| name.ends_with(e));
        let format = if jsonl {
            Format::Jsonl(
                Box::new(BufReader::with_capacity(1 << 16, raw)),
                Vec::new(),
                0,
            )
        } else {
            let reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .comment(Some(b'#'))
                .buffer_capacity(1 << 16)
                .from_reader(raw);
            Format::Csv(Box::new(reader), csv::ByteRecord::new())
        };
        Ok(Self {
            path: shown,
            format,
            bad_rows,
            skipped: 0,
            first_error: None,
            read,
            size,
        })
    }

    /// Rows skipped as bad so far (with [`BadRows::Skip`]).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The first bad row skipped, if any.
    pub fn first_skipped(&self) -> Option<&TickFileError> {
        self.first_error.as_ref()
    }

    /// The share of the file read so far, 0–1 (0 when the size is unknown).
    pub fn progress(&self) -> f64 {
        if self.size == 0 {
            return 0.0;
        }
        self.read.load(std::sync::atomic::Ordering::Relaxed) as f64 / self.size as f64
    }

    /// The next tick, `None` at the end of the file.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<TickRow, TickFileError>> {
        loop {
            let row = match &mut self.format {
                Format::Csv(reader, record) => next_csv(&self.path, reader, record)?,
                Format::Jsonl(reader, line, number) => {
                    next_jsonl(&self.path, reader, line, number)?
                }
            };
            match (row, self.bad_rows) {
                (Ok(Some(row)), _) => return Some(Ok(row)),
                (Ok(None), _) => continue,
                (Err(e @ TickFileError::Unreadable { .. }), _) => return Some(Err(e)),
                (Err(e), BadRows::Stop) => return Some(Err(e)),
                (Err(e), BadRows::Skip) => {
                    self.skipped += 1;
                    if self.first_error.is_none() {
                        self.first_error = Some(e);
                    }
                }
            }
        }
    }
}

/// Rows per batch of [`TickReader::read_ahead`], and batches it reads ahead at most.
const BATCH_ROWS: usize = 8192;
const BATCHES_AHEAD: usize = 4;

impl TickReader {
    /// Reads the rows on a thread of their own while `each` takes them on this one, in
    /// order, a batch at a time, with the share of the file read so far: parsing the file
    /// and running the stages take a core each. Memory stays bounded (a few batches ahead).
    /// Returns the reader when the file is done (for [`skipped`](Self::skipped)), or the
    /// first bad row's error (with [`BadRows::Stop`]) after `each` had the rows before it.
    pub fn read_ahead(self, mut each: impl FnMut(&[TickRow], f64)) -> Result<Self, TickFileError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<TickRow>, f64)>(BATCHES_AHEAD);
        let (give_back, given_back) = std::sync::mpsc::channel::<Vec<TickRow>>();
        let mut reader = self;
        std::thread::scope(|scope| {
            let parse = scope.spawn(move || -> Result<TickReader, TickFileError> {
                loop {
                    let mut rows = given_back
                        .try_recv()
                        .unwrap_or_else(|_| Vec::with_capacity(BATCH_ROWS));
                    rows.clear();
                    let mut failed = None;
                    while rows.len() < BATCH_ROWS {
                        match reader.next() {
                            Some(Ok(row)) => rows.push(row),
                            Some(Err(e)) => {
                                failed = Some(e);
                                break;
                            }
                            None => break,
                        }
                    }
                    let last = failed.is_some() || rows.len() < BATCH_ROWS;
                    // The other end is gone only if `each` panicked: that panic is the news.
                    let sent = tx.send((rows, reader.progress())).is_ok();
                    match failed {
                        Some(e) => return Err(e),
                        None if last || !sent => return Ok(reader),
                        None => {}
                    }
                }
            });
            for (rows, share) in rx {
                each(&rows, share);
                let _ = give_back.send(rows);
            }
            parse
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

fn row_error(path: &str, line: u64, column: usize, problem: String) -> TickFileError {
    TickFileError::Row {
        path: path.to_owned(),
        line,
        column: column as u64 + 1,
        field: FIELDS.get(column).copied().unwrap_or("extra field"),
        problem,
    }
}

/// `Ok(None)`: a line to skip (the header).
type Parsed = Result<Option<TickRow>, TickFileError>;

fn next_csv(
    path: &str,
    reader: &mut csv::Reader<Box<dyn Read + Send>>,
    record: &mut csv::ByteRecord,
) -> Option<Parsed> {
    match reader.read_byte_record(record) {
        Ok(false) => return None,
        Ok(true) => {}
        Err(e) => {
            let line = e.position().map_or(0, |p| p.line());
            return Some(match e.into_kind() {
                csv::ErrorKind::Io(source) => Err(TickFileError::Unreadable {
                    path: path.to_owned(),
                    source,
                }),
                other => Err(row_error(path, line, 0, format!("{other:?}"))),
            });
        }
    }
    let line = record.position().map_or(0, |p| p.line());
    Some(parse_csv(path, line, record))
}

fn parse_csv(path: &str, line: u64, record: &csv::ByteRecord) -> Parsed {
    let err = |column: usize, problem: String| row_error(path, line, column, problem);
    // Fields are trimmed here, not by the reader (its trimming copies every record).
    let field = |i: usize| record.get(i).map(<[u8]>::trim_ascii);
    if field(0) == Some(b"instrument_token".as_slice()) {
        return Ok(None);
    }
    if !(3..=4).contains(&record.len()) {
        return Err(err(
            record.len().min(4),
            format!(
                "expected instrument_token,timestamp,last_price[,volume], got {} fields",
                record.len()
            ),
        ));
    }
    let text = |i: usize| -> Result<&str, TickFileError> {
        std::str::from_utf8(field(i).unwrap_or_default())
            .map_err(|_| err(i, "is not UTF-8".to_owned()))
    };
    let token = text(0)?;
    let instrument_token = token
        .parse::<InstrumentToken>()
        .map_err(|e| err(0, format!("{token:?}: {e}")))?;
    let ts = text(1)?;
    let timestamp = parse_timestamp(ts)
        .ok_or(())
        .or_else(|()| ts.parse::<Timestamp>())
        .map_err(|e| err(1, format!("{ts:?}: {e} (expected RFC 3339)")))?;
    let price = text(2)?;
    let last_price = price
        .parse::<Price>()
        .map_err(|e| err(2, format!("{price:?}: {e}")))?;
    let volume = match field(3) {
        Some(v) if !v.is_empty() => {
            let v = text(3)?;
            Some(
                v.parse::<u64>()
                    .map_err(|_| err(3, format!("{v:?} is not a whole number")))?,
            )
        }
        _ => None,
    };
    Ok(Some(TickRow {
        instrument_token,
        timestamp,
        last_price,
        volume,
    }))
}

/// The common shape `YYYY-MM-DDTHH:MM:SS[.fff]Z` without a general RFC 3339 parser; `None`
/// for anything else (which the general parser then reads or refuses).
fn parse_timestamp(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b.get(r)?.iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let nanos = match b.len() {
        20 => 0,
        n if b[19] == b'.' && (21..=30).contains(&n) => {
            let digits = n - 21;
            num(20..n - 1)? * 10u32.pow(9 - digits as u32)
        }
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let time = chrono::NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    Some(Timestamp(date.and_time(time).and_utc()))
}

/// One replayed tick as a JSONL line gives it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TickLine {
    instrument_token: InstrumentToken,
    timestamp: Timestamp,
    last_price: Price,
    #[serde(default)]
    volume: Option<u64>,
}

fn next_jsonl(
    path: &str,
    reader: &mut Box<dyn BufRead + Send>,
    line: &mut Vec<u8>,
    number: &mut u64,
) -> Option<Parsed> {
    line.clear();
    match reader.read_until(b'\n', line) {
        Ok(0) => return None,
        Ok(_) => {}
        Err(source) => {
            return Some(Err(TickFileError::Unreadable {
                path: path.to_owned(),
                source,
            }));
        }
    }
    *number += 1;
    let text = line.trim_ascii();
    if text.is_empty() || text.starts_with(b"#") {
        return Some(Ok(None));
    }
    Some(match serde_json::from_slice::<TickLine>(text) {
        Ok(t) => Ok(Some(TickRow {
            instrument_token: t.instrument_token,
            timestamp: t.timestamp,
            last_price: t.last_price,
            volume: t.volume,
        })),
        Err(e) => Err(TickFileError::Row {
            path: path.to_owned(),
            line: *number,
            column: e.column() as u64,
            field: "json",
            problem: e.to_string(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(name: &str, body: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ap-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    fn all(path: &Path, bad: BadRows) -> (Result<Vec<TickRow>, TickFileError>, u64) {
        let mut r = TickReader::open(path, bad).unwrap();
        let mut rows = Vec::new();
        while let Some(row) = r.next() {
            match row {
                Ok(t) => rows.push(t),
                Err(e) => return (Err(e), r.skipped()),
            }
        }
        (Ok(rows), r.skipped())
    }

    const CSV: &str = "instrument_token,timestamp,last_price\n# a comment\n\n738561,2024-01-15T04:00:00Z,2450.05\n738561,2024-01-15T04:00:00.250Z,2450.10,7\n";

    #[test]
    fn csv_jsonl_and_gzipped_csv_give_the_same_ticks() {
        let csv = write("a.csv", CSV.as_bytes());
        let jsonl = write(
            "a.jsonl",
            b"{\"instrument_token\":738561,\"timestamp\":\"2024-01-15T04:00:00Z\",\"last_price\":\"2450.05\"}\n\n{\"instrument_token\":738561,\"timestamp\":\"2024-01-15T04:00:00.250Z\",\"last_price\":\"2450.10\",\"volume\":7}\n",
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(CSV.as_bytes()).unwrap();
        let gz = write("a.csv.gz", &gz.finish().unwrap());
        let a = all(&csv, BadRows::Stop).0.unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].volume, Some(7));
        assert_eq!(a[1].timestamp.to_string(), "2024-01-15T04:00:00.250Z");
        assert_eq!(a, all(&jsonl, BadRows::Stop).0.unwrap());
        assert_eq!(a, all(&gz, BadRows::Stop).0.unwrap());
    }

    #[test]
    fn a_bad_row_names_the_file_line_and_column_or_is_skipped_and_counted() {
        let body = format!("{CSV}738561,yesterday,2450.05\n738561,2024-01-15T04:00:01Z,-1\n");
        let p = write("b.csv", body.as_bytes());
        let e = all(&p, BadRows::Stop).0.unwrap_err().to_string();
        assert!(
            e.contains("b.csv: line 6, column 2 (timestamp)") && e.contains("yesterday"),
            "{e}"
        );
        let (rows, skipped) = all(&p, BadRows::Skip);
        assert_eq!((rows.unwrap().len(), skipped), (2, 2));
        let e = all(
            &write("c.csv", b"738561,2024-01-15T04:00:00Z,-1\n"),
            BadRows::Stop,
        )
        .0
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 1, column 3 (last_price)"), "{e}");
    }

    #[test]
    fn the_fast_timestamp_path_agrees_with_rfc_3339() {
        for s in [
            "2024-01-15T04:00:00Z",
            "2026-01-05T03:50:00.250Z",
            "2024-02-29T23:59:59.999999999Z",
            "2024-01-15T04:00:00.1Z",
        ] {
            assert_eq!(
                parse_timestamp(s),
                Some(s.parse::<Timestamp>().unwrap()),
                "{s}"
            );
        }
        for s in ["2024-13-15T04:00:00Z", "2024-01-15T04:00:00+05:30", "x"] {
            assert_eq!(parse_timestamp(s), None, "{s}");
        }
    }
}

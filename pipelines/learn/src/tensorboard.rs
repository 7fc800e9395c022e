//! TensorBoard event files, written without TensorFlow: TFRecord framing (length, masked
//! CRC-32C of the length, the bytes, masked CRC-32C of the bytes) around `Event` protocol
//! buffers — the first carrying `file_version = "brain.Event:2"`, the rest one scalar summary
//! each (`Summary.Value{tag, simple_value}`), as `torch.utils.tensorboard` writes them.
//!
//! [`CsvTee`] turns the training diagnostics CSV into scalars as it is written: every column of
//! a row under its header's name (CleanRL's `losses/approx_kl`, `charts/mean_reward`, …), at the
//! row's `global_step`; `tensorboard --logdir <dir>` plots them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82F6_3B78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32C (Castagnoli), as TFRecord uses.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for b in bytes {
        c = CRC_TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// TFRecord's masked CRC.
pub fn masked_crc(bytes: &[u8]) -> u32 {
    let c = crc32c(bytes);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn varint(mut x: u64, out: &mut Vec<u8>) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

fn bytes_field(field: u64, b: &[u8], out: &mut Vec<u8>) {
    varint(field << 3 | 2, out);
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

/// An `Event` with `wall_time`, `step` and either `file_version` or one scalar.
fn event(wall_time: f64, step: i64, body: Body<'_>) -> Vec<u8> {
    let mut e = vec![];
    varint(1 << 3 | 1, &mut e);
    e.extend_from_slice(&wall_time.to_le_bytes());
    varint(2 << 3, &mut e);
    varint(step as u64, &mut e);
    match body {
        Body::FileVersion(v) => bytes_field(3, v.as_bytes(), &mut e),
        Body::Scalar(tag, value) => {
            let mut v = vec![];
            bytes_field(1, tag.as_bytes(), &mut v);
            varint(2 << 3 | 5, &mut v);
            v.extend_from_slice(&value.to_le_bytes());
            let mut summary = vec![];
            bytes_field(1, &v, &mut summary);
            bytes_field(5, &summary, &mut e);
        }
    }
    e
}

enum Body<'a> {
    FileVersion(&'a str),
    Scalar(&'a str, f32),
}

/// One event file.
#[derive(Debug)]
pub struct EventWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<unix time>.graphscaler` (and `dir`).
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let t = now();
        let path = dir.join(format!("events.out.tfevents.{}.graphscaler", t as u64));
        let mut w = Self {
            out: BufWriter::new(File::create(&path)?),
            path,
        };
        w.record(&event(t, 0, Body::FileVersion("brain.Event:2")))?;
        Ok(w)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn record(&mut self, data: &[u8]) -> std::io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.out.write_all(&len)?;
        self.out.write_all(&masked_crc(&len).to_le_bytes())?;
        self.out.write_all(data)?;
        self.out.write_all(&masked_crc(data).to_le_bytes())
    }

    /// One scalar.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f32) -> std::io::Result<()> {
        self.record(&event(now(), step, Body::Scalar(tag, value)))
    }

    /// Flushes.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A CSV writer that also writes each row's columns as TensorBoard scalars (see the module).
#[derive(Debug)]
pub struct CsvTee<W: Write> {
    csv: W,
    events: EventWriter,
    header: Option<Vec<String>>,
    line: Vec<u8>,
}

impl<W: Write> CsvTee<W> {
    /// Tees `csv` into `events`.
    pub fn new(csv: W, events: EventWriter) -> Self {
        Self {
            csv,
            events,
            header: None,
            line: vec![],
        }
    }

    fn row(&mut self, line: &str) -> std::io::Result<()> {
        let cols: Vec<&str> = line.trim_end_matches('\r').split(',').collect();
        let Some(header) = &self.header else {
            self.header = Some(cols.iter().map(|s| s.to_string()).collect());
            return Ok(());
        };
        let step = cols
            .first()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0) as i64;
        for (tag, v) in header.iter().zip(&cols).skip(1) {
            if let Ok(x) = v.parse::<f32>() {
                self.events
                    .record(&event(now(), step, Body::Scalar(tag, x)))?;
            }
        }
        Ok(())
    }
}

impl<W: Write> Write for CsvTee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.csv.write(buf)?;
        self.line.extend_from_slice(&buf[..n]);
        while let Some(i) = self.line.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.line.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.row(&text)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.csv.flush()?;
        self.events.flush()
    }
}

/// Reads back the scalars of an event file `(tag, step, value)`, checking every CRC: what the
/// tests use, and a way to inspect a file without TensorBoard.
pub fn read_scalars(path: &Path) -> std::io::Result<Vec<(String, i64, f32)>> {
    let data = std::fs::read(path)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut out = vec![];
    let mut i = 0;
    while i < data.len() {
        let head = data
            .get(i..i + 12)
            .ok_or_else(|| bad("truncated record header"))?;
        let len = u64::from_le_bytes(head[..8].try_into().map_err(|_| bad("length"))?) as usize;
        if u32::from_le_bytes(head[8..12].try_into().map_err(|_| bad("crc"))?)
            != masked_crc(&head[..8])
        {
            return Err(bad("length CRC mismatch"));
        }
        let body = data
            .get(i + 12..i + 12 + len)
            .ok_or_else(|| bad("truncated record"))?;
        let crc = data
            .get(i + 12 + len..i + 16 + len)
            .ok_or_else(|| bad("truncated record CRC"))?;
        if u32::from_le_bytes(crc.try_into().map_err(|_| bad("crc"))?) != masked_crc(body) {
            return Err(bad("data CRC mismatch"));
        }
        if let Some(s) = decode_scalar(body) {
            out.push(s);
        }
        i += 16 + len;
    }
    Ok(out)
}

fn read_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut x = 0u64;
    let mut shift = 0;
    loop {
        let byte = *b.get(*i)?;
        *i += 1;
        x |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(x);
        }
        shift += 7;
    }
}

/// One field of a message: number, wire type, payload bytes, varint value.
type Field<'a> = (u64, u64, &'a [u8], u64);

/// Fields of one message.
fn fields(b: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        let key = read_varint(b, &mut i)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let v = read_varint(b, &mut i)?;
                out.push((field, wire, &b[i..i], v));
            }
            1 => {
                out.push((field, wire, b.get(i..i + 8)?, 0));
                i += 8;
            }
            2 => {
                let n = read_varint(b, &mut i)? as usize;
                out.push((field, wire, b.get(i..i + n)?, 0));
                i += n;
            }
            5 => {
                out.push((field, wire, b.get(i..i + 4)?, 0));
                i += 4;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn decode_scalar(event: &[u8]) -> Option<(String, i64, f32)> {
    let f = fields(event)?;
    let step = f.iter().find(|x| x.0 == 2).map_or(0, |x| x.3 as i64);
    let summary = f.iter().find(|x| x.0 == 5)?.2;
    let value = fields(summary)?.into_iter().find(|x| x.0 == 1)?.2;
    let v = fields(value)?;
    let tag = String::from_utf8(v.iter().find(|x| x.0 == 1)?.2.to_vec()).ok()?;
    let x = f32::from_le_bytes(v.iter().find(|x| x.0 == 2)?.2.try_into().ok()?);
    Some((tag, step, x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_its_check_values() {
        // The standard check value, and RFC 3720's (iSCSI) 32 bytes of zeros.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    }

    #[test]
    fn the_csv_becomes_scalars_at_their_steps() {
        let dir = tempfile::tempdir().unwrap();
        let events = EventWriter::create(dir.path()).unwrap();
        let path = events.path().to_path_buf();
        let mut csv = vec![];
        {
            let mut tee = CsvTee::new(&mut csv, events);
            // Written in pieces, as a BufWriter may.
            tee.write_all(b"global_step,losses/approx_kl,char").unwrap();
            tee.write_all(b"ts/mean_reward\n512,0.01,-2.5\n10").unwrap();
            tee.write_all(b"24,0.02,NaN-ish\n").unwrap();
            tee.flush().unwrap();
        }
        assert!(String::from_utf8(csv).unwrap().starts_with("global_step,"));
        let s = read_scalars(&path).unwrap();
        assert_eq!(
            s,
            vec![
                ("losses/approx_kl".to_string(), 512, 0.01),
                ("charts/mean_reward".to_string(), 512, -2.5),
                ("losses/approx_kl".to_string(), 1024, 0.02),
            ]
        );
        // A flipped byte is caught by the CRC.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(read_scalars(&path).is_err());
    }
}

//! Streaming pcap and pcapng reading (and a minimal pcap writer for tests and fixtures).
//!
//! The reader holds one record buffer, reused for every packet, so memory stays bounded on
//! multi-gigabyte captures. Records above [`MAX_RECORD_LEN`] are skipped (reported as a
//! recoverable error), never buffered.

use std::io::{self, Read, Write};

/// Largest packet record kept.
// Why: 256 KiB covers the 262,144-byte snap length tcpdump uses by default; anything larger is
// corrupt or not worth classifying.
pub const MAX_RECORD_LEN: usize = 262_144;
/// Largest non-packet pcapng block read into memory (interface and section headers).
// Why: option blocks are small; 1 MiB bounds a hostile file while accepting verbose comments.
pub const MAX_META_BLOCK_LEN: usize = 1 << 20;
/// Most interfaces one pcapng section may describe.
pub const MAX_INTERFACES: usize = 4096;

/// Errors reading a capture.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PcapError {
    /// Reading failed.
    #[error("read error: {0}")]
    Io(#[from] io::Error),
    /// The file starts with neither a pcap nor a pcapng magic number.
    #[error("not a pcap or pcapng file (magic {0:#010x})")]
    BadMagic(u32),
    /// The file ends in the middle of a record.
    #[error("capture truncated in the middle of a record")]
    Truncated,
    /// A record or block is malformed or too large; it was skipped and reading can go on.
    #[error("malformed record skipped: {0}")]
    Skipped(&'static str),
    /// A pcapng block is malformed in a way that loses the framing; reading cannot go on.
    #[error("malformed pcapng block: {0}")]
    Framing(&'static str),
}

impl PcapError {
    /// Whether [`CaptureReader::next_record`] can be called again.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, PcapError::Skipped(_))
    }
}

/// One captured packet, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// pcap link type of the interface.
    pub linktype: u32,
    /// Captured bytes.
    pub data: &'a [u8],
    /// Original length on the wire.
    pub orig_len: u32,
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Pcap { nanos: bool, linktype: u32 },
    PcapNg,
}

#[derive(Debug, Clone, Copy)]
struct Iface {
    linktype: u32,
    /// Timestamp units per second.
    units_per_s: u64,
}

/// A streaming reader for pcap and pcapng.
#[derive(Debug)]
pub struct CaptureReader<R: Read> {
    inner: R,
    format: Format,
    big_endian: bool,
    buf: Vec<u8>,
    ifaces: Vec<Iface>,
    /// For pcapng, the first block (a section header) was consumed while sniffing the magic.
    pending_shb: bool,
    /// Bytes consumed so far.
    offset: u64,
}

fn rd_u32(b: &[u8], off: usize, be: bool) -> Option<u32> {
    let s: [u8; 4] = b.get(off..off + 4)?.try_into().ok()?;
    Some(if be {
        u32::from_be_bytes(s)
    } else {
        u32::from_le_bytes(s)
    })
}

fn rd_u16(b: &[u8], off: usize, be: bool) -> Option<u16> {
    let s: [u8; 2] = b.get(off..off + 2)?.try_into().ok()?;
    Some(if be {
        u16::from_be_bytes(s)
    } else {
        u16::from_le_bytes(s)
    })
}

impl<R: Read> CaptureReader<R> {
    /// Start reading; checks the magic number (and the pcap global header).
    pub fn new(mut inner: R) -> Result<Self, PcapError> {
        let mut magic = [0u8; 4];
        inner.read_exact(&mut magic)?;
        let le = u32::from_le_bytes(magic);
        let mut reader = Self {
            inner,
            format: Format::PcapNg,
            big_endian: false,
            buf: Vec::new(),
            ifaces: Vec::new(),
            pending_shb: false,
            offset: 4,
        };
        match le {
            0xa1b2_c3d4 | 0xa1b2_3c4d | 0xd4c3_b2a1 | 0x4d3c_b2a1 => {
                let be = matches!(le, 0xd4c3_b2a1 | 0x4d3c_b2a1);
                let nanos = matches!(le, 0xa1b2_3c4d | 0x4d3c_b2a1);
                let mut hdr = [0u8; 20];
                reader.read_exact_counted_into(&mut hdr)?;
                let linktype = rd_u32(&hdr, 16, be).unwrap_or(0) & 0x0fff_ffff;
                reader.big_endian = be;
                reader.format = Format::Pcap { nanos, linktype };
            }
            0x0a0d_0d0a => {
                reader.pending_shb = true;
            }
            other => return Err(PcapError::BadMagic(other)),
        }
        Ok(reader)
    }

    /// Whether the file is pcapng.
    pub fn is_pcapng(&self) -> bool {
        matches!(self.format, Format::PcapNg)
    }

    /// Bytes consumed so far (for progress).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn read_exact_counted_into(&mut self, out: &mut [u8]) -> Result<(), PcapError> {
        match self.inner.read_exact(out) {
            Ok(()) => {
                self.offset += out.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(PcapError::Truncated),
            Err(e) => Err(e.into()),
        }
    }

    /// Fill `self.buf` with exactly `n` bytes.
    fn fill(&mut self, n: usize) -> Result<(), PcapError> {
        self.buf.resize(n, 0);
        match self.inner.read_exact(&mut self.buf[..n]) {
            Ok(()) => {
                self.offset += n as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(PcapError::Truncated),
            Err(e) => Err(e.into()),
        }
    }

    fn skip(&mut self, n: u64) -> Result<(), PcapError> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        self.offset += copied;
        if copied < n {
            return Err(PcapError::Truncated);
        }
        Ok(())
    }

    /// Read the first 4 bytes of the next record; `None` at a clean end of file.
    fn first4(&mut self) -> Result<Option<[u8; 4]>, PcapError> {
        let mut b = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            let n = match self.inner.read(&mut b[got..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(PcapError::Truncated)
                };
            }
            got += n;
        }
        self.offset += 4;
        Ok(Some(b))
    }

    /// The next packet, `Ok(None)` at end of file.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, PcapError> {
        match self.format {
            Format::Pcap { nanos, linktype } => self.next_pcap(nanos, linktype),
            Format::PcapNg => self.next_pcapng(),
        }
    }

    fn next_pcap(&mut self, nanos: bool, linktype: u32) -> Result<Option<Record<'_>>, PcapError> {
        let Some(first) = self.first4()? else {
            return Ok(None);
        };
        let mut rest = [0u8; 12];
        self.read_exact_counted_into(&mut rest)?;
        let be = self.big_endian;
        let sec = rd_u32(&first, 0, be).unwrap_or(0);
        let frac = rd_u32(&rest, 0, be).unwrap_or(0);
        let incl = rd_u32(&rest, 4, be).unwrap_or(0) as usize;
        let orig = rd_u32(&rest, 8, be).unwrap_or(0);
        if incl > MAX_RECORD_LEN {
            self.skip(incl as u64)?;
            return Err(PcapError::Skipped("record larger than the limit"));
        }
        self.fill(incl)?;
        let frac_ns = if nanos {
            u64::from(frac)
        } else {
            u64::from(frac) * 1000
        };
        Ok(Some(Record {
            ts_ns: u64::from(sec) * 1_000_000_000 + frac_ns,
            linktype,
            data: &self.buf[..incl],
            orig_len: orig,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<Record<'_>>, PcapError> {
        loop {
            let block_type = if self.pending_shb {
                self.pending_shb = false;
                0x0a0d_0d0a
            } else {
                let Some(first) = self.first4()? else {
                    return Ok(None);
                };
                // Section headers have a palindromic type, so byte order does not matter yet.
                if first == [0x0a, 0x0d, 0x0d, 0x0a] {
                    0x0a0d_0d0a
                } else {
                    rd_u32(&first, 0, self.big_endian).unwrap_or(0)
                }
            };
            let mut lenb = [0u8; 4];
            self.read_exact_counted_into(&mut lenb)?;
            if block_type == 0x0a0d_0d0a {
                let mut bom = [0u8; 4];
                self.read_exact_counted_into(&mut bom)?;
                self.big_endian = match u32::from_le_bytes(bom) {
                    0x1a2b_3c4d => false,
                    0x4d3c_2b1a => true,
                    _ => return Err(PcapError::Framing("bad byte-order magic")),
                };
                self.ifaces.clear();
                let total = rd_u32(&lenb, 0, self.big_endian).unwrap_or(0) as usize;
                if total < 28 || total % 4 != 0 {
                    return Err(PcapError::Framing("bad section header length"));
                }
                self.skip((total - 12) as u64)?;
                continue;
            }
            let total = rd_u32(&lenb, 0, self.big_endian).unwrap_or(0) as usize;
            if total < 12 || total % 4 != 0 {
                return Err(PcapError::Framing("bad block length"));
            }
            let body_len = total - 12;
            let is_packet = matches!(block_type, 2 | 3 | 6);
            let limit = if is_packet {
                MAX_RECORD_LEN + 64
            } else {
                MAX_META_BLOCK_LEN
            };
            if body_len > limit || !(is_packet || block_type == 1) {
                self.skip(body_len as u64 + 4)?;
                if body_len > limit {
                    return Err(PcapError::Skipped("pcapng block larger than the limit"));
                }
                continue;
            }
            self.fill(body_len + 4)?;
            let be = self.big_endian;
            match block_type {
                1 => {
                    let linktype = u32::from(rd_u16(&self.buf, 0, be).unwrap_or(0));
                    let mut units_per_s = 1_000_000u64;
                    let mut i = 8;
                    while i + 4 <= body_len {
                        let code = rd_u16(&self.buf, i, be).unwrap_or(0);
                        let len = usize::from(rd_u16(&self.buf, i + 2, be).unwrap_or(0));
                        if code == 0 {
                            break;
                        }
                        if code == 9 && len == 1 {
                            let v = self.buf.get(i + 4).copied().unwrap_or(6);
                            let exp = u32::from(v & 0x7f);
                            units_per_s = if v & 0x80 != 0 {
                                2u64.checked_pow(exp).unwrap_or(1_000_000)
                            } else {
                                10u64.checked_pow(exp).unwrap_or(1_000_000)
                            };
                        }
                        i += 4 + len.div_ceil(4) * 4;
                    }
                    if self.ifaces.len() < MAX_INTERFACES {
                        self.ifaces.push(Iface {
                            linktype,
                            units_per_s: units_per_s.max(1),
                        });
                    }
                }
                6 | 2 => {
                    let (iface, hi, lo, cap, orig, data_off) = if block_type == 6 {
                        (
                            rd_u32(&self.buf, 0, be).unwrap_or(0) as usize,
                            rd_u32(&self.buf, 4, be).unwrap_or(0),
                            rd_u32(&self.buf, 8, be).unwrap_or(0),
                            rd_u32(&self.buf, 12, be).unwrap_or(0) as usize,
                            rd_u32(&self.buf, 16, be).unwrap_or(0),
                            20,
                        )
                    } else {
                        (
                            usize::from(rd_u16(&self.buf, 0, be).unwrap_or(0)),
                            rd_u32(&self.buf, 4, be).unwrap_or(0),
                            rd_u32(&self.buf, 8, be).unwrap_or(0),
                            rd_u32(&self.buf, 12, be).unwrap_or(0) as usize,
                            rd_u32(&self.buf, 16, be).unwrap_or(0),
                            20,
                        )
                    };
                    let Some(info) = self.ifaces.get(iface).copied() else {
                        return Err(PcapError::Skipped("packet for an undeclared interface"));
                    };
                    if data_off + cap > body_len {
                        return Err(PcapError::Skipped("packet data past its block"));
                    }
                    let ts = (u128::from(hi) << 32) | u128::from(lo);
                    let ts_ns = (ts * 1_000_000_000 / u128::from(info.units_per_s)) as u64;
                    return Ok(Some(Record {
                        ts_ns,
                        linktype: info.linktype,
                        data: &self.buf[data_off..data_off + cap],
                        orig_len: orig,
                    }));
                }
                3 => {
                    let Some(info) = self.ifaces.first().copied() else {
                        return Err(PcapError::Skipped("simple packet before any interface"));
                    };
                    let orig = rd_u32(&self.buf, 0, be).unwrap_or(0);
                    let cap = (orig as usize).min(body_len.saturating_sub(4));
                    return Ok(Some(Record {
                        ts_ns: 0,
                        linktype: info.linktype,
                        data: &self.buf[4..4 + cap],
                        orig_len: orig,
                    }));
                }
                _ => {}
            }
        }
    }
}

/// Write a pcap global header (microsecond timestamps, little endian).
pub fn write_pcap_header<W: Write>(w: &mut W, linktype: u32) -> io::Result<()> {
    w.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
    w.write_all(&2u16.to_le_bytes())?;
    w.write_all(&4u16.to_le_bytes())?;
    w.write_all(&0i32.to_le_bytes())?;
    w.write_all(&0u32.to_le_bytes())?;
    w.write_all(&65535u32.to_le_bytes())?;
    w.write_all(&linktype.to_le_bytes())
}

/// Write one pcap record.
pub fn write_pcap_record<W: Write>(w: &mut W, ts_ns: u64, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len()).map_err(|_| io::Error::other("record too long"))?;
    w.write_all(&((ts_ns / 1_000_000_000) as u32).to_le_bytes())?;
    w.write_all(&(((ts_ns % 1_000_000_000) / 1000) as u32).to_le_bytes())?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(data)
}

/// Write a minimal pcapng file (one section, one interface, enhanced packet blocks with
/// microsecond timestamps), for tests.
pub fn write_pcapng<W: Write>(
    w: &mut W,
    linktype: u16,
    packets: &[(u64, &[u8])],
) -> io::Result<()> {
    // Section header block.
    w.write_all(&0x0a0d_0d0au32.to_le_bytes())?;
    w.write_all(&28u32.to_le_bytes())?;
    w.write_all(&0x1a2b_3c4du32.to_le_bytes())?;
    w.write_all(&1u16.to_le_bytes())?;
    w.write_all(&0u16.to_le_bytes())?;
    w.write_all(&(-1i64).to_le_bytes())?;
    w.write_all(&28u32.to_le_bytes())?;
    // Interface description block.
    w.write_all(&1u32.to_le_bytes())?;
    w.write_all(&20u32.to_le_bytes())?;
    w.write_all(&linktype.to_le_bytes())?;
    w.write_all(&0u16.to_le_bytes())?;
    w.write_all(&65535u32.to_le_bytes())?;
    w.write_all(&20u32.to_le_bytes())?;
    for (ts_ns, data) in packets {
        let pad = data.len().div_ceil(4) * 4 - data.len();
        let total = (32 + data.len() + pad) as u32;
        let us = ts_ns / 1000;
        w.write_all(&6u32.to_le_bytes())?;
        w.write_all(&total.to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?;
        w.write_all(&((us >> 32) as u32).to_le_bytes())?;
        w.write_all(&(us as u32).to_le_bytes())?;
        w.write_all(&(data.len() as u32).to_le_bytes())?;
        w.write_all(&(data.len() as u32).to_le_bytes())?;
        w.write_all(data)?;
        w.write_all(&vec![0u8; pad])?;
        w.write_all(&total.to_le_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_round_trip() {
        let mut f = Vec::new();
        write_pcap_header(&mut f, 1).unwrap();
        write_pcap_record(&mut f, 1_500_000_000_123_456_000, &[1, 2, 3]).unwrap();
        write_pcap_record(&mut f, 1_500_000_001_000_000_000, &[4; 60]).unwrap();
        let mut r = CaptureReader::new(&f[..]).unwrap();
        let a = r.next_record().unwrap().unwrap();
        assert_eq!(
            (a.ts_ns, a.linktype, a.data),
            (1_500_000_000_123_456_000, 1, &[1u8, 2, 3][..])
        );
        assert_eq!(r.next_record().unwrap().unwrap().data.len(), 60);
        assert!(r.next_record().unwrap().is_none());
    }

    #[test]
    fn pcapng_round_trip() {
        let mut f = Vec::new();
        write_pcapng(
            &mut f,
            1,
            &[(2_000_000_000, &[9, 9, 9]), (3_000_001_000, &[7; 5])],
        )
        .unwrap();
        let mut r = CaptureReader::new(&f[..]).unwrap();
        assert!(r.is_pcapng());
        let a = r.next_record().unwrap().unwrap();
        assert_eq!((a.ts_ns, a.data), (2_000_000_000, &[9u8, 9, 9][..]));
        let b = r.next_record().unwrap().unwrap();
        assert_eq!((b.ts_ns, b.data.len()), (3_000_001_000, 5));
        assert!(r.next_record().unwrap().is_none());
    }

    #[test]
    fn truncated_and_bad_files() {
        assert!(matches!(
            CaptureReader::new(&[1u8, 2, 3, 4][..]),
            Err(PcapError::BadMagic(_))
        ));
        let mut f = Vec::new();
        write_pcap_header(&mut f, 1).unwrap();
        write_pcap_record(&mut f, 0, &[1; 40]).unwrap();
        f.truncate(f.len() - 5);
        let mut r = CaptureReader::new(&f[..]).unwrap();
        assert!(matches!(r.next_record(), Err(PcapError::Truncated)));
    }

    #[test]
    fn oversized_record_is_skipped() {
        let mut f = Vec::new();
        write_pcap_header(&mut f, 1).unwrap();
        write_pcap_record(&mut f, 0, &vec![0u8; MAX_RECORD_LEN + 1]).unwrap();
        write_pcap_record(&mut f, 0, &[5; 10]).unwrap();
        let mut r = CaptureReader::new(&f[..]).unwrap();
        let e = r.next_record().unwrap_err();
        assert!(e.is_recoverable());
        assert_eq!(r.next_record().unwrap().unwrap().data, &[5u8; 10][..]);
    }
}

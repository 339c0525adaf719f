//! The KiteTicker binary protocol: frames, packets, segments, prices.
//!
//! Contract: [`parse_frame`] takes the bytes of one binary WebSocket message and returns a
//! heartbeat (a 1-byte message), the packets it carries, or a [`FrameError`] naming what is
//! wrong and where. It never panics and never reads out of bounds, whatever the bytes: a
//! message is `u16 N` then N × (`u16 len`, `len` bytes), all big-endian; a count or a length
//! that runs past the end, or bytes left over after the N packets, reject the whole message.
//! A packet's kind comes from its length — 8 LTP, 28 index quote, 32 index full, 44 quote,
//! 184 full — and a packet of any other length is skipped and counted in
//! [`Frame::Packets::skipped`]. Prices are integers divided by the segment's divisor
//! (`token & 0xFF`: CDS 10^7, BCD 10^4, every other segment 100). Index packets carry their
//! OHLC as high, low, open, close; tradable packets as open, high, low, close.
//! [`encode_frame`] writes the same format (for the simulator and the tests).

use rust_decimal::Decimal;

/// Where an instrument trades, from the low byte of its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Nse,
    Nfo,
    Cds,
    Bse,
    Bfo,
    Bcd,
    Mcx,
    McxSx,
    Indices,
    Unknown(u8),
}

impl Segment {
    pub fn of_token(token: u32) -> Self {
        match token & 0xFF {
            1 => Self::Nse,
            2 => Self::Nfo,
            3 => Self::Cds,
            4 => Self::Bse,
            5 => Self::Bfo,
            6 => Self::Bcd,
            7 => Self::Mcx,
            8 => Self::McxSx,
            9 => Self::Indices,
            other => Self::Unknown(other as u8),
        }
    }

    /// What a wire price is divided by.
    pub fn divisor(self) -> u32 {
        match self {
            Self::Cds => 10_000_000,
            Self::Bcd => 10_000,
            _ => 100,
        }
    }

    /// Indices are not tradable: their packets are 28 or 32 bytes.
    pub fn is_index(self) -> bool {
        self == Self::Indices
    }
}

/// The subscription mode a packet length belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ltp,
    Quote,
    Full,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ltp => "ltp",
            Self::Quote => "quote",
            Self::Full => "full",
        }
    }
}

/// Open, high, low, close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ohlc {
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
}

/// One level of market depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub quantity: u32,
    pub price: Decimal,
    pub orders: u16,
}

/// One decoded packet. Fields a packet kind does not carry are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub token: u32,
    pub mode: Mode,
    pub tradable: bool,
    pub last_price: Decimal,
    pub last_quantity: Option<u32>,
    pub average_price: Option<Decimal>,
    pub volume: Option<u32>,
    pub total_buy_quantity: Option<u32>,
    pub total_sell_quantity: Option<u32>,
    pub ohlc: Option<Ohlc>,
    /// Index packets: the price change field as sent (signed, divided like a price).
    pub index_change: Option<Decimal>,
    /// Unix seconds; `None` when absent or zero.
    pub last_trade_time: Option<u32>,
    pub oi: Option<u32>,
    pub oi_day_high: Option<u32>,
    pub oi_day_low: Option<u32>,
    /// Unix seconds; `None` when absent or zero.
    pub exchange_timestamp: Option<u32>,
    /// Five bids then five asks.
    pub depth: Option<([Level; 5], [Level; 5])>,
}

/// One binary message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A 1-byte message: the connection is alive, no data.
    Heartbeat,
    Packets {
        packets: Vec<Packet>,
        /// Packets of a length this parser does not know.
        skipped: usize,
    },
}

/// Why a binary message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty binary message")]
    Empty,
    #[error("binary message of {len} bytes is too short for its packet count")]
    NoCount { len: usize },
    #[error(
        "packet {index} of {count}: its length field at byte {at} runs past the end ({len} bytes)"
    )]
    LengthPastEnd {
        index: usize,
        count: usize,
        at: usize,
        len: usize,
    },
    #[error("packet {index} of {count}: {need} bytes at byte {at} run past the end ({len} bytes)")]
    BodyPastEnd {
        index: usize,
        count: usize,
        at: usize,
        need: usize,
        len: usize,
    },
    #[error("{extra} bytes left after the {count} packets of the message")]
    Trailing { count: usize, extra: usize },
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0)
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    u32_at(b, at) as i32
}

fn price(raw: i64, divisor: u32) -> Decimal {
    let scale = match divisor {
        10_000_000 => 7,
        10_000 => 4,
        _ => 2,
    };
    Decimal::new(raw, scale).normalize()
}

fn nonzero(v: u32) -> Option<u32> {
    (v != 0).then_some(v)
}

/// Parses one binary message.
pub fn parse_frame(bytes: &[u8]) -> Result<Frame, FrameError> {
    match bytes.len() {
        0 => return Err(FrameError::Empty),
        1 => return Ok(Frame::Heartbeat),
        _ => {}
    }
    let count = u16_at(bytes, 0).ok_or(FrameError::NoCount { len: bytes.len() })? as usize;
    let mut at = 2;
    let mut packets = Vec::with_capacity(count.min(bytes.len() / 10));
    let mut skipped = 0;
    for index in 0..count {
        let plen = u16_at(bytes, at).ok_or(FrameError::LengthPastEnd {
            index,
            count,
            at,
            len: bytes.len(),
        })? as usize;
        at += 2;
        let body = bytes.get(at..at + plen).ok_or(FrameError::BodyPastEnd {
            index,
            count,
            at,
            need: plen,
            len: bytes.len(),
        })?;
        at += plen;
        match parse_packet(body) {
            Some(p) => packets.push(p),
            None => skipped += 1,
        }
    }
    if at != bytes.len() {
        return Err(FrameError::Trailing {
            count,
            extra: bytes.len() - at,
        });
    }
    Ok(Frame::Packets { packets, skipped })
}

/// Parses one packet by its length; `None` for an unknown length.
pub fn parse_packet(b: &[u8]) -> Option<Packet> {
    let token = u32_at(b, 0);
    let seg = Segment::of_token(token);
    let d = seg.divisor();
    let p = |at: usize| price(u32_at(b, at) as i64, d);
    let base = Packet {
        token,
        mode: Mode::Ltp,
        tradable: !seg.is_index(),
        last_price: p(4),
        last_quantity: None,
        average_price: None,
        volume: None,
        total_buy_quantity: None,
        total_sell_quantity: None,
        ohlc: None,
        index_change: None,
        last_trade_time: None,
        oi: None,
        oi_day_high: None,
        oi_day_low: None,
        exchange_timestamp: None,
        depth: None,
    };
    match b.len() {
        8 => Some(base),
        28 | 32 => Some(Packet {
            mode: if b.len() == 28 {
                Mode::Quote
            } else {
                Mode::Full
            },
            tradable: false,
            ohlc: Some(Ohlc {
                high: p(8),
                low: p(12),
                open: p(16),
                close: p(20),
            }),
            index_change: Some(price(i32_at(b, 24) as i64, d)),
            exchange_timestamp: if b.len() == 32 {
                nonzero(u32_at(b, 28))
            } else {
                None
            },
            ..base
        }),
        44 | 184 => {
            let full = b.len() == 184;
            let level = |at: usize| Level {
                quantity: u32_at(b, at),
                price: p(at + 4),
                orders: u16_at(b, at + 8).unwrap_or(0),
            };
            Some(Packet {
                mode: if full { Mode::Full } else { Mode::Quote },
                last_quantity: Some(u32_at(b, 8)),
                average_price: Some(p(12)),
                volume: Some(u32_at(b, 16)),
                total_buy_quantity: Some(u32_at(b, 20)),
                total_sell_quantity: Some(u32_at(b, 24)),
                ohlc: Some(Ohlc {
                    open: p(28),
                    high: p(32),
                    low: p(36),
                    close: p(40),
                }),
                last_trade_time: if full { nonzero(u32_at(b, 44)) } else { None },
                oi: full.then(|| u32_at(b, 48)),
                oi_day_high: full.then(|| u32_at(b, 52)),
                oi_day_low: full.then(|| u32_at(b, 56)),
                exchange_timestamp: if full { nonzero(u32_at(b, 60)) } else { None },
                depth: full.then(|| {
                    (
                        std::array::from_fn(|i| level(64 + 12 * i)),
                        std::array::from_fn(|i| level(124 + 12 * i)),
                    )
                }),
                ..base
            })
        }
        _ => None,
    }
}

/// A price as the wire integer of its segment (rounded toward zero, saturating).
pub fn wire_price(price: Decimal, token: u32) -> u32 {
    let d = Decimal::from(Segment::of_token(token).divisor());
    let v = (price * d).trunc();
    u32::try_from(v.mantissa() / 10i128.pow(v.scale())).unwrap_or(u32::MAX)
}

/// Writes one packet in the length of its mode and kind (index 28/32, tradable 8/44/184).
pub fn encode_packet(p: &Packet) -> Vec<u8> {
    let mut b = Vec::with_capacity(184);
    let put = |b: &mut Vec<u8>, v: u32| b.extend_from_slice(&v.to_be_bytes());
    let wp = |v: Decimal| wire_price(v, p.token);
    put(&mut b, p.token);
    put(&mut b, wp(p.last_price));
    if p.mode == Mode::Ltp {
        return b;
    }
    let ohlc = p.ohlc.unwrap_or(Ohlc {
        open: Decimal::ZERO,
        high: Decimal::ZERO,
        low: Decimal::ZERO,
        close: Decimal::ZERO,
    });
    if !p.tradable {
        for v in [ohlc.high, ohlc.low, ohlc.open, ohlc.close] {
            put(&mut b, wp(v));
        }
        let change = p.index_change.unwrap_or_default();
        let d = Decimal::from(Segment::of_token(p.token).divisor());
        let raw = (change * d).trunc();
        let raw = i32::try_from(raw.mantissa() / 10i128.pow(raw.scale())).unwrap_or(0);
        b.extend_from_slice(&raw.to_be_bytes());
        if p.mode == Mode::Full {
            put(&mut b, p.exchange_timestamp.unwrap_or(0));
        }
        return b;
    }
    put(&mut b, p.last_quantity.unwrap_or(0));
    put(&mut b, wp(p.average_price.unwrap_or_default()));
    put(&mut b, p.volume.unwrap_or(0));
    put(&mut b, p.total_buy_quantity.unwrap_or(0));
    put(&mut b, p.total_sell_quantity.unwrap_or(0));
    for v in [ohlc.open, ohlc.high, ohlc.low, ohlc.close] {
        put(&mut b, wp(v));
    }
    if p.mode == Mode::Quote {
        return b;
    }
    put(&mut b, p.last_trade_time.unwrap_or(0));
    put(&mut b, p.oi.unwrap_or(0));
    put(&mut b, p.oi_day_high.unwrap_or(0));
    put(&mut b, p.oi_day_low.unwrap_or(0));
    put(&mut b, p.exchange_timestamp.unwrap_or(0));
    let empty = [Level {
        quantity: 0,
        price: Decimal::ZERO,
        orders: 0,
    }; 5];
    let (bids, asks) = p.depth.unwrap_or((empty, empty));
    for l in bids.iter().chain(asks.iter()) {
        put(&mut b, l.quantity);
        put(&mut b, wp(l.price));
        b.extend_from_slice(&l.orders.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
    }
    b
}

/// Writes one binary message carrying `packets`.
pub fn encode_frame(packets: &[Packet]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(packets.len().min(u16::MAX as usize) as u16).to_be_bytes());
    for p in packets.iter().take(u16::MAX as usize) {
        let body = encode_packet(p);
        b.extend_from_slice(&(body.len() as u16).to_be_bytes());
        b.extend_from_slice(&body);
    }
    b
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;

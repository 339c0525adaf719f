//! Documented-value tests of the ticker packets, and the fuzzer.

use proptest::prelude::*;

use super::*;

fn d(s: &str) -> Decimal {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn words(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_be_bytes()).collect()
}

fn frame(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut b = (packets.len() as u16).to_be_bytes().to_vec();
    for p in packets {
        b.extend_from_slice(&(p.len() as u16).to_be_bytes());
        b.extend_from_slice(p);
    }
    b
}

fn only(bytes: &[u8]) -> Packet {
    match parse_frame(bytes) {
        Ok(Frame::Packets {
            mut packets,
            skipped: 0,
        }) if packets.len() == 1 => packets.remove(0),
        other => panic!("expected one packet, got {other:?}"),
    }
}

const INFY: u32 = 408065; // 0x63A01: NSE
const USDINR: u32 = 412675; // 0x64C03: CDS
const BCD_TOKEN: u32 = 0x1006; // BCD
const NIFTY: u32 = 256265; // 0x3E909: INDICES

#[test]
fn segments_and_divisors_follow_the_low_byte_of_the_token() {
    assert_eq!(Segment::of_token(INFY), Segment::Nse);
    assert_eq!(Segment::of_token(USDINR), Segment::Cds);
    assert_eq!(Segment::of_token(BCD_TOKEN), Segment::Bcd);
    assert_eq!(Segment::of_token(NIFTY), Segment::Indices);
    assert_eq!(Segment::of_token(0x107).divisor(), 100); // MCX
    assert_eq!(Segment::Cds.divisor(), 10_000_000);
    assert_eq!(Segment::Bcd.divisor(), 10_000);
    assert_eq!(Segment::Nfo.divisor(), 100);
}

#[test]
fn an_eight_byte_packet_is_an_ltp_tick_in_rupees() {
    let p = only(&frame(&[words(&[INFY, 141_295])]));
    assert_eq!(p.token, INFY);
    assert_eq!(p.mode, Mode::Ltp);
    assert!(p.tradable);
    assert_eq!(p.last_price, d("1412.95"));
    assert_eq!(p.ohlc, None);
    assert_eq!(p.exchange_timestamp, None);
}

#[test]
fn a_currency_price_is_divided_by_ten_million_and_a_bcd_price_by_ten_thousand() {
    let p = only(&frame(&[words(&[USDINR, 727_550_000])]));
    assert_eq!(p.last_price, d("72.755"));
    let p = only(&frame(&[words(&[BCD_TOKEN, 727_550])]));
    assert_eq!(p.last_price, d("72.755"));
}

#[test]
fn a_twenty_eight_byte_index_packet_reads_high_low_open_close_in_that_order() {
    // last 15000.50, high 15100.00, low 14900.25, open 14950.75, close 14980.00, change -12.5
    let mut b = words(&[NIFTY, 1_500_050, 1_510_000, 1_490_025, 1_495_075, 1_498_000]);
    b.extend_from_slice(&(-1250i32).to_be_bytes());
    let p = only(&frame(&[b]));
    assert_eq!(p.mode, Mode::Quote);
    assert!(!p.tradable);
    assert_eq!(p.last_price, d("15000.5"));
    assert_eq!(
        p.ohlc,
        Some(Ohlc {
            open: d("14950.75"),
            high: d("15100"),
            low: d("14900.25"),
            close: d("14980"),
        })
    );
    assert_eq!(p.index_change, Some(d("-12.5")));
    assert_eq!(p.exchange_timestamp, None);
}

#[test]
fn a_thirty_two_byte_index_packet_adds_the_exchange_timestamp() {
    let mut b = words(&[NIFTY, 1_500_050, 1_510_000, 1_490_025, 1_495_075, 1_498_000]);
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&1_623_145_500u32.to_be_bytes());
    let p = only(&frame(&[b]));
    assert_eq!(p.mode, Mode::Full);
    assert_eq!(p.exchange_timestamp, Some(1_623_145_500));
    assert_eq!(p.ohlc.map(|o| o.high), Some(d("15100")));
}

fn quote_words() -> Vec<u32> {
    // token, ltp, last qty, avg, volume, buy qty, sell qty, open, high, low, close
    vec![
        INFY, 141_295, 5, 141_247, 7_360_198, 0, 5191, 139_600, 142_175, 139_555, 138_965,
    ]
}

#[test]
fn a_forty_four_byte_packet_is_a_quote_with_open_high_low_close_in_that_order() {
    let p = only(&frame(&[words(&quote_words())]));
    assert_eq!(p.mode, Mode::Quote);
    assert_eq!(p.last_price, d("1412.95"));
    assert_eq!(p.last_quantity, Some(5));
    assert_eq!(p.average_price, Some(d("1412.47")));
    assert_eq!(p.volume, Some(7_360_198));
    assert_eq!(p.total_buy_quantity, Some(0));
    assert_eq!(p.total_sell_quantity, Some(5191));
    assert_eq!(
        p.ohlc,
        Some(Ohlc {
            open: d("1396"),
            high: d("1421.75"),
            low: d("1395.55"),
            close: d("1389.65"),
        })
    );
    assert_eq!(p.depth, None);
}

#[test]
fn a_full_packet_carries_times_open_interest_and_five_levels_each_side() {
    let mut w = quote_words();
    w.extend([1_623_145_552, 10, 20, 5, 1_623_145_556]);
    let mut b = words(&w);
    for i in 0..10u32 {
        b.extend_from_slice(&(100 + i).to_be_bytes()); // quantity
        b.extend_from_slice(&(141_200 + i * 5).to_be_bytes()); // price
        b.extend_from_slice(&((i + 1) as u16).to_be_bytes()); // orders
        b.extend_from_slice(&[0, 0]);
    }
    assert_eq!(b.len(), 184);
    let p = only(&frame(&[b]));
    assert_eq!(p.mode, Mode::Full);
    assert_eq!(p.last_trade_time, Some(1_623_145_552));
    assert_eq!(
        (p.oi, p.oi_day_high, p.oi_day_low),
        (Some(10), Some(20), Some(5))
    );
    assert_eq!(p.exchange_timestamp, Some(1_623_145_556));
    let (bids, asks) = p.depth.unwrap_or_else(|| panic!("no depth"));
    assert_eq!(
        bids[0],
        Level {
            quantity: 100,
            price: d("1412"),
            orders: 1
        }
    );
    assert_eq!(
        asks[4],
        Level {
            quantity: 109,
            price: d("1412.45"),
            orders: 10
        }
    );
}

#[test]
fn one_message_carries_several_packets_of_different_kinds() {
    let f = frame(&[
        words(&[INFY, 100]),
        words(&quote_words()),
        words(&[USDINR, 10_000_000]),
    ]);
    match parse_frame(&f) {
        Ok(Frame::Packets { packets, skipped }) => {
            assert_eq!(skipped, 0);
            let modes: Vec<Mode> = packets.iter().map(|p| p.mode).collect();
            assert_eq!(modes, [Mode::Ltp, Mode::Quote, Mode::Ltp]);
            assert_eq!(packets[2].last_price, d("1"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_one_byte_message_is_a_heartbeat() {
    assert_eq!(parse_frame(&[0]), Ok(Frame::Heartbeat));
}

#[test]
fn a_packet_of_an_unknown_length_is_skipped_and_counted() {
    let f = frame(&[vec![0; 12], words(&[INFY, 100])]);
    match parse_frame(&f) {
        Ok(Frame::Packets { packets, skipped }) => {
            assert_eq!(skipped, 1);
            assert_eq!(packets.len(), 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_messages_are_rejected_with_what_and_where() {
    assert_eq!(parse_frame(&[]), Err(FrameError::Empty));
    // count 2, one packet
    let mut f = frame(&[words(&[INFY, 100])]);
    f[1] = 2;
    assert_eq!(
        parse_frame(&f),
        Err(FrameError::LengthPastEnd {
            index: 1,
            count: 2,
            at: 12,
            len: 12
        })
    );
    // a length of 44 with 8 bytes behind it
    let mut f = frame(&[words(&[INFY, 100])]);
    f[3] = 44;
    assert_eq!(
        parse_frame(&f),
        Err(FrameError::BodyPastEnd {
            index: 0,
            count: 1,
            at: 4,
            need: 44,
            len: 12
        })
    );
    let mut f = frame(&[words(&[INFY, 100])]);
    f.push(7);
    assert_eq!(
        parse_frame(&f),
        Err(FrameError::Trailing { count: 1, extra: 1 })
    );
}

fn arb_packet() -> impl Strategy<Value = Packet> {
    let level = (any::<u32>(), 0u32..=u32::MAX, any::<u16>());
    (
        any::<u32>(),
        0u8..5,
        proptest::collection::vec(any::<u32>(), 16),
        proptest::collection::vec(level, 10),
        any::<i32>(),
    )
        .prop_map(|(token, kind, w, levels, change)| {
            let seg = Segment::of_token(token);
            let px = |raw: u32| price(raw as i64, seg.divisor());
            let index = seg.is_index();
            let mode = match (kind, index) {
                (0, _) => Mode::Ltp,
                (1 | 2, _) => Mode::Quote,
                _ => Mode::Full,
            };
            let mut p = parse_packet(&words(&[token, w[0]])).unwrap_or_else(|| unreachable!());
            p.mode = mode;
            if mode == Mode::Ltp {
                return p;
            }
            p.ohlc = Some(Ohlc {
                open: px(w[1]),
                high: px(w[2]),
                low: px(w[3]),
                close: px(w[4]),
            });
            if index {
                p.index_change = Some(price(change as i64, seg.divisor()));
                p.exchange_timestamp = (mode == Mode::Full).then_some(w[5]).filter(|t| *t != 0);
                return p;
            }
            p.last_quantity = Some(w[6]);
            p.average_price = Some(px(w[7]));
            p.volume = Some(w[8]);
            p.total_buy_quantity = Some(w[9]);
            p.total_sell_quantity = Some(w[10]);
            if mode == Mode::Full {
                p.last_trade_time = Some(w[11]).filter(|t| *t != 0);
                p.oi = Some(w[12]);
                p.oi_day_high = Some(w[13]);
                p.oi_day_low = Some(w[14]);
                p.exchange_timestamp = Some(w[15]).filter(|t| *t != 0);
                let l = |(q, pr, o): (u32, u32, u16)| Level {
                    quantity: q,
                    price: px(pr),
                    orders: o,
                };
                p.depth = Some((
                    std::array::from_fn(|i| l(levels[i])),
                    std::array::from_fn(|i| l(levels[5 + i])),
                ));
            }
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// The fuzzer: any bytes give a frame or an error, never a panic, and a frame's packets
    /// account for every byte it read.
    #[test]
    fn arbitrary_bytes_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_frame(&bytes);
    }

    /// Structured fuzzing: well-framed messages with random counts, lengths and contents,
    /// then one byte flipped or the message cut short.
    #[test]
    fn damaged_frames_are_rejected_or_parsed_never_panic(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..8),
        cut in any::<usize>(),
        flip in any::<(usize, u8)>(),
    ) {
        let mut f = frame(&bodies);
        let i = flip.0 % f.len();
        f[i] ^= flip.1;
        let _ = parse_frame(&f);
        let _ = parse_frame(&f[..cut % (f.len() + 1)]);
    }

    #[test]
    fn encoded_packets_parse_back_to_themselves(packets in proptest::collection::vec(arb_packet(), 1..6)) {
        let parsed = parse_frame(&encode_frame(&packets));
        prop_assert_eq!(parsed, Ok(Frame::Packets { packets, skipped: 0 }));
    }
}

use super::*;
use timectl_engine::proto::ExtensionField;

const C2S: Key = [1; 32];
const S2C: Key = [2; 32];

fn kx(cookies: usize) -> KeyExchange {
    KeyExchange {
        c2s: C2S,
        s2c: S2C,
        cookies: (0..cookies).map(|i| vec![i as u8 + 1; 100]).collect(),
        ntp_server: "localhost".into(),
        ntp_port: 123,
        ntp_port_given: false,
        aead: 15,
    }
}

fn header(tag: u8) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = 0x23;
    h[40..].fill(tag);
    h
}

/// The request's fields before the authenticator, and the authenticator's
/// offset.
fn fields(packet: &[u8]) -> (Vec<ExtensionField>, usize) {
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    loop {
        let t = u16::from_be_bytes([packet[at], packet[at + 1]]);
        let len = u16::from_be_bytes([packet[at + 2], packet[at + 3]]) as usize;
        if t == ef::NTS_AUTHENTICATOR {
            return (out, at);
        }
        out.push(ExtensionField {
            field_type: t,
            value: packet[at + 4..at + len].to_vec(),
        });
        at += len;
    }
}

/// What a server answers to `request`: its UID, then `new_cookies` sealed
/// with `key` (S2C for an honest server).
fn reply_to(request: &[u8], key: &Key, new_cookies: &[Vec<u8>]) -> Vec<u8> {
    let (f, _) = fields(request);
    let uid = f
        .iter()
        .find(|f| f.field_type == ef::UNIQUE_IDENTIFIER)
        .expect("uid");
    let mut packet = header(0xee).to_vec();
    packet[0] = 0x24;
    packet[1] = 2;
    ef::encode_fields(std::slice::from_ref(uid), &mut packet).expect("encode");
    let inner: Vec<_> = new_cookies.iter().map(|c| ef::cookie(c)).collect();
    let auth = ef::seal_request(key, &packet, &inner, &[5; NONCE_LEN]).expect("seal");
    ef::encode_fields(&[auth], &mut packet).expect("encode");
    packet
}

fn nak_to(request: &[u8]) -> Vec<u8> {
    let (f, _) = fields(request);
    let uid = f
        .iter()
        .find(|f| f.field_type == ef::UNIQUE_IDENTIFIER)
        .expect("uid");
    let mut packet = header(0).to_vec();
    packet[0] = 0xe4;
    packet[1] = 0;
    packet[12..16].copy_from_slice(b"NTSN");
    ef::encode_fields(std::slice::from_ref(uid), &mut packet).expect("encode");
    packet
}

#[test]
fn cookie_store_keeps_eight_hands_each_out_once_oldest_first() {
    let mut store = CookieStore::new((1..=10).map(|i| vec![i; 4]).collect());
    assert_eq!(store.len(), MAX_COOKIES, "at most eight");
    // 1 and 2 were the oldest: dropped.
    assert_eq!(store.take(), Some(vec![3; 4]));
    assert_eq!(store.take(), Some(vec![4; 4]));
    store.add(vec![11; 4]);
    let rest: Vec<_> = std::iter::from_fn(|| store.take()).collect();
    assert_eq!(
        rest,
        (5..=11).map(|i| vec![i; 4]).collect::<Vec<_>>(),
        "each cookie once, in order"
    );
    assert!(store.is_empty());
    assert_eq!(store.take(), None);
    store.add(Vec::new());
    assert!(store.is_empty(), "an empty cookie is not a cookie");
}

#[test]
fn placeholders_refill_the_store_to_eight() {
    for held in 1..=MAX_COOKIES {
        let mut store = CookieStore::new((0..held).map(|i| vec![i as u8; 4]).collect());
        store.take();
        // One cookie back for the cookie sent and one per placeholder.
        assert_eq!(
            store.len() + 1 + store.placeholders(),
            MAX_COOKIES,
            "held {held}"
        );
    }
}

#[test]
fn request_carries_fresh_uid_oldest_cookie_placeholders_and_authenticates_with_c2s() {
    let mut s = Session::new(&kx(3), Instant::now());
    let uid = [0x42; UID_LEN];
    let packet = s
        .request(&header(1), &uid, &[3; NONCE_LEN])
        .expect("request");
    assert_eq!(
        &packet[..HEADER_LEN],
        &header(1),
        "the engine's header as is"
    );
    let (f, auth_at) = fields(&packet);
    assert_eq!(f[0].field_type, ef::UNIQUE_IDENTIFIER);
    assert_eq!(f[0].value, uid);
    assert_eq!(f[1].field_type, ef::NTS_COOKIE);
    assert_eq!(f[1].value, vec![1; 100], "the oldest cookie");
    let placeholders: Vec<_> = f[2..].iter().collect();
    assert_eq!(
        placeholders.len(),
        5,
        "2 left + 1 back for the cookie + 5 for placeholders = 8"
    );
    assert!(
        placeholders
            .iter()
            .all(|p| p.field_type == ef::NTS_COOKIE_PLACEHOLDER && p.value.len() == 100)
    );
    ef::open(&C2S, &packet, auth_at).expect("sealed with C2S");
    assert!(ef::open(&S2C, &packet, auth_at).is_err());
    assert_eq!(s.cookies.len(), 2, "the cookie sent is gone");
    let second = s
        .request(&header(2), &[0x43; UID_LEN], &[3; NONCE_LEN])
        .expect("request");
    assert_eq!(
        fields(&second).0[1].value,
        vec![2; 100],
        "never the same cookie twice"
    );
}

#[test]
fn authenticated_reply_gives_the_header_and_cookies_once() {
    let mut s = Session::new(&kx(2), Instant::now());
    let req = s
        .request(&header(1), &[9; UID_LEN], &[3; NONCE_LEN])
        .expect("request");
    let new: Vec<_> = (0..7).map(|i| vec![0x80 + i; 100]).collect();
    let reply = reply_to(&req, &S2C, &new);
    let ReplyCheck::Authenticated { header: h } = s.check(&reply) else {
        panic!("not accepted");
    };
    assert_eq!(&h[..], &reply[..HEADER_LEN]);
    assert!(s.answered());
    assert_eq!(s.cookies.len(), 8, "1 left + 7 new");
    assert_eq!(
        s.check(&reply),
        ReplyCheck::Replayed,
        "the same reply again"
    );
    assert_eq!(s.cookies.len(), 8);
}

#[test]
fn modified_or_wrongly_keyed_replies_are_refused_and_add_no_cookies() {
    let mut s = Session::new(&kx(2), Instant::now());
    let req = s
        .request(&header(1), &[9; UID_LEN], &[3; NONCE_LEN])
        .expect("request");
    let reply = reply_to(&req, &S2C, &[vec![0x80; 100]]);
    let auth_at = fields(&reply).1;
    for at in [1, 20, 40, auth_at + 20, reply.len() - 1] {
        let mut bad = reply.clone();
        bad[at] ^= 0x01;
        assert!(
            matches!(s.check(&bad), ReplyCheck::Unauthenticated(_)),
            "byte {at} flipped"
        );
    }
    assert!(matches!(
        s.check(&reply_to(&req, &C2S, &[])),
        ReplyCheck::Unauthenticated(_)
    ));
    // An unprotected reply (a plain NTP server, or an attacker).
    assert!(matches!(
        s.check(&reply[..HEADER_LEN]),
        ReplyCheck::Unauthenticated(_)
    ));
    assert_eq!(s.cookies.len(), 1, "nothing added");
    assert!(!s.answered(), "forgeries do not count as answers");
    // The real reply still works after the forgeries.
    assert!(matches!(s.check(&reply), ReplyCheck::Authenticated { .. }));
}

#[test]
fn reply_to_an_earlier_request_is_a_replay() {
    let mut s = Session::new(&kx(4), Instant::now());
    let first = s
        .request(&header(1), &[1; UID_LEN], &[3; NONCE_LEN])
        .expect("request");
    let old = reply_to(&first, &S2C, &[vec![0x80; 100]]);
    let second = s
        .request(&header(2), &[2; UID_LEN], &[3; NONCE_LEN])
        .expect("request");
    assert_eq!(s.check(&old), ReplyCheck::Replayed);
    assert!(matches!(
        s.check(&reply_to(&second, &S2C, &[])),
        ReplyCheck::Authenticated { .. }
    ));
}

#[test]
fn nts_nak_for_our_request_only() {
    let mut s = Session::new(&kx(4), Instant::now());
    let req = s
        .request(&header(1), &[1; UID_LEN], &[3; NONCE_LEN])
        .expect("request");
    assert_eq!(s.check(&nak_to(&req)), ReplyCheck::Nak);
    let other = Session::new(&kx(4), Instant::now())
        .request(&header(1), &[7; UID_LEN], &[3; NONCE_LEN])
        .expect("request");
    assert!(
        matches!(s.check(&nak_to(&other)), ReplyCheck::Unauthenticated(_)),
        "a NAK for another identifier is not ours"
    );
    let mut not_ntsn = nak_to(&req);
    not_ntsn[12..16].copy_from_slice(b"RATE");
    assert!(matches!(s.check(&not_ntsn), ReplyCheck::Unauthenticated(_)));
}

#[test]
fn key_exchange_due_when_cookies_run_out_polls_go_unanswered_or_keys_age() {
    let t0 = Instant::now();
    let mut s = Session::new(&kx(2), t0);
    assert!(!s.needs_key_exchange(t0));
    assert!(s.needs_key_exchange(t0 + KEY_REFRESH), "weekly refresh");
    s.request(&header(1), &[1; UID_LEN], &[3; NONCE_LEN]);
    s.request(&header(2), &[2; UID_LEN], &[3; NONCE_LEN]);
    assert!(s.needs_key_exchange(t0), "no cookie left");
    assert!(
        s.request(&header(3), &[3; UID_LEN], &[3; NONCE_LEN])
            .is_none()
    );

    let mut s = Session::new(&kx(8), t0);
    let mut last = Vec::new();
    for i in 0..MAX_UNANSWERED as u8 - 1 {
        last = s
            .request(&header(i), &[i; UID_LEN], &[3; NONCE_LEN])
            .expect("request");
        // Each reply only refills: the store never runs dry here.
        assert!(!s.needs_key_exchange(t0), "after {} unanswered", i + 1);
    }
    // An answer resets the count.
    let refill: Vec<_> = (0..7).map(|i| vec![0x90 + i; 100]).collect();
    assert!(matches!(
        s.check(&reply_to(&last, &S2C, &refill)),
        ReplyCheck::Authenticated { .. }
    ));
    for i in 0..MAX_UNANSWERED as u8 {
        assert!(!s.needs_key_exchange(t0), "after {i} unanswered");
        s.request(&header(i), &[i; UID_LEN], &[3; NONCE_LEN]);
        // Keep cookies in the store: only the silence counts here.
        s.cookies.add(vec![0xa0 + i; 100]);
    }
    assert!(!s.cookies.is_empty());
    assert!(
        s.needs_key_exchange(t0),
        "{MAX_UNANSWERED} requests unanswered"
    );
}

#[test]
fn ntp_port_is_the_port_record_else_the_configured_port() {
    let target = KeTarget {
        host: "localhost".into(),
        address: "127.0.0.1:4460".parse().expect("addr"),
        trust: Trust::System,
        ntp_port: 1123,
    };
    let mut k = kx(1);
    assert_eq!(ntp_port(&k, &target), 1123, "no Port record");
    k.ntp_port = 123;
    k.ntp_port_given = true;
    assert_eq!(ntp_port(&k, &target), 123, "the Port record wins");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    // Server record = the KE host: the address the KE went to.
    assert_eq!(
        rt.block_on(resolve_ntp(&k, &target)),
        Ok("127.0.0.1:123".parse().expect("addr"))
    );
    k.ntp_server = "192.0.2.7".into();
    assert_eq!(
        rt.block_on(resolve_ntp(&k, &target)),
        Ok("192.0.2.7:123".parse().expect("addr"))
    );
}

#[test]
fn backoff_doubles_from_four_seconds_to_an_hour_with_jitter_and_never_stops() {
    let mut b = Backoff::default();
    let delays: Vec<u64> = (0..12).map(|_| b.next_delay(0.5).as_secs()).collect();
    assert_eq!(
        delays,
        [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600]
    );
    for _ in 0..1000 {
        assert_eq!(b.next_delay(0.5), BACKOFF_MAX, "keeps retrying hourly");
    }
    b.reset();
    assert_eq!(b.next_delay(0.0), Duration::from_secs(3));
    assert_eq!(b.next_delay(0.999_999).as_secs(), 9, "8 s * 1.25");
    assert_eq!(b.failures(), 2);
}

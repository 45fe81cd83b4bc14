//! The server's cryptographic work for one NTS request (RFC 8915 5.7),
//! without sockets: parse the request, open the cookie with the master
//! key, verify the authenticator with C2S, seal one new cookie with the
//! master key, build the reply sealed with S2C. Two variants in the same
//! run: `per_call` builds every AES-SIV cipher per operation and
//! allocates as `KeySet::open/seal`, `ef::open` and `ef::reply_packet` do
//! (the responder before CookieCiphers); `cached` is what the responder
//! does now (`CookieCiphers`, `ef::verify`, `ef::reply_into`).
//! `cargo bench --bench nts_request`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use timectl_engine::nts::cookie::{COOKIE_LEN, CookieCiphers, CookieContent, KeySet};
use timectl_engine::nts::ef;

const T0: u64 = 1_800_000_000;

fn bench_nts_request(c: &mut Criterion) {
    let mut keys = KeySet::new(86_400);
    keys.rotate(T0, 7, [0x11; 32]);
    let content = CookieContent {
        aead: 15,
        c2s: [1; 32],
        s2c: [2; 32],
    };
    let cookie = keys.seal(&content, &[3; 16]).expect("seal");
    let mut header = [0u8; 48];
    header[0] = 0x23; // v4, client
    let request =
        ef::request_packet(&header, &content.c2s, &[7; 32], &cookie, 0, &[9; 16]).expect("request");
    let mut reply_header = [0u8; 48];
    reply_header[0] = 0x24;

    let mut group = c.benchmark_group("nts_request");
    group.bench_function("per_call", |b| {
        b.iter(|| {
            let parsed = ef::parse_request(black_box(&request)).unwrap().unwrap();
            let content = keys.open(parsed.cookie).unwrap();
            ef::open(&content.c2s, &request, parsed.auth_at).unwrap();
            let cookies = vec![keys.seal(&content, &[4; 16]).unwrap()];
            ef::reply_packet(&reply_header, &content.s2c, parsed.uid, &cookies, &[5; 16]).unwrap()
        })
    });
    let mut ciphers = CookieCiphers::default();
    group.bench_function("cached", |b| {
        b.iter(|| {
            let parsed = ef::parse_request(black_box(&request)).unwrap().unwrap();
            ciphers.sync(&keys);
            let content = ciphers.open(parsed.cookie).unwrap();
            ef::verify(&content.c2s, &request, parsed.auth_at).unwrap();
            let mut sealed = [0u8; COOKIE_LEN];
            ciphers.seal_into(&content, &[4; 16], &mut sealed).unwrap();
            let mut out = Vec::with_capacity(ef::reply_len(parsed.uid.len(), 1, COOKIE_LEN));
            ef::reply_into(
                &mut out,
                &reply_header,
                &content.s2c,
                parsed.uid,
                1,
                COOKIE_LEN,
                |c| {
                    c.copy_from_slice(&sealed);
                    Ok(())
                },
                &[5; 16],
            )
            .unwrap();
            out
        })
    });
    group.finish();
}

criterion_group!(benches, bench_nts_request);
criterion_main!(benches);

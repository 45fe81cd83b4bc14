//! Fuzz target for NTS extension fields: opening an authenticator at any
//! offset and the client's reply check must never panic on any bytes
//! (fixed keys and unique identifier), nor parsing any bytes as a
//! decrypted authenticator's fields (past the tag, which fuzzing cannot
//! forge), and sealing fuzzed inner fields must open to the same fields.
//! Server side: parsing any bytes as an NTS request, and opening any bytes
//! as a cookie, must never panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use timectl_engine::nts::cookie::KeySet;
use timectl_engine::nts::ef::{self, Key, UID_LEN};
use timectl_engine::proto::{ExtensionField, HEADER_LEN};

const KEY: Key = [0x42; 32];
const UID: [u8; UID_LEN] = [0x17; UID_LEN];

fuzz_target!(|data: &[u8]| {
    let Some((&[o0, o1], packet)) = data.split_first_chunk::<2>() else { return };
    let offset = usize::from(u16::from_be_bytes([o0, o1]));
    let _ = ef::open(&KEY, packet, offset);
    let _ = ef::check_reply(&KEY, &UID, packet);
    let _ = ef::decode_encrypted_fields(packet);
    if let Ok(Some(request)) = ef::parse_request(packet) {
        assert!(request.auth_at >= HEADER_LEN && request.auth_at < packet.len());
        let _ = ef::open(&KEY, packet, request.auth_at);
    }
    let mut keys = KeySet::new(86_400);
    keys.rotate(1_800_000_000, u32::from_be_bytes([o0, o1, 0, 0]), KEY);
    let _ = keys.open(packet);
    let _ = KeySet::deserialize(&String::from_utf8_lossy(packet), 86_400);
    // Sealing: the fuzzed bytes as one inner field's value.
    let mut value = packet.to_vec();
    value.resize(value.len().next_multiple_of(4).max(12), 0);
    let fields = [ExtensionField { field_type: u16::from_be_bytes([o0, o1]), value }];
    let header = [0u8; HEADER_LEN];
    if let Ok(auth) = ef::seal_request(&KEY, &header, &fields, &[o0; 16]) {
        let mut sealed = header.to_vec();
        ef::encode_fields(&[auth], &mut sealed).expect("a sealed field encodes");
        assert_eq!(ef::open(&KEY, &sealed, HEADER_LEN).expect("sealed opens"), fields);
    }
});

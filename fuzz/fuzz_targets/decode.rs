//! Fuzz target for the NTP packet decoder and the client reply checks:
//! neither may panic on any input, and a decoded header must re-encode to
//! the same 48 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use timectl::engine::proto::{check_reply, NtpTimestamp, Packet, PendingRequest, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::decode(data) {
        assert_eq!(&packet.encode()[..], &data[..HEADER_LEN]);
        let pending = PendingRequest { nonce: packet.origin_ts, sent_local: NtpTimestamp(1 << 60) };
        let _ = check_reply(&packet, Some(&pending), None, NtpTimestamp((1 << 60) + 1000));
    }
});

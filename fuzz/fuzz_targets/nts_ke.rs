//! Fuzz target for the NTS-KE stream decoder, the response check and the
//! server's request evaluation: no input may panic, split at any point the stream must decode the same, and a
//! decoded message must re-encode to the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use timectl_engine::nts::ke::{Decoder, ServerResponse, encode_message, evaluate_request};

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else { return };
    let whole = Decoder::new().feed(stream);
    let at = usize::from(split).min(stream.len());
    let mut decoder = Decoder::new();
    let parts = decoder
        .feed(&stream[..at])
        .and_then(|mut r| decoder.feed(&stream[at..]).map(|more| { r.extend(more); r }));
    assert_eq!(whole.is_ok(), parts.is_ok());
    if let (Ok(whole), Ok(parts)) = (whole, parts) {
        assert_eq!(whole, parts);
        let _ = evaluate_request(&whole);
        if decoder.is_finished() {
            let again = encode_message(&whole).expect("decoded records re-encode");
            assert_eq!(
                Decoder::new().feed(&again).expect("re-encoded records decode"),
                whole
            );
        }
    }
    let _ = ServerResponse::parse(stream);
});

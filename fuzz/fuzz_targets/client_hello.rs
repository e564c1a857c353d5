#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sipwarden::fuzzing::client_hello_bytes(data));

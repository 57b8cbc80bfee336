# The libFuzzer harnesses, tests/fuzz/fuzz_<name>.c (README.md).
set(ONAIR_FUZZ_HARNESSES stun rtp rtcp srtp sdp ws config store jwt)

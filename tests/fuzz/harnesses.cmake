# The libFuzzer harnesses, tests/fuzz/fuzz_<name>.c (README.md).
set(ONAIR_FUZZ_HARNESSES stun rtp rtcp srtp sdp ws config store jwt rtmp)
# Harnesses of a plugin's own code: its sources and include directory, besides onair_core.
set(ONAIR_FUZZ_SOURCES_rtmp ${CMAKE_CURRENT_LIST_DIR}/../../plugins/rtmp/rtmp_proto.c)
set(ONAIR_FUZZ_INCLUDE_rtmp ${CMAKE_CURRENT_LIST_DIR}/../../plugins/rtmp)

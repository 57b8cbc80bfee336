# The libFuzzer harnesses, tests/fuzz/fuzz_<name>.c (README.md).
set(ONAIR_FUZZ_HARNESSES stun rtp rtcp srtp sdp ws config store jwt rtmp livekit depack datachannel)
# Harnesses of a plugin's own code: its sources and include directory, besides onair_core
# (and libraries it needs besides those of onair_core: ONAIR_FUZZ_LIBS_<name>).
set(ONAIR_FUZZ_SOURCES_rtmp ${CMAKE_CURRENT_LIST_DIR}/../../plugins/rtmp/rtmp_proto.c)
set(ONAIR_FUZZ_INCLUDE_rtmp ${CMAKE_CURRENT_LIST_DIR}/../../plugins/rtmp)
set(ONAIR_FUZZ_SOURCES_livekit ${CMAKE_CURRENT_LIST_DIR}/../../plugins/calls/lk_proto.c
                               ${CMAKE_CURRENT_LIST_DIR}/../../plugins/calls/lk_token.c)
set(ONAIR_FUZZ_INCLUDE_livekit ${CMAKE_CURRENT_LIST_DIR}/../../plugins/calls)
set(ONAIR_FUZZ_LIBS_livekit z)
set(ONAIR_FUZZ_SOURCES_depack ${CMAKE_CURRENT_LIST_DIR}/../../plugins/common-media/depack.c)
set(ONAIR_FUZZ_INCLUDE_depack ${CMAKE_CURRENT_LIST_DIR}/../../plugins/common-media)
# core/media/sctp.c (in onair_core) and the calls plugin's DataPacket forwarding
set(ONAIR_FUZZ_SOURCES_datachannel ${CMAKE_CURRENT_LIST_DIR}/../../plugins/calls/lk_data.c
                                   ${CMAKE_CURRENT_LIST_DIR}/../../plugins/calls/lk_proto.c)
set(ONAIR_FUZZ_INCLUDE_datachannel ${CMAKE_CURRENT_LIST_DIR}/../../plugins/calls
                                   ${CMAKE_CURRENT_LIST_DIR}/../../core/media)
set(ONAIR_FUZZ_LIBS_datachannel z)

/*
 * Compile-time pins of the SDK ABI: the layout of every public struct on LP64
 * (x86_64, aarch64) and the value of every public constant. If one of these fails,
 * a change to <onair/plugin.h> broke plugins built against an older SDK: undo it.
 * Only appending to onair_api_t (or to a size-prefixed struct) is allowed; then add
 * the new member's offset here, update the sizeof, bump ONAIR_ABI_MINOR and
 * regenerate onair-sdk.abi (see README.md).
 */
#include <onair/plugin.h>

#define ONAIR_ASSERT_OFFSET(type, field, off)                                                      \
    _Static_assert(offsetof(type, field) == (off), #type "." #field " moved")
#define ONAIR_ASSERT_SIZE(type, sz)                                                                \
    _Static_assert(sizeof(type) == (sz), "sizeof(" #type ") changed")
#define ONAIR_ASSERT_VALUE(name, v) _Static_assert((name) == (v), #name " changed value")

/* ---- constants (every platform) ------------------------------------------------------ */
ONAIR_ASSERT_VALUE(ONAIR_ABI_MAJOR, 1);
ONAIR_ASSERT_VALUE(ONAIR_PLUGIN_MAGIC, 0x4F4E4150u);

ONAIR_ASSERT_VALUE(ONAIR_OK, 0);
ONAIR_ASSERT_VALUE(ONAIR_PENDING, 1);
ONAIR_ASSERT_VALUE(ONAIR_EINVAL, -1);
ONAIR_ASSERT_VALUE(ONAIR_EAUTH, -2);
ONAIR_ASSERT_VALUE(ONAIR_EPERM, -3);
ONAIR_ASSERT_VALUE(ONAIR_ENOTFOUND, -4);
ONAIR_ASSERT_VALUE(ONAIR_EEXIST, -5);
ONAIR_ASSERT_VALUE(ONAIR_ECONFLICT, -6);
ONAIR_ASSERT_VALUE(ONAIR_ETOOBIG, -7);
ONAIR_ASSERT_VALUE(ONAIR_ERATE, -8);
ONAIR_ASSERT_VALUE(ONAIR_ENOMEM, -9);
ONAIR_ASSERT_VALUE(ONAIR_EINTERNAL, -10);
ONAIR_ASSERT_VALUE(ONAIR_ENOTSUP, -11);
ONAIR_ASSERT_VALUE(ONAIR_EUNAVAILABLE, -12);
ONAIR_ASSERT_VALUE(ONAIR_ETIMEDOUT, -13);
ONAIR_ASSERT_VALUE(ONAIR_ECANCELED, -14);
ONAIR_ASSERT_VALUE(ONAIR_ESTALE, -15);
ONAIR_ASSERT_VALUE(ONAIR_ESTATE, -16);

ONAIR_ASSERT_VALUE(ONAIR_LOG_ERROR, 3);
ONAIR_ASSERT_VALUE(ONAIR_LOG_WARN, 4);
ONAIR_ASSERT_VALUE(ONAIR_LOG_INFO, 6);
ONAIR_ASSERT_VALUE(ONAIR_LOG_DEBUG, 7);

ONAIR_ASSERT_VALUE(ONAIR_CFG_BOOL, 1);
ONAIR_ASSERT_VALUE(ONAIR_CFG_INT, 2);
ONAIR_ASSERT_VALUE(ONAIR_CFG_DOUBLE, 3);
ONAIR_ASSERT_VALUE(ONAIR_CFG_STRING, 4);
ONAIR_ASSERT_VALUE(ONAIR_CFG_STRING_LIST, 5);
ONAIR_ASSERT_VALUE(ONAIR_CFG_ID, 6);     /* ABI 1.5 */
ONAIR_ASSERT_VALUE(ONAIR_CFG_OBJECT, 7); /* ABI 1.5 */

ONAIR_ASSERT_VALUE(ONAIR_CFG_REQUIRED, 1u);
ONAIR_ASSERT_VALUE(ONAIR_CFG_SECRET, 2u);
ONAIR_ASSERT_VALUE(ONAIR_CFG_HAS_MIN, 4u);
ONAIR_ASSERT_VALUE(ONAIR_CFG_HAS_MAX, 8u);
ONAIR_ASSERT_VALUE(ONAIR_CFG_NULLABLE, 16u); /* ABI 1.5 */

ONAIR_ASSERT_VALUE(ONAIR_ACCESS_PUBLIC, 0);
ONAIR_ASSERT_VALUE(ONAIR_ACCESS_USER, 1u);
ONAIR_ASSERT_VALUE(ONAIR_ACCESS_VERIFIED, 2u);

ONAIR_ASSERT_VALUE(ONAIR_ROUTE_JSON_BODY, 1u);
ONAIR_ASSERT_VALUE(ONAIR_ROUTE_BODY_OPTIONAL, 2u); /* ABI 1.5 */
ONAIR_ASSERT_VALUE(ONAIR_ROUTE_ANY_THREAD, 4u);    /* ABI 1.8 */

ONAIR_ASSERT_SIZE(onair_conn_t, 8);
ONAIR_ASSERT_SIZE(onair_timer_t, 8);
ONAIR_ASSERT_SIZE(onair_sub_t, 8);

/* ---- struct layouts (LP64) ------------------------------------------------------------ */
#if defined(__x86_64__) || defined(__aarch64__)

ONAIR_ASSERT_OFFSET(onair_config_key_t, size, 0);
ONAIR_ASSERT_OFFSET(onair_config_key_t, key, 8);
ONAIR_ASSERT_OFFSET(onair_config_key_t, type, 16);
ONAIR_ASSERT_OFFSET(onair_config_key_t, default_value, 24);
ONAIR_ASSERT_OFFSET(onair_config_key_t, min, 32);
ONAIR_ASSERT_OFFSET(onair_config_key_t, max, 40);
ONAIR_ASSERT_OFFSET(onair_config_key_t, flags, 48);
ONAIR_ASSERT_OFFSET(onair_config_key_t, choices, 56);
ONAIR_ASSERT_OFFSET(onair_config_key_t, doc, 64);
ONAIR_ASSERT_SIZE(onair_config_key_t, 72);

ONAIR_ASSERT_OFFSET(onair_plugin_desc_t, magic, 0);
ONAIR_ASSERT_OFFSET(onair_plugin_desc_t, size, 4);
ONAIR_ASSERT_OFFSET(onair_plugin_desc_t, abi_major, 8);
ONAIR_ASSERT_OFFSET(onair_plugin_desc_t, min_host_minor, 10);
ONAIR_ASSERT_OFFSET(onair_plugin_desc_t, build_sig, 12);
ONAIR_ASSERT_OFFSET(onair_plugin_desc_t, name, 16);
ONAIR_ASSERT_OFFSET(onair_plugin_desc_t, version, 24);
ONAIR_ASSERT_OFFSET(onair_plugin_desc_t, description, 32);
ONAIR_ASSERT_OFFSET(onair_plugin_desc_t, dependencies, 40);
ONAIR_ASSERT_OFFSET(onair_plugin_desc_t, config, 48);
ONAIR_ASSERT_OFFSET(onair_plugin_desc_t, init, 56);
ONAIR_ASSERT_OFFSET(onair_plugin_desc_t, start, 64);
ONAIR_ASSERT_OFFSET(onair_plugin_desc_t, stop, 72);
ONAIR_ASSERT_OFFSET(onair_plugin_desc_t, reconfigure, 80);
ONAIR_ASSERT_SIZE(onair_plugin_desc_t, 88);

ONAIR_ASSERT_OFFSET(onair_user_t, size, 0);
ONAIR_ASSERT_OFFSET(onair_user_t, id, 8);
ONAIR_ASSERT_OFFSET(onair_user_t, roles, 16);
ONAIR_ASSERT_OFFSET(onair_user_t, verified, 24);
ONAIR_ASSERT_SIZE(onair_user_t, 32);

ONAIR_ASSERT_OFFSET(onair_route_t, size, 0);
ONAIR_ASSERT_OFFSET(onair_route_t, method, 8);
ONAIR_ASSERT_OFFSET(onair_route_t, path, 16);
ONAIR_ASSERT_OFFSET(onair_route_t, handler, 24);
ONAIR_ASSERT_OFFSET(onair_route_t, ud, 32);
ONAIR_ASSERT_OFFSET(onair_route_t, access, 40);
ONAIR_ASSERT_OFFSET(onair_route_t, role, 48);
ONAIR_ASSERT_OFFSET(onair_route_t, max_body, 56);
ONAIR_ASSERT_OFFSET(onair_route_t, flags, 64);
ONAIR_ASSERT_OFFSET(onair_route_t, ratelimit, 72); /* ABI 1.2 */
ONAIR_ASSERT_OFFSET(onair_route_t, body, 80);      /* ABI 1.5 */
ONAIR_ASSERT_SIZE(onair_route_t, 88);

ONAIR_ASSERT_OFFSET(onair_ws_type_t, size, 0);
ONAIR_ASSERT_OFFSET(onair_ws_type_t, type, 8);
ONAIR_ASSERT_OFFSET(onair_ws_type_t, handler, 16);
ONAIR_ASSERT_OFFSET(onair_ws_type_t, ud, 24);
ONAIR_ASSERT_OFFSET(onair_ws_type_t, access, 32);
ONAIR_ASSERT_OFFSET(onair_ws_type_t, role, 40);
ONAIR_ASSERT_OFFSET(onair_ws_type_t, ratelimit, 48); /* ABI 1.2 */
ONAIR_ASSERT_OFFSET(onair_ws_type_t, body, 56);      /* ABI 1.5 */
ONAIR_ASSERT_SIZE(onair_ws_type_t, 64);

/* onair_api_t: the header, then one pointer per function in declaration order. */
ONAIR_ASSERT_OFFSET(onair_api_t, size, 0);
ONAIR_ASSERT_OFFSET(onair_api_t, abi_major, 8);
ONAIR_ASSERT_OFFSET(onair_api_t, abi_minor, 10);
ONAIR_ASSERT_OFFSET(onair_api_t, host_version, 16);
ONAIR_ASSERT_OFFSET(onair_api_t, log, 24);
ONAIR_ASSERT_OFFSET(onair_api_t, vlog, 32);
ONAIR_ASSERT_OFFSET(onair_api_t, strerror, 40);
ONAIR_ASSERT_OFFSET(onair_api_t, plugin_name, 48);
ONAIR_ASSERT_OFFSET(onair_api_t, set_state, 56);
ONAIR_ASSERT_OFFSET(onair_api_t, state, 64);
ONAIR_ASSERT_OFFSET(onair_api_t, config, 72);
ONAIR_ASSERT_OFFSET(onair_api_t, config_int, 80);
ONAIR_ASSERT_OFFSET(onair_api_t, config_double, 88);
ONAIR_ASSERT_OFFSET(onair_api_t, config_bool, 96);
ONAIR_ASSERT_OFFSET(onair_api_t, config_string, 104);
ONAIR_ASSERT_OFFSET(onair_api_t, route_add, 112);
ONAIR_ASSERT_OFFSET(onair_api_t, req_method, 120);
ONAIR_ASSERT_OFFSET(onair_api_t, req_path, 128);
ONAIR_ASSERT_OFFSET(onair_api_t, req_param, 136);
ONAIR_ASSERT_OFFSET(onair_api_t, req_query, 144);
ONAIR_ASSERT_OFFSET(onair_api_t, req_header, 152);
ONAIR_ASSERT_OFFSET(onair_api_t, req_body, 160);
ONAIR_ASSERT_OFFSET(onair_api_t, req_json, 168);
ONAIR_ASSERT_OFFSET(onair_api_t, req_remote_addr, 176);
ONAIR_ASSERT_OFFSET(onair_api_t, req_id, 184);
ONAIR_ASSERT_OFFSET(onair_api_t, req_user, 192);
ONAIR_ASSERT_OFFSET(onair_api_t, resp_header, 200);
ONAIR_ASSERT_OFFSET(onair_api_t, reply_json, 208);
ONAIR_ASSERT_OFFSET(onair_api_t, reply_raw, 216);
ONAIR_ASSERT_OFFSET(onair_api_t, reply_problem, 224);
ONAIR_ASSERT_OFFSET(onair_api_t, reply_error, 232);
ONAIR_ASSERT_OFFSET(onair_api_t, ws_type_add, 240);
ONAIR_ASSERT_OFFSET(onair_api_t, msg_conn, 248);
ONAIR_ASSERT_OFFSET(onair_api_t, msg_type, 256);
ONAIR_ASSERT_OFFSET(onair_api_t, msg_data, 264);
ONAIR_ASSERT_OFFSET(onair_api_t, msg_user, 272);
ONAIR_ASSERT_OFFSET(onair_api_t, msg_reply, 280);
ONAIR_ASSERT_OFFSET(onair_api_t, msg_reply_error, 288);
ONAIR_ASSERT_OFFSET(onair_api_t, ws_send, 296);
ONAIR_ASSERT_OFFSET(onair_api_t, ws_subscribe, 304);
ONAIR_ASSERT_OFFSET(onair_api_t, ws_unsubscribe, 312);
ONAIR_ASSERT_OFFSET(onair_api_t, ws_publish, 320);
ONAIR_ASSERT_OFFSET(onair_api_t, ws_close, 328);
ONAIR_ASSERT_OFFSET(onair_api_t, bus_subscribe, 336);
ONAIR_ASSERT_OFFSET(onair_api_t, bus_unsubscribe, 344);
ONAIR_ASSERT_OFFSET(onair_api_t, bus_publish, 352);
ONAIR_ASSERT_OFFSET(onair_api_t, timer_start, 360);
ONAIR_ASSERT_OFFSET(onair_api_t, timer_cancel, 368);
ONAIR_ASSERT_OFFSET(onair_api_t, now_ms, 376);
ONAIR_ASSERT_OFFSET(onair_api_t, work_submit, 384); /* the last function of ABI 1.0 */
/* ABI 1.1: the document store */
ONAIR_ASSERT_OFFSET(onair_api_t, store_open, 392);
ONAIR_ASSERT_OFFSET(onair_api_t, store_insert, 400);
ONAIR_ASSERT_OFFSET(onair_api_t, store_find, 408);
ONAIR_ASSERT_OFFSET(onair_api_t, store_find_one, 416);
ONAIR_ASSERT_OFFSET(onair_api_t, store_count, 424);
ONAIR_ASSERT_OFFSET(onair_api_t, store_update, 432);
ONAIR_ASSERT_OFFSET(onair_api_t, store_find_and_modify, 440);
ONAIR_ASSERT_OFFSET(onair_api_t, store_delete, 448);
ONAIR_ASSERT_OFFSET(onair_api_t, store_aggregate, 456); /* the last function of ABI 1.1 */
/* ABI 1.2: accounts and rate limits */
ONAIR_ASSERT_OFFSET(onair_api_t, user_get, 464);
ONAIR_ASSERT_OFFSET(onair_api_t, user_set_verified, 472);
ONAIR_ASSERT_OFFSET(onair_api_t, ratelimit_add, 480);
ONAIR_ASSERT_OFFSET(onair_api_t, ratelimit_hit, 488); /* the last function of ABI 1.2 */
/* ABI 1.3: hook chains and service calls */
ONAIR_ASSERT_OFFSET(onair_api_t, hook_add, 496);
ONAIR_ASSERT_OFFSET(onair_api_t, hook_run, 504);
ONAIR_ASSERT_OFFSET(onair_api_t, hook_data, 512);
ONAIR_ASSERT_OFFSET(onair_api_t, hook_context, 520);
ONAIR_ASSERT_OFFSET(onair_api_t, hook_answer, 528);
ONAIR_ASSERT_OFFSET(onair_api_t, service_add, 536);
ONAIR_ASSERT_OFFSET(onair_api_t, service_call, 544);
ONAIR_ASSERT_OFFSET(onair_api_t, service_args, 552);
ONAIR_ASSERT_OFFSET(onair_api_t, service_caller, 560);
ONAIR_ASSERT_OFFSET(onair_api_t, service_answer, 568); /* the last function of ABI 1.3 */
ONAIR_ASSERT_OFFSET(onair_api_t, media_track_watch, 576);
ONAIR_ASSERT_OFFSET(onair_api_t, media_request_keyframe, 584);
ONAIR_ASSERT_OFFSET(onair_api_t, media_tap_open, 592);
ONAIR_ASSERT_OFFSET(onair_api_t, media_tap_stats, 600);
ONAIR_ASSERT_OFFSET(onair_api_t, media_tap_close, 608); /* the last function of ABI 1.4 */
ONAIR_ASSERT_OFFSET(onair_api_t, target_reply, 616);
ONAIR_ASSERT_OFFSET(onair_api_t, target_problem, 624);
ONAIR_ASSERT_OFFSET(onair_api_t, status_http, 632);
ONAIR_ASSERT_OFFSET(onair_api_t, status_code, 640);
ONAIR_ASSERT_OFFSET(onair_api_t, body_check, 648); /* the last function of ABI 1.5 */
ONAIR_ASSERT_OFFSET(onair_api_t, media_health_watch, 656);
ONAIR_ASSERT_OFFSET(onair_api_t, media_stream_configure, 664);
ONAIR_ASSERT_OFFSET(onair_api_t, media_source_switch, 672);
ONAIR_ASSERT_OFFSET(onair_api_t, target_reply_file, 680);
ONAIR_ASSERT_OFFSET(onair_api_t, media_ingest_open, 688);
ONAIR_ASSERT_OFFSET(onair_api_t, media_ingest_push, 696);
ONAIR_ASSERT_OFFSET(onair_api_t, media_ingest_close, 704);
ONAIR_ASSERT_OFFSET(onair_api_t, loop_post, 712);
ONAIR_ASSERT_OFFSET(onair_api_t, ws_endpoint_add, 720);
ONAIR_ASSERT_OFFSET(onair_api_t, ws_send_bytes, 728);    /* the last function of ABI 1.6 */
ONAIR_ASSERT_OFFSET(onair_api_t, media_room_watch, 736); /* ABI 1.7 */

/* Grows with every appended function (then add its offset above). */
ONAIR_ASSERT_SIZE(onair_api_t, 744);

/* raw WebSocket endpoints (ABI 1.6) */
ONAIR_ASSERT_OFFSET(onair_ws_endpoint_t, size, 0);
ONAIR_ASSERT_OFFSET(onair_ws_endpoint_t, path, 8);
ONAIR_ASSERT_OFFSET(onair_ws_endpoint_t, open, 16);
ONAIR_ASSERT_OFFSET(onair_ws_endpoint_t, message, 24);
ONAIR_ASSERT_OFFSET(onair_ws_endpoint_t, close, 32);
ONAIR_ASSERT_OFFSET(onair_ws_endpoint_t, ud, 40);
ONAIR_ASSERT_SIZE(onair_ws_endpoint_t, 48);

/* file replies (ABI 1.6) */
ONAIR_ASSERT_OFFSET(onair_file_opts_t, size, 0);
ONAIR_ASSERT_OFFSET(onair_file_opts_t, flags, 8);
ONAIR_ASSERT_OFFSET(onair_file_opts_t, cache_control, 16);
ONAIR_ASSERT_OFFSET(onair_file_opts_t, download_name, 24);
ONAIR_ASSERT_SIZE(onair_file_opts_t, 32);
_Static_assert(ONAIR_FILE_COMPRESS == 1 && ONAIR_FILE_NO_RANGES == 2,
               "enum onair_file_flags values changed");

/* reply targets (ABI 1.5): passed by value, two pointers */
ONAIR_ASSERT_OFFSET(onair_target_t, req, 0);
ONAIR_ASSERT_OFFSET(onair_target_t, msg, 8);
ONAIR_ASSERT_SIZE(onair_target_t, 16);

/* media hooks (ABI 1.4) */
ONAIR_ASSERT_OFFSET(onair_media_track_t, size, 0);
ONAIR_ASSERT_OFFSET(onair_media_track_t, stream, 8);
ONAIR_ASSERT_OFFSET(onair_media_track_t, kind, 16);
ONAIR_ASSERT_OFFSET(onair_media_track_t, codec, 24);
ONAIR_ASSERT_OFFSET(onair_media_track_t, fmtp, 32);
ONAIR_ASSERT_OFFSET(onair_media_track_t, clock_rate, 40);
ONAIR_ASSERT_OFFSET(onair_media_track_t, payload_type, 44);
ONAIR_ASSERT_OFFSET(onair_media_track_t, layers, 48);
ONAIR_ASSERT_OFFSET(onair_media_track_t, participant, 56); /* ABI 1.7 */
ONAIR_ASSERT_SIZE(onair_media_track_t, 64);
ONAIR_ASSERT_OFFSET(onair_tap_stats_t, size, 0);
ONAIR_ASSERT_OFFSET(onair_tap_stats_t, delivered, 8);
ONAIR_ASSERT_OFFSET(onair_tap_stats_t, dropped, 16);
ONAIR_ASSERT_OFFSET(onair_tap_stats_t, sr_ntp, 24); /* ABI 1.6 */
ONAIR_ASSERT_OFFSET(onair_tap_stats_t, sr_at_ms, 32);
ONAIR_ASSERT_OFFSET(onair_tap_stats_t, sr_rtp, 40);
ONAIR_ASSERT_SIZE(onair_tap_stats_t, 48);
ONAIR_ASSERT_OFFSET(onair_hook_t, size, 0);
ONAIR_ASSERT_OFFSET(onair_hook_t, chain, 8);
ONAIR_ASSERT_OFFSET(onair_hook_t, priority, 16);
ONAIR_ASSERT_OFFSET(onair_hook_t, fn, 24);
ONAIR_ASSERT_OFFSET(onair_hook_t, ud, 32);
ONAIR_ASSERT_SIZE(onair_hook_t, 40);
ONAIR_ASSERT_OFFSET(onair_service_t, size, 0);
ONAIR_ASSERT_OFFSET(onair_service_t, name, 8);
ONAIR_ASSERT_OFFSET(onair_service_t, fn, 16);
ONAIR_ASSERT_OFFSET(onair_service_t, ud, 24);
ONAIR_ASSERT_SIZE(onair_service_t, 32);
_Static_assert(ONAIR_HOOK_ALLOW == 0 && ONAIR_HOOK_DENY == 1 && ONAIR_HOOK_HOLD == 2 &&
                   ONAIR_HOOK_REWRITE == 3,
               "enum onair_verdict values changed");
ONAIR_ASSERT_OFFSET(onair_ratelimit_t, size, 0);
ONAIR_ASSERT_OFFSET(onair_ratelimit_t, name, 8);
ONAIR_ASSERT_OFFSET(onair_ratelimit_t, limit, 16);
ONAIR_ASSERT_OFFSET(onair_ratelimit_t, window_s, 20);
ONAIR_ASSERT_OFFSET(onair_ratelimit_t, key, 24);
ONAIR_ASSERT_SIZE(onair_ratelimit_t, 32);
_Static_assert(ONAIR_RATELIMIT_BY_USER == 1 && ONAIR_RATELIMIT_BY_IP == 2 &&
                   ONAIR_RATELIMIT_BY_USER_AND_IP == 3,
               "enum onair_ratelimit_key values changed");
/* ABI 1.1 structs */
ONAIR_ASSERT_OFFSET(onair_index_t, size, 0);
ONAIR_ASSERT_OFFSET(onair_index_t, keys, 8);
ONAIR_ASSERT_OFFSET(onair_index_t, flags, 16);
ONAIR_ASSERT_OFFSET(onair_index_t, ttl_seconds, 20);
ONAIR_ASSERT_SIZE(onair_index_t, 24);
ONAIR_ASSERT_OFFSET(onair_collection_t, size, 0);
ONAIR_ASSERT_OFFSET(onair_collection_t, name, 8);
ONAIR_ASSERT_OFFSET(onair_collection_t, version, 16);
ONAIR_ASSERT_OFFSET(onair_collection_t, migrate, 24);
ONAIR_ASSERT_OFFSET(onair_collection_t, migrate_ud, 32);
ONAIR_ASSERT_OFFSET(onair_collection_t, indexes, 40);
ONAIR_ASSERT_SIZE(onair_collection_t, 48);
_Static_assert(ONAIR_INDEX_UNIQUE == 1, "enum onair_index_flags value changed");

#endif

/*
 * The ABI anchor: a tiny shared library whose one exported function takes every
 * public type of <onair/plugin.h>, so its DWARF describes the whole SDK ABI. abidw
 * dumps it to onair-sdk.abi (the committed baseline) and the abi.abidiff test
 * compares a fresh build against that baseline. layout.c, compiled into the same
 * library, pins the layout with static assertions.
 */
#include <onair/plugin.h>

ONAIR_EXPORT void onair_abi_anchor(
    onair_api_t *api, onair_plugin_desc_t *desc, onair_route_t *route, onair_ws_type_t *ws_type,
    onair_config_key_t *config_key, onair_user_t *user, onair_plugin_t *plugin, onair_req_t *req,
    onair_wsmsg_t *msg, onair_conn_t conn, onair_timer_t timer, onair_sub_t sub,
    onair_plugin_entry_fn entry, onair_route_fn route_fn, onair_ws_fn ws_fn, onair_bus_fn bus_fn,
    onair_timer_fn timer_fn, onair_work_fn work_fn, onair_done_fn done_fn, enum onair_status status,
    enum onair_log_level level, enum onair_config_type config_type,
    enum onair_config_flags config_flags, enum onair_access access,
    enum onair_route_flags route_flags, onair_coll_t *coll, onair_index_t *index,
    onair_collection_t *collection, onair_migrate_fn migrate_fn, onair_store_fn store_fn,
    enum onair_index_flags index_flags, onair_ratelimit_t *ratelimit,
    enum onair_ratelimit_key ratelimit_key, onair_hook_t *hook, onair_hook_call_t *hook_call,
    onair_hook_fn hook_fn, onair_hook_done_fn hook_done_fn, enum onair_verdict verdict,
    onair_service_t *service, onair_service_call_t *service_call, onair_service_fn service_fn,
    onair_service_done_fn service_done_fn, onair_target_t *target);

ONAIR_EXPORT void onair_abi_anchor(
    onair_api_t *api, onair_plugin_desc_t *desc, onair_route_t *route, onair_ws_type_t *ws_type,
    onair_config_key_t *config_key, onair_user_t *user, onair_plugin_t *plugin, onair_req_t *req,
    onair_wsmsg_t *msg, onair_conn_t conn, onair_timer_t timer, onair_sub_t sub,
    onair_plugin_entry_fn entry, onair_route_fn route_fn, onair_ws_fn ws_fn, onair_bus_fn bus_fn,
    onair_timer_fn timer_fn, onair_work_fn work_fn, onair_done_fn done_fn, enum onair_status status,
    enum onair_log_level level, enum onair_config_type config_type,
    enum onair_config_flags config_flags, enum onair_access access,
    enum onair_route_flags route_flags, onair_coll_t *coll, onair_index_t *index,
    onair_collection_t *collection, onair_migrate_fn migrate_fn, onair_store_fn store_fn,
    enum onair_index_flags index_flags, onair_ratelimit_t *ratelimit,
    enum onair_ratelimit_key ratelimit_key, onair_hook_t *hook, onair_hook_call_t *hook_call,
    onair_hook_fn hook_fn, onair_hook_done_fn hook_done_fn, enum onair_verdict verdict,
    onair_service_t *service, onair_service_call_t *service_call, onair_service_fn service_fn,
    onair_service_done_fn service_done_fn, onair_target_t *target)
{
    (void)hook, (void)hook_call, (void)hook_fn, (void)hook_done_fn, (void)verdict;
    (void)service, (void)service_call, (void)service_fn, (void)service_done_fn;
    (void)api, (void)desc, (void)route, (void)ws_type, (void)config_key, (void)user;
    (void)plugin, (void)req, (void)msg, (void)conn, (void)timer, (void)sub, (void)entry;
    (void)route_fn, (void)ws_fn, (void)bus_fn, (void)timer_fn, (void)work_fn, (void)done_fn;
    (void)status, (void)level, (void)config_type, (void)config_flags, (void)access;
    (void)route_flags, (void)coll, (void)index, (void)collection, (void)migrate_fn;
    (void)store_fn, (void)index_flags, (void)ratelimit, (void)ratelimit_key, (void)target;
}

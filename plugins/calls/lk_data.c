/*
 * DataPacket forwarding (lk_data.h): our own reading of livekit_models.proto's DataPacket and
 * UserPacket field numbers.
 */
#include "lk_data.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

/* DataPacket */
#define DP_DEST_IDENTITIES 5
#define DP_IDENTITY        4
#define DP_SID             17
#define DP_USER            2
/* UserPacket */
#define UP_SID             1
#define UP_IDENTITY        5
#define UP_DEST_IDENTITIES 6

static int add_dest(lk_data_route_t *route, const lk_field_t *f)
{
    if (f->wt != 2 || route->ndests == LK_MAX_DATA_DESTS)
        return LK_EPROTO;
    route->dests[route->ndests++] = (lk_str_t){(const char *)f->data, f->len};
    return 0;
}

/* The UserPacket with the sender's ids, its destinations into route. */
static int user_packet(const lk_field_t *in, const char *identity, const char *sid, lk_buf_t *out,
                       lk_data_route_t *route)
{
    lk_reader_t r = {in->data, in->data + in->len};
    lk_field_t f;
    int rc;
    while ((rc = lk_next(&r, &f)) == 1) {
        if (f.field == UP_SID || f.field == UP_IDENTITY)
            continue;
        if (f.field == UP_DEST_IDENTITIES && add_dest(route, &f) < 0)
            return LK_EPROTO;
        lk_put_field(out, &f);
    }
    if (rc < 0)
        return LK_EPROTO;
    lk_put_str(out, UP_SID, sid);
    lk_put_str(out, UP_IDENTITY, identity);
    return 0;
}

int lk_data_forward(const uint8_t *pkt, size_t len, const char *identity, const char *sid,
                    lk_buf_t *out, lk_data_route_t *route)
{
    memset(route, 0, sizeof *route);
    if (!pkt || !len)
        return LK_EPROTO;
    lk_reader_t r = {pkt, pkt + len};
    lk_field_t f;
    int rc;
    while ((rc = lk_next(&r, &f)) == 1) {
        if (f.field == DP_IDENTITY || f.field == DP_SID)
            continue;
        if (f.field == DP_DEST_IDENTITIES && add_dest(route, &f) < 0)
            return LK_EPROTO;
        if (f.field == DP_USER) {
            if (f.wt != 2)
                return LK_EPROTO;
            lk_buf_t user = {0};
            if (user_packet(&f, identity, sid, &user, route) < 0) {
                lk_buf_free(&user);
                return LK_EPROTO;
            }
            lk_put_msg(out, DP_USER, &user);
            lk_buf_free(&user);
        } else {
            lk_put_field(out, &f);
        }
        /* the oneof's case: the known message fields (2, 3, 6..15, 18) */
        if (f.wt == 2 &&
            (f.field == 2 || f.field == 3 || (f.field >= 6 && f.field <= 15) || f.field == 18))
            route->value = f.field;
    }
    if (rc < 0 || !route->value)
        return LK_EPROTO;
    lk_put_str(out, DP_IDENTITY, identity);
    lk_put_str(out, DP_SID, sid);
    return lk_buf_ok(out) ? 0 : LK_ENOMEM;
}

int lk_data_addressed(const lk_data_route_t *route, const char *identity)
{
    if (!route->ndests)
        return 1;
    size_t n = strlen(identity);
    for (size_t i = 0; i < route->ndests; i++)
        if (route->dests[i].n == n && !memcmp(route->dests[i].s, identity, n))
            return 1;
    return 0;
}

char *lk_base64_encode(const uint8_t *data, size_t len)
{
    if (len > (size_t)INT32_MAX / 2)
        return NULL;
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (out)
        EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

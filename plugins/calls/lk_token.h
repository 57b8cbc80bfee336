/*
 * LiveKit access tokens: HS256 JWTs whose `iss` is an API key, signed with that key's
 * secret; `sub` is the participant identity, `video` the grant (livekit protocol's
 * auth/grants.go: VideoGrant). Absent canPublish / canSubscribe / canPublishData mean
 * true, as in LiveKit's server.
 */
#ifndef ONAIR_CALLS_LK_TOKEN_H
#define ONAIR_CALLS_LK_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#define LK_TOKEN_MAX 8192 /* bytes of a token we look at */
#define LK_ID_MAX    256

typedef struct {
    const char *key, *secret;
} lk_api_key_t;

typedef struct {
    char api_key[LK_ID_MAX];
    char identity[LK_ID_MAX];
    char name[LK_ID_MAX];
    char room[LK_ID_MAX];
    char *metadata; /* owned, may be NULL; lk_grant_free */
    int64_t nbf, exp;
    int room_join, room_create, room_admin, room_list;
    int can_publish, can_subscribe, can_publish_data, hidden;
} lk_grant_t;

enum lk_token_err {
    LK_TOKEN_OK = 0,
    LK_TOKEN_MALFORMED = -1, /* not a JWT, bad base64/JSON, alg other than HS256 */
    LK_TOKEN_UNKNOWN_KEY = -2,
    LK_TOKEN_BAD_SIGNATURE = -3,
    LK_TOKEN_EXPIRED = -4,
    LK_TOKEN_NOT_YET_VALID = -5,
    LK_TOKEN_NO_IDENTITY = -6,
};

/* leeway_s: clock skew allowed on exp and nbf. */
int lk_token_verify(const char *token, const lk_api_key_t *keys, size_t nkeys, int64_t now_s,
                    int64_t leeway_s, lk_grant_t *out);
void lk_grant_free(lk_grant_t *g);

/* A LiveKit access token (HS256) as LiveKit's server SDKs mint them: iss = key, sub =
 * identity, name, nbf = now, exp = now + ttl, video {room, roomJoin, canPublish,
 * canSubscribe, canPublishData}. malloc'd; NULL when out of memory. */
char *lk_token_mint(const char *key, const char *secret, const char *identity, const char *name,
                    const char *room, int64_t now_s, int64_t ttl_s, int can_publish,
                    int can_subscribe);
const char *lk_token_strerror(int err);

#endif

/*
 * Documents in memory: the MongoDB-subset language evaluated in C. Used by the
 * sqlite backend (which stores JSON text and evaluates filters, updates, sorts,
 * projections and aggregations here), by the common store layer (validation,
 * ids, cursors) and by the test host's in-memory store. Thread-safe, no globals
 * except the ObjectId counter (atomic).
 *
 * Supported (anything else is rejected by the validators with a message naming
 * the operator):
 *   filter:     field equality, $eq $ne $in $nin $gt $gte $lt $lte $exists, $and $or
 *               at top level or nested in $and/$or; dotted paths; array fields match
 *               when any element matches (as MongoDB does).
 *   update:     $set $unset $inc $push $pull $addToSet $setOnInsert; or a whole
 *               replacement document (no $ keys; _id kept).
 *   sort:       {"field": 1|-1, ...}
 *   projection: {"field": 1, ...} (inclusion, _id included unless "_id": 0) or
 *               {"field": 0, ...} (exclusion); not mixed (except _id).
 *   pipeline:   $match, $group {_id: "$field" | null | {k: "$f", ...}, out: {$sum|$avg|
 *               $min|$max: "$field" | number}, out2: {$count: {}}}, $sort, $limit.
 * Comparison across types follows MongoDB's BSON order: null < numbers < strings <
 * objects < arrays < booleans; a range operator ($gt...) only matches values of the
 * same type class as its operand (so {"age": {"$gt": "x"}} never matches numbers).
 */
#ifndef ONAIR_STORE_DOC_H
#define ONAIR_STORE_DOC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define DOC_MAX_BYTES (16 * 1024 * 1024) /* as MongoDB */
#define DOC_ID_LEN    24

/* A new ObjectId as 24 lower-case hex digits (4-byte time, 5 random, 3 counter). */
void doc_new_id(char out[DOC_ID_LEN + 1]);
int doc_id_valid(const char *s); /* 24 hex digits */

/* Validation: 0, or -1 with a message in err ("unsupported filter operator $where"). */
int doc_validate_filter(json_t *filter, char *err, size_t err_len);
int doc_validate_update(json_t *update, char *err, size_t err_len);
int doc_validate_sort(json_t *sort, char *err, size_t err_len);
int doc_validate_projection(json_t *projection, char *err, size_t err_len);
int doc_validate_pipeline(json_t *pipeline, char *err, size_t err_len);
/* A document to store: an object, no field names starting with '$' or containing
 * '\0' at any depth, "_id" absent or a valid id, serialized size <= DOC_MAX_BYTES.
 * Returns 0, -1 (invalid) or -2 (too big). */
int doc_validate_document(json_t *doc, char *err, size_t err_len);
/* 1 if a field name is valid in a document */
int doc_field_name_valid(const char *name);

/* Look up a dotted path; NULL if absent. Does not descend into arrays by index
 * except numeric segments ("tags.0"). */
json_t *doc_get_path(json_t *doc, const char *path);

/* 1 if doc matches the (validated) filter. NULL filter matches everything. */
int doc_match(json_t *doc, json_t *filter);

/* Apply a (validated) update to doc in place. `inserting` applies $setOnInsert.
 * Returns 1 if the document changed, 0 if not, -1 with err on a type error (e.g.
 * $inc on a string, $push on a non-array), leaving doc unchanged. */
int doc_apply_update(json_t *doc, json_t *update, int inserting, char *err, size_t err_len);
/* The document an upsert inserts: equality fields of the filter, then the update
 * applied with inserting = 1, and a new _id unless the filter fixes one. NULL + err
 * on error. */
json_t *doc_upsert_base(json_t *filter, json_t *update, char *err, size_t err_len);

/* MongoDB-order comparison of two JSON values (NULL = missing, sorts as null). */
int doc_compare_values(json_t *a, json_t *b);
/* Compare two documents by a (validated) sort spec, then by _id for stability. */
int doc_compare_sorted(json_t *a, json_t *b, json_t *sort);
/* Sort an array of documents in place (stable). */
void doc_sort(json_t *docs, json_t *sort);
/* A new document with the projection applied. */
json_t *doc_project(json_t *doc, json_t *projection);

/* Paging cursors. The cursor of a document under a sort spec encodes the sort key
 * values and _id (opaque base64url text). doc_cursor_filter() turns a cursor into a
 * filter matching only documents strictly after it in that order, to be combined
 * with the user's filter via $and. NULL + err if the cursor is malformed or was made
 * for another sort. */
char *doc_cursor_encode(json_t *doc, json_t *sort);
json_t *doc_cursor_filter(const char *cursor, json_t *sort, char *err, size_t err_len);

/* Evaluate a (validated) pipeline over all documents of a collection. docs is
 * borrowed; returns a new array. */
json_t *doc_aggregate(json_t *docs, json_t *pipeline, char *err, size_t err_len);

#endif

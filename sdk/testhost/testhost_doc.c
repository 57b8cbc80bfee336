/*
 * The core's document evaluator (core/store/doc.c) compiled into the test host, so
 * its in-memory store filters, updates, sorts, pages and aggregates exactly like
 * the server. Its global names get a prefix of ours (compile definitions in
 * CMakeLists.txt), so they cannot clash with a plugin's own.
 *
 * doc.c calls floor(), which the compiler inlines only when optimizing; a plugin's
 * test must not need -lm for the installed libonair_testhost.a, so a local
 * replacement is used (exact: doc.c only asks whether a double is integral).
 */
#include <math.h>

static double testhost_floor(double d)
{
    /* |d| >= 2^52 (or inf / nan): already integral, or no integer to round to */
    if (!(d > -4503599627370496.0 && d < 4503599627370496.0))
        return d;
    double t = (double)(long long)d; /* truncation toward zero, exact in this range */
    return t > d ? t - 1.0 : t;
}

#define floor testhost_floor
#include "store/doc.c"

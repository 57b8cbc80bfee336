/* A shared object that is not an onair plugin. */
#include <onair/plugin.h>

ONAIR_EXPORT int something_else(void);
int something_else(void)
{
    return 42;
}

/* version.c — the version of the library actually linked. */
#include "bloopcl.h"

unsigned bloopcl_version_number(void)
{
    return BLOOPCL_VERSION_NUMBER;
}

const char *bloopcl_version_string(void)
{
    return BLOOPCL_VERSION_STRING;
}

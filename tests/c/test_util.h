/* Minimal assertion helpers shared by the C tests. */
#ifndef MTIART_TEST_UTIL_H
#define MTIART_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>

#include "mtiart.h"

static int test_failures;

/* A call that must succeed; prints the status name and the detail message if not. */
#define CHECK_OK(call)                                                                             \
    do {                                                                                           \
        mtiart_status st_ = (call);                                                                \
        if (st_ != MTIART_SUCCESS) {                                                               \
            fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #call,                    \
                    mtiart_status_name(st_), mtiart_last_error_message());                         \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* A call that must fail with a given status. */
#define CHECK_STATUS(call, expected)                                                               \
    do {                                                                                           \
        mtiart_status st_ = (call);                                                                \
        if (st_ != (expected)) {                                                                   \
            fprintf(stderr, "%s:%d: %s -> %s, expected %s (%s)\n", __FILE__, __LINE__, #call,      \
                    mtiart_status_name(st_), mtiart_status_name(expected),                         \
                    mtiart_last_error_message());                                                  \
            test_failures++;                                                                       \
        }                                                                                          \
    } while (0)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            test_failures++;                                                                       \
        }                                                                                          \
    } while (0)

#define TEST_MAIN_END()                                                                            \
    do {                                                                                           \
        if (test_failures) {                                                                       \
            fprintf(stderr, "%d check(s) failed\n", test_failures);                                \
            return 1;                                                                              \
        }                                                                                          \
        printf("ok\n");                                                                            \
        return 0;                                                                                  \
    } while (0)

#endif

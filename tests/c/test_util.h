/* Minimal assertion helpers shared by the C tests. */
#ifndef MTIART_TEST_UTIL_H
#define MTIART_TEST_UTIL_H

#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* Run this program again as `self arg` with the one environment variable `env`
 * ("NAME=value"): its exit status (-1 if it could not run or was killed), its standard
 * output in out. For settings read once at initialisation. */
__attribute__((unused)) static int test_run_self(const char *arg, const char *env, char *out,
                                                 size_t cap) {
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) return -1;
    self[len] = '\0';
    char env_copy[256];
    snprintf(env_copy, sizeof env_copy, "%s", env);
    char arg_copy[64];
    snprintf(arg_copy, sizeof arg_copy, "%s", arg);
    char *envp[] = {env_copy, NULL};
    char *argv[] = {self, arg_copy, NULL};
    int fds[2];
    if (pipe(fds) != 0) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    pid_t pid;
    int rc = posix_spawn(&pid, self, &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return -1;
    }
    size_t got = 0;
    ssize_t m;
    while (got + 1 < cap && (m = read(fds[0], out + got, cap - 1 - got)) > 0) got += (size_t)m;
    out[got] = '\0';
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

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

/*
 * The pod sandbox's pause process for the real-pod test node (hack/build-images packs it
 * as an OCI image; containerd's sandbox_image names it). No registry is reachable here, so
 * the usual pause image cannot be pulled: this one holds the pod's namespaces open, reaps
 * any orphan re-parented to it (it is PID 1 when the pod shares its PID namespace), and
 * exits 0 on SIGINT or SIGTERM, which is how the runtime stops a sandbox.
 */
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;

static void on_stop(int sig) { (void)sig; stopping = 1; }

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv) {
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "pause takes no arguments\n");
        return 2;
    }
    struct sigaction stop = {.sa_handler = on_stop};
    struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
    sigemptyset(&stop.sa_mask);
    sigemptyset(&child.sa_mask);
    if (sigaction(SIGINT, &stop, NULL) || sigaction(SIGTERM, &stop, NULL) ||
        sigaction(SIGCHLD, &child, NULL)) {
        perror("sigaction");
        return 1;
    }
    while (!stopping)
        pause();
    return 0;
}

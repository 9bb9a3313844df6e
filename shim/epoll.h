/* epoll.h - bookkeeping shared between the epoll hooks and close(). */
#ifndef STS_EPOLL_H
#define STS_EPOLL_H

/* Has epfd ever held one of our fds?  (one byte-map load) */
int epoll_marked(int fd);
/* fd is being closed: drop the registrations of it, or of the set it was. */
void epoll_forget(int fd);
/* fork(): 0 before (takes the list's lock), 1 in the parent after
 * (releases it), 2 in the child (resets it). */
void epoll_atfork(int phase);

#endif

# starttls-shim - see README.md.  make, make check, make demo, make bench.
VERSION   = 0.1
PREFIX   ?= /usr/local
bindir   ?= $(PREFIX)/bin
libdir   ?= $(PREFIX)/lib
pkglibdir ?= $(libdir)/starttls-shim
mandir   ?= $(PREFIX)/share/man
DESTDIR  ?=

CC       ?= cc
PKG_CONFIG ?= pkg-config
OPTFLAGS ?= -O2 -g
WARN      = -Wall -Wextra -Werror -Wno-format-truncation
CFLAGS   += $(OPTFLAGS) $(WARN) -std=gnu11 -fPIC \
            -DVERSION='"$(VERSION)"' -DLIBDIR='"$(pkglibdir)"'
SSL_CFLAGS := $(shell $(PKG_CONFIG) --cflags openssl 2>/dev/null)
SSL_LIBS   := $(shell $(PKG_CONFIG) --libs openssl 2>/dev/null || echo -lssl -lcrypto)

B        ?= build
# The preloaded library: hooks, fd table, dialogues.  No OpenSSL in here.
CORE     = libc config log buf proto smtp pop3 imap names table conn tls init \
           hook-connect hook-io hook-poll hook-epoll hook-fd hook-stdio hook-resolver \
           iofile hook-glibc hook-process
CORE_OBJ = $(CORE:%=$(B)/obj/%.o)
# The wrapper shares the settings parsers.
WRAP_OBJ = $(B)/obj/main.o $(B)/obj/config.o $(B)/obj/log.o $(B)/obj/libc.o $(B)/obj/buf.o \
           $(B)/obj/proto.o $(B)/obj/smtp.o $(B)/obj/pop3.o $(B)/obj/imap.o
HDRS     = $(wildcard shim/*.h)

UNIT     = $(patsubst tests/unit/%.c,$(B)/tests/unit/%,$(wildcard tests/unit/*.c))
EXAMPLES = $(patsubst examples/%.c,$(B)/examples/%,$(wildcard examples/*.c))

all: $(B)/libstarttls-shim.so $(B)/libstarttls-shim-tls.so $(B)/starttls-shim

$(B)/obj/%.o: shim/%.c $(HDRS) | $(B)/obj
	$(CC) $(CFLAGS) -c -o $@ $<

$(B)/obj/tls-openssl.o: shim/tls-openssl.c $(HDRS) | $(B)/obj
	$(CC) $(CFLAGS) $(SSL_CFLAGS) -c -o $@ $<

$(B)/libstarttls-shim.so: $(CORE_OBJ) shim/exports.map
	$(CC) $(CFLAGS) -shared -o $@ $(CORE_OBJ) -Wl,--version-script=shim/exports.map \
	    -Wl,-z,relro -Wl,-z,noseparate-code -Wl,--as-needed -ldl -lpthread $(LDFLAGS)

$(B)/libstarttls-shim-tls.so: $(B)/obj/tls-openssl.o shim/tls-exports.map
	$(CC) $(CFLAGS) -shared -o $@ $< -Wl,--version-script=shim/tls-exports.map \
	    -Wl,-z,now -Wl,-z,relro $(SSL_LIBS) $(LDFLAGS)

$(B)/starttls-shim: $(WRAP_OBJ)
	$(CC) $(CFLAGS) -fPIE -pie -o $@ $(WRAP_OBJ) $(LDFLAGS)

$(B)/obj $(B)/tests/unit $(B)/examples:
	mkdir -p $@

# Unit tests link the modules directly, no preload.
$(B)/tests/unit/%: tests/unit/%.c $(CORE_OBJ) | $(B)/tests/unit
	$(CC) $(CFLAGS) -Ishim -o $@ $< $(filter-out $(B)/obj/init.o $(B)/obj/hook-%.o,$(CORE_OBJ)) -ldl -lpthread

$(B)/examples/%: examples/%.c $(wildcard examples/*.h) | $(B)/examples
	$(CC) $(OPTFLAGS) $(WARN) -std=gnu11 -D_GNU_SOURCE -o $@ $< -lpthread

# The targets that test install their Debian packages first (as root; else
# they print the apt-get line and stop), before anything is compiled: on a
# bare machine the build itself needs uthash-dev and libssl-dev.
deps:
	@tests/lib/deps.sh

check:
	@tests/lib/deps.sh
	@$(MAKE) --no-print-directory all $(UNIT) $(EXAMPLES)
	@tests/run.sh

# The same suites with the library and the C test programs under ASan+UBSan.
check-sanitize:
	@tests/lib/deps.sh
	@tests/sanitize.sh

demo:
	@tests/lib/deps.sh
	@$(MAKE) --no-print-directory all
	@tests/demo.sh

bench:
	@tests/lib/deps.sh
	@$(MAKE) --no-print-directory all
	@tests/bench/bench.sh

fuzz:
	@tests/lib/deps.sh
	@tests/fuzz/run.sh

install: all
	install -d $(DESTDIR)$(bindir) $(DESTDIR)$(pkglibdir) $(DESTDIR)$(mandir)/man1
	install -m 755 $(B)/starttls-shim $(DESTDIR)$(bindir)/starttls-shim
	install -m 644 $(B)/libstarttls-shim.so $(B)/libstarttls-shim-tls.so $(DESTDIR)$(pkglibdir)/
	install -m 644 starttls-shim.1 $(DESTDIR)$(mandir)/man1/starttls-shim.1

uninstall:
	rm -f $(DESTDIR)$(bindir)/starttls-shim $(DESTDIR)$(mandir)/man1/starttls-shim.1
	rm -rf $(DESTDIR)$(pkglibdir)

clean:
	rm -rf $(B)

.PHONY: all deps check check-sanitize demo bench fuzz install uninstall clean

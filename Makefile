# colcrypt: PGXS build.
#
#   make && make install          build and install into the pg_config found
#   make installcheck             pg_regress in a temporary instance, then TAP
#   make unittest                 C unit tests (Wycheproof vectors)
#   make test-programs            helpers the TAP tests run
#   make COPT=-Werror             what CI builds with
#
# Run the whole suite with scripts/test.sh, which also installs what it needs.

EXTENSION = colcrypt
EXTVERSION = 1.0
MODULE_big = colcrypt
DATA_built = colcrypt--$(EXTVERSION).sql

CRYPTO_SRCS = src/crypto/aead.c src/crypto/gcm_batch.c src/crypto/primitives.c src/crypto/envelope.c
SRCS = src/colcrypt.c \
	$(CRYPTO_SRCS) \
	src/keys/keycache.c src/keys/catalog.c src/keys/keyaccess.c \
	src/keys/keymgmt.c src/keys/lifecycle.c src/keys/reencrypt.c src/keys/audit.c \
	src/keys/objacl.c src/keys/roles.c \
	src/providers/provider.c src/providers/provider_util.c src/providers/file.c src/providers/pkcs11.c \
	src/providers/kmip.c src/providers/ttlv.c \
	src/providers/http.c src/providers/json.c src/providers/sigv4.c \
	src/providers/vault.c src/providers/awskms.c \
	src/types/typedesc.c src/types/enctype.c src/types/compare.c src/types/ddl_guard.c src/types/logredact.c \
	src/exec/batch.c src/exec/batchscan.c src/exec/execguard.c
OBJS = $(SRCS:.c=.o)

P11KIT_CFLAGS := $(shell pkg-config --cflags p11-kit-1 2>/dev/null || echo -I/usr/include/p11-kit-1)
PG_CPPFLAGS = -I$(srcdir)/include $(P11KIT_CFLAGS)
SHLIB_LINK = -lcurl -lssl -lcrypto -ldl -pthread

# pg_regress: one file per topic, in a throwaway instance with the library
# preloaded.  (Not tmp_check: the TAP step removes that directory.)
REGRESS = init text_type bytea_type types operators deterministic ciphertext privileges ddl catalog lifecycle pkcs11 kmip vault aws_kms adversarial batchscan \
	sec_setup sec_handout sec_fkey sec_order sec_stats sec_ddl sec_input sec_maint sec_forged sec_errors acl sec_keymgmt sec_searchpath padding
REGRESS_OPTS = --temp-instance=$(abs_builddir)/tmp_regress \
	--temp-config=$(srcdir)/test/regress.conf
TAP_TESTS = 1

EXTRA_CLEAN = tmp_regress tmp_providers test/test_crypto test/test_envelope test/test_ttlv test/test_sigv4 test/sigv4_verify.log bench/gcm_micro test/p11shim.so test/asan_stub.so test/proto_client \
	results regression.diffs regression.out

# make SANITIZE=1: colcrypt.so built with AddressSanitizer and
# UndefinedBehaviorSanitizer.  The server must then start with the ASan
# runtime preloaded; scripts/test.sh --sanitize does all of it.
ifdef SANITIZE
PG_CFLAGS += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
SHLIB_LINK += -fsanitize=address,undefined
endif

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS does not track headers: every object depends on all of ours (a
# changed struct in provider.h must rebuild every provider).
$(OBJS): $(wildcard $(srcdir)/include/colcrypt/*.h)

colcrypt--$(EXTVERSION).sql: src/sql/gen.sh src/sql/catalog.sql src/sql/shadow.sql src/sql/type.sql.in \
		src/sql/operator.sql.in src/sql/crossop.sql.in src/sql/crossenc.sql.in src/sql/opclass.sql.in src/sql/cast.sql.in src/sql/tail.sql include/colcrypt/typelist.h
	sh $(srcdir)/src/sql/gen.sh $(srcdir) > $@

# ---- C unit tests: the crypto layer and the envelope, without PostgreSQL ----

WYCHEPROOF ?= $(abspath $(srcdir)/../shared/testvectors/wycheproof)
SIGV4_SUITE ?= $(abspath $(srcdir)/../shared/testvectors/aws-sigv4/suite)
UNIT_CFLAGS = -O2 -g -Wall -Wextra -Werror -I$(srcdir)/include

test/test_crypto: test/test_crypto.c $(CRYPTO_SRCS) include/colcrypt/crypto.h
	$(CC) $(UNIT_CFLAGS) -o $@ test/test_crypto.c $(CRYPTO_SRCS) -lcrypto -ljson-c

test/test_envelope: test/test_envelope.c $(CRYPTO_SRCS) include/colcrypt/envelope.h
	$(CC) $(UNIT_CFLAGS) -o $@ test/test_envelope.c $(CRYPTO_SRCS) -lcrypto

# The TTLV codec parses what a network peer sends: tested under ASan and UBSan.
test/test_ttlv: test/test_ttlv.c src/providers/ttlv.c include/colcrypt/ttlv.h
	$(CC) $(UNIT_CFLAGS) -fsanitize=address,undefined -fno-sanitize-recover=all \
		-o $@ test/test_ttlv.c src/providers/ttlv.c -lcrypto

# The SigV4 signer against AWS's published suite, also under ASan and UBSan.
test/test_sigv4: test/test_sigv4.c src/providers/sigv4.c include/colcrypt/sigv4.h
	$(CC) $(UNIT_CFLAGS) -fsanitize=address,undefined -fno-sanitize-recover=all \
		-o $@ test/test_sigv4.c src/providers/sigv4.c -lcrypto

.PHONY: bench-gcm
# The batch GCM core against the EVP path, ns per value (not part of the tests).
bench/gcm_micro: bench/gcm_micro.c $(CRYPTO_SRCS) include/colcrypt/crypto.h
	$(CC) $(UNIT_CFLAGS) -o $@ bench/gcm_micro.c $(CRYPTO_SRCS) -lcrypto
bench-gcm: bench/gcm_micro
	bench/gcm_micro

.PHONY: unittest test-programs
unittest: test/test_crypto test/test_envelope test/test_ttlv test/test_sigv4
	test/test_crypto $(WYCHEPROOF)
	test/test_envelope
	test/test_ttlv
	test/test_sigv4 $(SIGV4_SUITE)
	@# The AWS KMS emulator's own SigV4 verifier (which checks every request
	@# the aws-kms provider sends in the tests) against the same suite.
	/usr/bin/python3 test/awskms/kms_emu.py --verify-suite $(SIGV4_SUITE) > test/sigv4_verify.log || { cat test/sigv4_verify.log; exit 1; }
	tail -n 1 test/sigv4_verify.log

# Programs the TAP tests run.
test-programs: test/proto_client test/p11shim.so test/asan_stub.so

# Preloaded with libasan by scripts/test.sh --sanitize (see the file).
test/asan_stub.so: test/asan_stub.c
	$(CC) $(UNIT_CFLAGS) -shared -fPIC -o $@ $<

test/p11shim.so: test/p11shim.c
	$(CC) $(UNIT_CFLAGS) $(P11KIT_CFLAGS) -shared -fPIC -o $@ $< -ldl

test/proto_client: test/proto_client.c
	$(CC) $(UNIT_CFLAGS) -I$(shell $(PG_CONFIG) --includedir) -o $@ $< \
		-L$(shell $(PG_CONFIG) --libdir) -lpq

# ---- Fuzzing: libFuzzer harnesses for what parses hostile input -----------
#
#   make fuzz          build test/fuzz/fuzz_* (clang, ASan + UBSan)
#   make fuzz-smoke    each harness FUZZ_SECONDS (30) from the kept corpus,
#                      in a temporary copy; fails on a crash, leak or timeout
#   make fuzz-long     each harness FUZZ_SECONDS (300); new inputs that add
#                      coverage are merged into test/fuzz/corpus/<harness>/
#
# See test/fuzz/run.sh.  The harnesses link the provider files against a
# stand-in for the backend (test/fuzz/pgshim.c) and PostgreSQL's frontend
# libpgcommon/libpgport (StringInfo, psprintf, base64, pg_parse_json).

FUZZ_CC ?= clang
FUZZ_HARNESSES = test/fuzz/fuzz_envelope test/fuzz/fuzz_ttlv test/fuzz/fuzz_json test/fuzz/fuzz_http
FUZZ_CFLAGS = -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=all -Wall -Wno-ignored-attributes \
	-I$(srcdir)/include -I$(srcdir)/test/fuzz
FUZZ_PG_CFLAGS = $(FUZZ_CFLAGS) -I$(shell $(PG_CONFIG) --includedir-server) -D_GNU_SOURCE
FUZZ_PG_LIBS = $(shell $(PG_CONFIG) --pkglibdir)/libpgcommon.a \
	$(shell $(PG_CONFIG) --pkglibdir)/libpgport.a -lcrypto
FUZZ_SHIM = test/fuzz/pgshim.c test/fuzz/cleanse.c src/providers/provider_util.c $(CRYPTO_SRCS)
FUZZ_DEPS = $(wildcard $(srcdir)/include/colcrypt/*.h) test/fuzz/pgshim.h $(FUZZ_SHIM)

test/fuzz/fuzz_envelope: test/fuzz/fuzz_envelope.c src/crypto/envelope.c include/colcrypt/envelope.h test/fuzz/cleanse.c
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ test/fuzz/fuzz_envelope.c src/crypto/envelope.c test/fuzz/cleanse.c $(FUZZ_PG_LIBS)

test/fuzz/fuzz_ttlv: test/fuzz/fuzz_ttlv.c src/providers/kmip.c src/providers/ttlv.c $(FUZZ_DEPS)
	$(FUZZ_CC) $(FUZZ_PG_CFLAGS) -o $@ test/fuzz/fuzz_ttlv.c src/providers/ttlv.c $(FUZZ_SHIM) $(FUZZ_PG_LIBS)

test/fuzz/fuzz_json: test/fuzz/fuzz_json.c src/providers/json.c $(FUZZ_DEPS)
	$(FUZZ_CC) $(FUZZ_PG_CFLAGS) -o $@ test/fuzz/fuzz_json.c src/providers/json.c $(FUZZ_SHIM) $(FUZZ_PG_LIBS)

FUZZ_HTTP_SRCS = test/fuzz/fuzz_http.c test/fuzz/http_vault.c test/fuzz/http_aws.c \
	src/providers/http.c src/providers/json.c src/providers/sigv4.c
test/fuzz/fuzz_http: $(FUZZ_HTTP_SRCS) src/providers/vault.c src/providers/awskms.c test/fuzz/fuzz_http.h $(FUZZ_DEPS)
	$(FUZZ_CC) $(FUZZ_PG_CFLAGS) -o $@ $(FUZZ_HTTP_SRCS) $(FUZZ_SHIM) $(FUZZ_PG_LIBS)

.PHONY: fuzz fuzz-smoke fuzz-long
fuzz: $(FUZZ_HARNESSES)

fuzz-smoke: fuzz
	test/fuzz/run.sh smoke $(or $(FUZZ_SECONDS),30) $(FUZZ_HARNESSES)

fuzz-long: fuzz
	test/fuzz/run.sh long $(or $(FUZZ_SECONDS),300) $(FUZZ_HARNESSES)

EXTRA_CLEAN += $(FUZZ_HARNESSES) test/fuzz/findings
# ---- end of fuzzing -------------------------------------------------------

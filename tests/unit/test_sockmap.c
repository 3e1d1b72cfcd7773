/* The socket map: which fd each coalesced socket was claimed on. Claims and
 * releases against a simple model, with ids chosen to collide, and the
 * open-addressing invariant checked after each step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fake_sys.h"
#include "sockmap.h"

#define MODEL_IDS 300
#define MODEL_FDS 64

/* The model: for each id (index), its owner fd or -1, and how many fds are
 * recorded as passing. And which fds still hold which id, as still_holds is
 * asked. */
struct model {
	int owner[MODEL_IDS];
	unsigned passing[MODEL_IDS];
	uint64_t held_by[MODEL_FDS];
	struct co_sockmap map;
};

static int setup(void **state)
{
	struct model *m = calloc(1, sizeof(*m));
	int i;

	if (!m)
		return -1;
	fake_reset();
	for (i = 0; i < MODEL_IDS; i++)
		m->owner[i] = -1;
	pthread_mutex_init(&m->map.lock, NULL);
	*state = m;
	return 0;
}

static int teardown(void **state)
{
	struct model *m = *state;

	free(m->map.slots);
	pthread_mutex_destroy(&m->map.lock);
	free(m);
	return 0;
}

/* Ids that spread over the whole 64-bit range, and some that differ only in
 * high bits, so that home slots collide. */
static uint64_t id_of(int i)
{
	return i % 3 == 0 ? (uint64_t)(i + 1) << 40 : (uint64_t)i * 2654435761u + 1;
}

static int model_holds(void *arg, int fd, uint64_t id)
{
	struct model *m = arg;

	return fd >= 0 && fd < MODEL_FDS && m->held_by[fd] == id;
}

/* Every entry of the table is in the model and can be found from its home
 * slot without crossing an empty slot; every model entry is in the table. */
static void assert_map_matches(const struct model *m)
{
	const struct co_sockmap *map = &m->map;
	size_t i, j, count = 0, mask = map->cap ? map->cap - 1 : 0;
	int k;

	for (i = 0; i < map->cap; i++) {
		uint64_t id = map->slots[i].id;

		if (!id)
			continue;
		count++;
		for (k = 0; k < MODEL_IDS && id_of(k) != id; k++)
			;
		if (k == MODEL_IDS || m->owner[k] != map->slots[i].owner ||
		    m->passing[k] != map->slots[i].passing)
			fail_msg("slot %zu holds id %llx owner %d passing %u, not in the model", i,
				 (unsigned long long)id, map->slots[i].owner, map->slots[i].passing);
		/* Walk back from the slot: no hole before reaching an entry
		 * run that contains the home slot. */
		for (j = i; map->slots[j].id; j = (j - 1) & mask) {
			uint64_t h = id;

			h ^= h >> 33;
			h *= 0xff51afd7ed558ccdULL;
			h ^= h >> 33;
			if (((size_t)h & mask) == j)
				break;
			if (((j - 1) & mask) == i)
				fail_msg("id %llx: no home slot in its run", (unsigned long long)id);
		}
		if (!map->slots[j].id)
			fail_msg("id %llx at slot %zu is cut off from its home slot by a hole",
				 (unsigned long long)id, i);
	}
	assert_int_equal(count, map->count);
	for (k = 0, j = 0; k < MODEL_IDS; k++)
		j += m->owner[k] >= 0 || m->passing[k] > 0;
	assert_int_equal(j, count);
	assert_true(map->cap == 0 || (map->count + 1) * 2 <= map->cap + 2);
}

static int claim(struct model *m, int k, int fd, int *recorded)
{
	return sockmap_claim(&m->map, fake_sys(), id_of(k), fd, model_holds, m, recorded);
}

static int pass(struct model *m, int k, int fd, int *recorded)
{
	return sockmap_pass(&m->map, fake_sys(), id_of(k), fd, model_holds, m, recorded);
}

static void test_claim_and_release(void **state)
{
	struct model *m = *state;
	int rec;

	assert_int_equal(claim(m, 1, 5, &rec), CO_SOCK_MINE);
	assert_true(rec);
	m->owner[1] = 5;
	m->held_by[5] = id_of(1);
	/* The same fd again: fine. */
	assert_int_equal(claim(m, 1, 5, &rec), CO_SOCK_MINE);
	assert_map_matches(m);

	/* Once fd 5 no longer holds it, the next claim takes it over. */
	m->held_by[5] = 0;
	assert_int_equal(claim(m, 1, 6, &rec), CO_SOCK_MINE);
	m->owner[1] = 6;
	m->held_by[6] = id_of(1);
	assert_map_matches(m);

	sockmap_release(&m->map, id_of(1), 6);
	m->owner[1] = -1;
	assert_map_matches(m);
	assert_int_equal(m->map.count, 0);

	/* Releasing what was never there. */
	sockmap_release(&m->map, id_of(2), 6);
	assert_map_matches(m);
}

/* A second fd on a coalesced socket passes and is told the owner; once the
 * owner is stopped, the socket stays passing until every fd let go. */
static void test_shared_socket_passes_until_all_fds_close(void **state)
{
	struct model *m = *state;
	int rec;

	assert_int_equal(claim(m, 1, 5, &rec), CO_SOCK_MINE);
	m->owner[1] = 5;
	m->held_by[5] = id_of(1);
	assert_int_equal(claim(m, 1, 6, &rec), 5);
	assert_true(rec);
	m->passing[1] = 1;
	m->held_by[6] = id_of(1);
	assert_map_matches(m);
	/* The owner is stopped. */
	assert_int_equal(pass(m, 1, 5, &rec), -1);
	assert_true(rec);
	m->owner[1] = -1;
	m->passing[1] = 2;
	assert_map_matches(m);
	/* The owner closes; a third fd of the socket must still pass. */
	sockmap_release(&m->map, id_of(1), 5);
	m->passing[1] = 1;
	m->held_by[5] = 0;
	assert_int_equal(claim(m, 1, 7, &rec), CO_SOCK_PASS);
	assert_true(rec);
	m->passing[1] = 2;
	assert_map_matches(m);
	sockmap_release(&m->map, id_of(1), 6);
	sockmap_release(&m->map, id_of(1), 7);
	m->passing[1] = 0;
	assert_map_matches(m);
	assert_int_equal(m->map.count, 0);
	/* Now the socket can be coalesced again. */
	assert_int_equal(claim(m, 1, 8, &rec), CO_SOCK_MINE);
}

/* An fd stopped before any fd coalesced its socket (an unconnected socket
 * that is dup'ed, or handed to stdio) keeps every other fd from coalescing. */
static void test_pass_before_any_claim(void **state)
{
	struct model *m = *state;
	int rec;

	assert_int_equal(pass(m, 3, 9, &rec), -1);
	assert_true(rec);
	assert_int_equal(claim(m, 3, 10, &rec), CO_SOCK_PASS);
	m->passing[3] = 2;
	assert_map_matches(m);
	/* An fd without a table entry (-1) passes for good: it is never
	 * released. */
	assert_int_equal(claim(m, 4, 11, &rec), CO_SOCK_MINE);
	m->owner[4] = 11;
	m->held_by[11] = id_of(4);
	assert_int_equal(pass(m, 4, -1, &rec), 11);
	m->passing[4] = 1;
	assert_map_matches(m);
}

static void test_release_on_an_empty_map(void **state)
{
	struct model *m = *state;

	sockmap_release(&m->map, 12345, 3);
	assert_int_equal(m->map.count, 0);
	assert_null(m->map.slots);
}

/* Without memory for a new socket, the map is incomplete: from then on no
 * socket it does not know yet is coalesced (one of its fds may pass
 * unrecorded), while those it knows keep working. */
static void test_claim_without_memory(void **state)
{
	struct model *m = *state;
	int rec;

	assert_int_equal(claim(m, 1, 5, &rec), CO_SOCK_MINE);
	m->owner[1] = 5;
	m->held_by[5] = id_of(1);
	fake_fail_alloc(1);
	/* 32 more ids fill the first table (64 slots, at most half full). */
	for (int k = 2; k <= 33; k++) {
		int r = claim(m, k, 20, &rec);

		if (r == CO_SOCK_PASS) {
			assert_false(rec);
			assert_true(m->map.incomplete);
			break;
		}
		assert_int_equal(r, CO_SOCK_MINE);
		m->owner[k] = 20;
	}
	assert_true(m->map.incomplete);
	/* A new socket passes even with memory back; a known one works. */
	assert_int_equal(claim(m, 40, 21, &rec), CO_SOCK_PASS);
	assert_int_equal(claim(m, 1, 5, &rec), CO_SOCK_MINE);
	assert_map_matches(m);
}

/* Random claims, passes and releases against the model. */
static void test_random_claims_and_releases(void **state)
{
	struct model *m = *state;
	unsigned x = 4242;
	int step, role[MODEL_FDS]; /* 0 none, 1 owner, 2 passing (of held_by) */

	memset(role, 0, sizeof(role));
	for (step = 0; step < 20000; step++) {
		int k, fd, r, expect, rec, op;

		x = x * 1103515245u + 12345u;
		k = (int)((x >> 8) % MODEL_IDS);
		fd = (int)((x >> 20) % MODEL_FDS);
		op = (int)((x >> 4) % 3);
		if (role[fd] && (op < 2 || m->held_by[fd] != id_of(k))) {
			/* fd holds another socket (or this one): let it go first. */
			for (k = 0; id_of(k) != m->held_by[fd]; k++)
				;
			sockmap_release(&m->map, id_of(k), fd);
			if (m->owner[k] == fd)
				m->owner[k] = -1;
			else
				m->passing[k]--;
			m->held_by[fd] = 0;
			role[fd] = 0;
		} else if (op == 0 || (op == 2 && role[fd] == 0)) {
			int own = m->owner[k];

			r = claim(m, k, fd, &rec);
			if (m->passing[k])
				expect = CO_SOCK_PASS;
			else if (own >= 0 && own != fd && model_holds(m, own, id_of(k)))
				expect = own;
			else
				expect = CO_SOCK_MINE;
			if (r != expect)
				fail_msg("step %d: claim of id %d by fd %d gave %d, expected %d", step, k,
					 fd, r, expect);
			assert_true(rec);
			m->held_by[fd] = id_of(k);
			if (r == CO_SOCK_MINE) {
				m->owner[k] = fd;
				role[fd] = 1;
			} else {
				m->passing[k]++;
				role[fd] = 2;
			}
		} else if (role[fd] == 1) {
			/* The owner is stopped. */
			r = pass(m, k, fd, &rec);
			assert_int_equal(r, -1);
			m->owner[k] = -1;
			m->passing[k]++;
			role[fd] = 2;
		}
		assert_map_matches(m);
	}
	/* It grew and shrank in use. */
	assert_true(m->map.cap >= 64);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_claim_and_release),
		T(test_shared_socket_passes_until_all_fds_close),
		T(test_pass_before_any_claim),
		T(test_release_on_an_empty_map),
		T(test_claim_without_memory),
		T(test_random_claims_and_releases),
	};

	return cmocka_run_group_tests_name("sockmap", tests, NULL, NULL);
}

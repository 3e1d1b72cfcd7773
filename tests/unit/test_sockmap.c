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

/* The model: for each id (index), the fd recorded for it, or -1. And which
 * fds still hold which id, as still_holds is asked. */
struct model {
	int fd_of[MODEL_IDS];
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
		m->fd_of[i] = -1;
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
		if (k == MODEL_IDS || m->fd_of[k] != map->slots[i].fd)
			fail_msg("slot %zu holds id %llx fd %d, not in the model", i,
				 (unsigned long long)id, map->slots[i].fd);
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
		j += m->fd_of[k] >= 0;
	assert_int_equal(j, count);
	assert_true(map->cap == 0 || (map->count + 1) * 2 <= map->cap + 2);
}

static void test_claim_and_release(void **state)
{
	struct model *m = *state;

	assert_int_equal(sockmap_claim(&m->map, fake_sys(), id_of(1), 5, model_holds, m), -1);
	m->fd_of[1] = 5;
	m->held_by[5] = id_of(1);
	/* Another fd on the same socket: told who has it. */
	assert_int_equal(sockmap_claim(&m->map, fake_sys(), id_of(1), 6, model_holds, m), 5);
	/* The same fd again: fine. */
	assert_int_equal(sockmap_claim(&m->map, fake_sys(), id_of(1), 5, model_holds, m), -1);
	assert_map_matches(m);

	/* Once fd 5 no longer holds it, the next claim takes it over. */
	m->held_by[5] = 0;
	assert_int_equal(sockmap_claim(&m->map, fake_sys(), id_of(1), 6, model_holds, m), -1);
	m->fd_of[1] = 6;
	m->held_by[6] = id_of(1);
	assert_map_matches(m);

	/* Releasing by an fd that does not hold it changes nothing. */
	sockmap_release(&m->map, id_of(1), 5);
	assert_map_matches(m);
	sockmap_release(&m->map, id_of(1), 6);
	m->fd_of[1] = -1;
	assert_map_matches(m);
	assert_int_equal(m->map.count, 0);

	/* Releasing what was never there. */
	sockmap_release(&m->map, id_of(2), 6);
	assert_map_matches(m);
}

static void test_release_on_an_empty_map(void **state)
{
	struct model *m = *state;

	sockmap_release(&m->map, 12345, 3);
	assert_int_equal(m->map.count, 0);
	assert_null(m->map.slots);
}

static void test_claim_without_memory(void **state)
{
	struct model *m = *state;

	fake_fail_alloc(1);
	assert_int_equal(sockmap_claim(&m->map, fake_sys(), id_of(1), 5, model_holds, m), -2);
	assert_int_equal(m->map.count, 0);
	assert_int_equal(sockmap_claim(&m->map, fake_sys(), id_of(1), 5, model_holds, m), -1);
	m->fd_of[1] = 5;
	assert_map_matches(m);
}

static void test_random_claims_and_releases(void **state)
{
	struct model *m = *state;
	unsigned x = 4242;
	int step;

	for (step = 0; step < 20000; step++) {
		int k, fd, r, expect;

		x = x * 1103515245u + 12345u;
		k = (int)((x >> 8) % MODEL_IDS);
		fd = (int)((x >> 20) % MODEL_FDS);
		if ((x >> 4) % 3) {
			int had = m->fd_of[k];

			r = sockmap_claim(&m->map, fake_sys(), id_of(k), fd, model_holds, m);
			expect = had >= 0 && had != fd && model_holds(m, had, id_of(k)) ? had : -1;
			if (r != expect)
				fail_msg("step %d: claim of id %d by fd %d gave %d, expected %d", step, k,
					 fd, r, expect);
			if (r == -1) {
				m->fd_of[k] = fd;
				/* The fd now holds this id (and no longer its old one). */
				m->held_by[fd] = id_of(k);
			}
		} else {
			sockmap_release(&m->map, id_of(k), fd);
			if (m->fd_of[k] == fd)
				m->fd_of[k] = -1;
			if (m->held_by[fd] == id_of(k))
				m->held_by[fd] = 0;
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
		T(test_release_on_an_empty_map),
		T(test_claim_without_memory),
		T(test_random_claims_and_releases),
	};

	return cmocka_run_group_tests_name("sockmap", tests, NULL, NULL);
}

/* Open-addressing hash map from socket identity to fd, with linear probing
 * and backward-shift deletion. Used only when an fd is classified or closed,
 * never on the write path. */
#include "sockmap.h"

#include <string.h>

static size_t slot_of(const struct co_sockmap *m, uint64_t id)
{
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdULL;
	id ^= id >> 33;
	return (size_t)id & (m->cap - 1);
}

/* Doubles the table (or makes the first one). Returns 0, or -1 on failure. */
static int grow(struct co_sockmap *m, const struct co_sys *sys)
{
	struct co_sockmap_slot *old = m->slots;
	size_t old_cap = m->cap, i, j;
	size_t cap = old_cap ? old_cap * 2 : 64;

	m->slots = sys->alloc(cap * sizeof(*m->slots));
	if (!m->slots) {
		m->slots = old;
		return -1;
	}
	memset(m->slots, 0, cap * sizeof(*m->slots));
	m->cap = cap;
	for (i = 0; i < old_cap; i++) {
		if (!old[i].id)
			continue;
		for (j = slot_of(m, old[i].id); m->slots[j].id; j = (j + 1) & (cap - 1))
			;
		m->slots[j] = old[i];
	}
	sys->free(old);
	return 0;
}

int sockmap_claim(struct co_sockmap *m, const struct co_sys *sys, uint64_t id, int fd,
		  int (*still_holds)(void *arg, int fd, uint64_t id), void *arg)
{
	size_t i;
	int other = -1;

	pthread_mutex_lock(&m->lock);
	if ((m->count + 1) * 2 > m->cap && grow(m, sys) < 0) {
		pthread_mutex_unlock(&m->lock);
		return -2;
	}
	for (i = slot_of(m, id); m->slots[i].id; i = (i + 1) & (m->cap - 1)) {
		if (m->slots[i].id != id)
			continue;
		if (m->slots[i].fd != fd && still_holds(arg, m->slots[i].fd, id))
			other = m->slots[i].fd;
		else
			m->slots[i].fd = fd;
		pthread_mutex_unlock(&m->lock);
		return other;
	}
	m->slots[i].id = id;
	m->slots[i].fd = fd;
	m->count++;
	pthread_mutex_unlock(&m->lock);
	return -1;
}

void sockmap_release(struct co_sockmap *m, uint64_t id, int fd)
{
	size_t i, j, home;

	pthread_mutex_lock(&m->lock);
	if (!m->cap)
		goto out;
	for (i = slot_of(m, id); m->slots[i].id; i = (i + 1) & (m->cap - 1))
		if (m->slots[i].id == id)
			break;
	if (!m->slots[i].id || m->slots[i].fd != fd)
		goto out;
	/* Backward shift: move later entries of the run into the hole when
	 * their home slot is not between the hole and them. */
	for (j = (i + 1) & (m->cap - 1); m->slots[j].id; j = (j + 1) & (m->cap - 1)) {
		home = slot_of(m, m->slots[j].id);
		if (((j - home) & (m->cap - 1)) >= ((j - i) & (m->cap - 1))) {
			m->slots[i] = m->slots[j];
			i = j;
		}
	}
	m->slots[i].id = 0;
	m->count--;
out:
	pthread_mutex_unlock(&m->lock);
}

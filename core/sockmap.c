/* Open-addressing hash map from socket identity to its owner and passing
 * fds, with linear probing and backward-shift deletion. Used only when an fd
 * is classified, stopped or closed, never on the write path. */
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

/* Returns id's slot, or NULL. m's lock is held. */
static struct co_sockmap_slot *lookup(struct co_sockmap *m, uint64_t id)
{
	size_t i;

	if (!m->cap)
		return NULL;
	for (i = slot_of(m, id); m->slots[i].id; i = (i + 1) & (m->cap - 1))
		if (m->slots[i].id == id)
			return &m->slots[i];
	return NULL;
}

/* Adds a slot for id (not in the map), or marks the map incomplete if it
 * cannot grow. Returns the slot or NULL. m's lock is held. */
static struct co_sockmap_slot *insert(struct co_sockmap *m, const struct co_sys *sys,
				      uint64_t id)
{
	size_t i;

	if ((m->count + 1) * 2 > m->cap && grow(m, sys) < 0) {
		m->incomplete = 1;
		return NULL;
	}
	for (i = slot_of(m, id); m->slots[i].id; i = (i + 1) & (m->cap - 1))
		;
	m->slots[i].id = id;
	m->slots[i].owner = -1;
	m->slots[i].passing = 0;
	m->count++;
	return &m->slots[i];
}

/* Removes slot s from the map. m's lock is held. */
static void remove_slot(struct co_sockmap *m, struct co_sockmap_slot *s)
{
	size_t i = (size_t)(s - m->slots), j, home;

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
}

int sockmap_claim(struct co_sockmap *m, const struct co_sys *sys, uint64_t id, int fd,
		  int (*still_holds)(void *arg, int fd, uint64_t id), void *arg,
		  int *recorded)
{
	struct co_sockmap_slot *s;
	int r = CO_SOCK_MINE;

	*recorded = 0;
	pthread_mutex_lock(&m->lock);
	s = lookup(m, id);
	if (!s) {
		s = m->incomplete ? NULL : insert(m, sys, id);
		if (!s) {
			r = CO_SOCK_PASS;
			goto out;
		}
	}
	*recorded = 1;
	if (s->passing) {
		s->passing++;
		r = CO_SOCK_PASS;
	} else if (s->owner >= 0 && s->owner != fd && still_holds(arg, s->owner, id)) {
		s->passing++;
		r = s->owner;
	} else {
		s->owner = fd;
	}
out:
	pthread_mutex_unlock(&m->lock);
	return r;
}

int sockmap_pass(struct co_sockmap *m, const struct co_sys *sys, uint64_t id, int fd,
		 int (*still_holds)(void *arg, int fd, uint64_t id), void *arg, int *recorded)
{
	struct co_sockmap_slot *s;
	int owner = -1;

	pthread_mutex_lock(&m->lock);
	s = lookup(m, id);
	if (!s)
		s = insert(m, sys, id);
	*recorded = s != NULL;
	if (s) {
		if (s->owner >= 0 && s->owner != fd && still_holds(arg, s->owner, id))
			owner = s->owner;
		else if (s->owner == fd)
			s->owner = -1;
		s->passing++;
	}
	pthread_mutex_unlock(&m->lock);
	return owner;
}

int sockmap_owner(struct co_sockmap *m, uint64_t id,
		  int (*still_holds)(void *arg, int fd, uint64_t id), void *arg)
{
	struct co_sockmap_slot *s;
	int owner = -1;

	pthread_mutex_lock(&m->lock);
	s = lookup(m, id);
	if (s && s->owner >= 0 && still_holds(arg, s->owner, id))
		owner = s->owner;
	pthread_mutex_unlock(&m->lock);
	return owner;
}

void sockmap_release(struct co_sockmap *m, uint64_t id, int fd)
{
	struct co_sockmap_slot *s;

	pthread_mutex_lock(&m->lock);
	s = lookup(m, id);
	if (s) {
		/* An fd holds one role for its socket: owner, or passing. */
		if (s->owner == fd)
			s->owner = -1;
		else if (s->passing)
			s->passing--;
		if (s->owner < 0 && s->passing == 0)
			remove_slot(m, s);
	}
	pthread_mutex_unlock(&m->lock);
}

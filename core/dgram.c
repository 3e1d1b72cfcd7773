/* Datagram queues: records in the fd's byte queue, flushed with UDP GSO
 * and sendmmsg. */
#include "dgram.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>

#include "send.h"
#include "stream.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

/* A record of queued datagrams, all to one destination: count datagrams
 * laid end to end, each len bytes but the last, which has last_len (at most
 * len); the first sent of them are out already. Datagrams of one size thus
 * lie as one UDP GSO send takes them: one buffer, no copy at flush. The
 * header, the destination (name_len bytes, 0 for the connected peer) and
 * the payloads are each padded to CO_REC_ALIGN. */
struct co_rec {
	uint32_t len;
	uint32_t last_len;
	uint16_t name_len;
	uint16_t count;
	uint16_t sent;
	uint16_t unused;
};

#define CO_REC_ALIGN 8
#define CO_ALIGN(n) (((n) + CO_REC_ALIGN - 1) & ~(size_t)(CO_REC_ALIGN - 1))
/* Datagrams sent by one sendmmsg at most (the stack holds their headers). */
#define CO_DGRAM_BATCH 64
/* The kernel's limits on one GSO send: its UDP_MAX_SEGMENTS, 128 on recent
 * kernels and 64 on older ones (found out by trying), and the bytes of one
 * IP packet. A record holds at most what the recent kernels take. */
#define CO_GSO_SEGMENTS 128
#define CO_GSO_SEGMENTS_OLD 64
#define CO_GSO_BYTES 65507
/* A sendmmsg batch stops before a record GSO can send only if the record
 * holds this many datagrams: for fewer, the extra system call costs more
 * than GSO saves (measured: random sizes 1..1400, which form many runs of
 * two, took 5% longer when every run split the batch). */
#define CO_GSO_SPLIT_MIN 8

static size_t rec_payload(const struct co_rec *r)
{
	return (size_t)(r->count - 1) * r->len + r->last_len;
}

static size_t rec_size(const struct co_rec *r)
{
	return sizeof(*r) + CO_ALIGN(r->name_len) + CO_ALIGN(rec_payload(r));
}

static struct co_rec *rec_at(struct co_fd *f, size_t off)
{
	return (struct co_rec *)(f->q.data + f->q.head + off);
}

static void *rec_name(struct co_rec *r)
{
	return r->name_len ? (char *)(r + 1) : NULL;
}

static char *rec_data(struct co_rec *r)
{
	return (char *)(r + 1) + CO_ALIGN(r->name_len);
}

/* The size of a record's i-th datagram. */
static size_t rec_len(const struct co_rec *r, unsigned i)
{
	return i + 1 == r->count ? r->last_len : r->len;
}

static int sockopt_int(struct co_ctx *ctx, int fd, int level, int name, int *val)
{
	socklen_t len = sizeof(*val);

	return ctx->sys.getsockopt(fd, level, name, val, &len);
}

int co__dgram_setup(struct co_ctx *ctx, int fd, struct co_fd *f, int family, int connected)
{
	struct co_dgram *d = ctx->sys.alloc(sizeof(*d));
	int v;

	if (!d)
		return -ENOMEM;
	memset(d, 0, sizeof(*d));
	d->family = family;
	d->connected = (unsigned char)connected;
	d->max_len = ctx->cfg.large_bytes;
	if (family == AF_UNIX) {
		/* The kernel refuses a datagram over the send buffer. */
		if (sockopt_int(ctx, fd, SOL_SOCKET, SO_SNDBUF, &v) == 0 && v > 64 &&
		    (size_t)v - 64 < d->max_len)
			d->max_len = (size_t)v - 64;
	} else {
		size_t hdr = family == AF_INET ? 28 : 48, mtu = 1280;

		/* Without "don't fragment" a UDP datagram may be as large as
		 * an IP packet; with it, as the path MTU. */
		if (sockopt_int(ctx, fd, family == AF_INET ? IPPROTO_IP : IPPROTO_IPV6,
				family == AF_INET ? IP_MTU : IPV6_MTU, &v) == 0 && v > (int)hdr)
			mtu = (size_t)v;
		if (sockopt_int(ctx, fd, family == AF_INET ? IPPROTO_IP : IPPROTO_IPV6,
				family == AF_INET ? IP_MTU_DISCOVER : IPV6_MTU_DISCOVER, &v) == 0 &&
		    (v == IP_PMTUDISC_DO || v == IP_PMTUDISC_PROBE) && mtu - hdr < d->max_len)
			d->max_len = mtu - hdr;
		if (d->max_len > 65507)
			d->max_len = 65507;
		/* One segment must fit the path MTU (the minimum when the
		 * destination is not known yet). */
		d->seg_max = mtu - hdr;
		/* GSO sends would join a datagram UDP_CORK holds open. */
		d->gso = sockopt_int(ctx, fd, SOL_UDP, UDP_SEGMENT, &v) == 0 &&
			 !(sockopt_int(ctx, fd, SOL_UDP, UDP_CORK, &v) == 0 && v);
	}
	f->dg = d;
	return 0;
}

void co__dgram_release(struct co_ctx *ctx, struct co_fd *f)
{
	struct co_dgram *d = f->dg;

	/* Gone before it is freed: a signal handler reads f->dg (co__dgram_keep). */
	f->dg = NULL;
	atomic_signal_fence(memory_order_seq_cst);
	ctx->sys.free(d);
}

/* Returns 1 if the kernel accepted a send to this destination before. */
static int dest_known(const struct co_dgram *d, const struct sockaddr *addr, socklen_t len)
{
	unsigned i;

	for (i = 0; i < d->ndest; i++)
		if (d->dest_len[i] == len && memcmp(&d->dest[i], addr, len) == 0)
			return 1;
	return 0;
}

void co__dgram_learn(struct co_fd *f, ssize_t r)
{
	struct co_dgram *d = f->dg;
	unsigned i;

	if (!d || !d->probe_len)
		return;
	if (r >= 0 && !dest_known(d, (struct sockaddr *)&d->probe, d->probe_len)) {
		i = d->ndest < CO_DGRAM_DESTS ? d->ndest++ : d->next_dest++ % CO_DGRAM_DESTS;
		d->dest_len[i] = d->probe_len;
		memcpy(&d->dest[i], &d->probe, d->probe_len);
	}
	d->probe_len = 0;
}

/* Returns the counter for why a send on a datagram socket cannot be queued,
 * or CO_ST_COUNT if it can. Sends the kernel could refuse at once (too
 * large, no destination, one never seen) go to libc, so that the
 * application sees the refusal where it would have. */
static enum co_counter dgram_unsupported(const struct co_dgram *d, int flags, unsigned how,
					 int iovcnt, size_t total, const struct sockaddr *addr,
					 socklen_t addrlen)
{
	if (how & CO_WRITE_CONTROL)
		return CO_ST_passthrough_control;
	if ((flags & ~(MSG_DONTWAIT | MSG_NOSIGNAL)) || iovcnt < 0 || iovcnt > IOV_MAX)
		return CO_ST_passthrough_flags;
	if (total > d->max_len)
		return CO_ST_passthrough_dgram_size;
	if (!addr) {
		if (how & CO_WRITE_ADDR)
			return CO_ST_passthrough_address;
		return d->connected ? CO_ST_COUNT : CO_ST_passthrough_dgram_dest;
	}
	if (addrlen == 0 || addrlen > sizeof(struct sockaddr_storage))
		return CO_ST_passthrough_address;
	if (!dest_known(d, addr, addrlen))
		return CO_ST_passthrough_dgram_dest;
	return CO_ST_COUNT;
}

/* The queue's last record, if a datagram to the same destination of at
 * most its size can join it: the record's size, number of datagrams and
 * bytes stay within one GSO send's, and no shorter one closed it. */
static struct co_rec *joinable(struct co_fd *f, size_t total, const struct sockaddr *addr,
			       socklen_t name_len)
{
	struct co_rec *r;

	if (!f->dg->last || total == 0)
		return NULL;
	r = (struct co_rec *)(f->q.data + f->q.tail - f->dg->last);
	if (r->count >= CO_GSO_SEGMENTS || total > r->len || r->last_len != r->len ||
	    rec_payload(r) + total > CO_GSO_BYTES || r->name_len != name_len ||
	    (name_len && memcmp(rec_name(r), addr, name_len) != 0))
		return NULL;
	return r;
}

/* Copies the total bytes of iov to dst. */
static void copy_in(char *dst, const struct iovec *iov, int iovcnt, size_t total)
{
	int i;

	if (iovcnt == 1) {
		memcpy(dst, iov[0].iov_base, total);
		return;
	}
	for (i = 0; i < iovcnt; i++) {
		memcpy(dst, iov[i].iov_base, iov[i].iov_len);
		dst += iov[i].iov_len;
	}
}

/* Appends one datagram: to the last record when it can join it, else as a
 * new record (its padding left as it is: never sent or compared). Returns
 * 0 or -ENOMEM. */
static int dgram_append(struct co_ctx *ctx, struct co_fd *f, const struct iovec *iov,
			int iovcnt, size_t total, const struct sockaddr *addr, socklen_t addrlen)
{
	socklen_t name_len = addr ? addrlen : 0;
	struct co_rec *r = joinable(f, total, addr, name_len);
	size_t payload, grow;
	char *p;

	if (r) {
		payload = rec_payload(r);
		grow = CO_ALIGN(payload + total) - CO_ALIGN(payload);
		if (pending_reserve(&f->q, &ctx->sys, grow) < 0)
			return -ENOMEM;
		/* The reserve may have moved the queue. */
		r = (struct co_rec *)(f->q.data + f->q.tail - f->dg->last);
		copy_in(rec_data(r) + payload, iov, iovcnt, total);
		r->count++;
		r->last_len = (uint32_t)total;
		pending_commit(&f->q, grow);
		f->dg->last += grow;
	} else {
		struct co_rec n = { .len = (uint32_t)total, .last_len = (uint32_t)total,
				    .name_len = (uint16_t)name_len, .count = 1 };

		if (pending_reserve(&f->q, &ctx->sys, rec_size(&n)) < 0)
			return -ENOMEM;
		p = pending_tail(&f->q);
		memcpy(p, &n, sizeof(n));
		if (name_len)
			memcpy(p + sizeof(n), addr, name_len);
		copy_in(rec_data((struct co_rec *)p), iov, iovcnt, total);
		pending_commit(&f->q, rec_size(&n));
		f->dg->last = rec_size(&n);
	}
	f->dg->msgs++;
	f->writes++;
	f->wbytes += total;
	return 0;
}

ssize_t co__dgram_write(struct co_ctx *ctx, int fd, struct co_fd *f, const struct iovec *iov,
			int iovcnt, int flags, unsigned how, const struct sockaddr *addr,
			socklen_t addrlen)
{
	struct co_dgram *d = f->dg;
	enum co_counter reason;
	size_t total = 0;
	int i, err;

	/* An error a flush met (ICMP port unreachable...) is this call's, as
	 * the kernel would have given it; the socket goes on. */
	err = co__take_error(ctx, f);
	if (err)
		return -err;
	for (i = 0; i < iovcnt && total <= d->max_len; i++)
		total += iov[i].iov_len;
	reason = dgram_unsupported(d, flags, how, iovcnt, total, addr, addrlen);
	if (reason == CO_ST_passthrough_dgram_dest && addr) {
		/* Learnt once the kernel accepted it (co__dgram_learn). */
		d->probe_len = addrlen;
		memcpy(&d->probe, addr, addrlen);
	}
	if (reason == CO_ST_COUNT && atomic_load_explicit(&ctx->exiting, memory_order_relaxed))
		reason = CO_ST_passthrough_exiting;
	if (reason == CO_ST_COUNT && ctx->cfg.direct && co__send_at_once(f))
		reason = CO_ST_writes_direct;
	if (reason != CO_ST_COUNT) {
		co_stat_add(&ctx->stats, reason, 1);
		err = co__flush_locked(ctx, fd, f, CO_ST_flush_order, flags & MSG_DONTWAIT);
		if (!err)
			err = -co__take_error(ctx, f);
		if (err) {
			d->probe_len = 0;
			return err;
		}
		if (flags & MSG_MORE)
			d->corked = 1;
		return CO_PASSTHROUGH;
	}
	/* A queue the socket could not take before: try again, and refuse
	 * this one as the kernel would if it still cannot. */
	if (d->msgs >= ctx->cfg.max_msgs || pending_len(&f->q) + total > ctx->cfg.max_bytes) {
		err = co__flush_locked(ctx, fd, f, CO_ST_flush_size, flags & MSG_DONTWAIT);
		if (err && (d->msgs >= ctx->cfg.max_msgs ||
			    pending_len(&f->q) + total > ctx->cfg.max_bytes))
			return err;
	}
	if (dgram_append(ctx, f, iov, iovcnt, total, addr, addrlen) < 0) {
		err = co__flush_locked(ctx, fd, f, CO_ST_flush_order, flags & MSG_DONTWAIT);
		if (err)
			return err;
		co_stat_add(&ctx->stats, CO_ST_passthrough_nomem, 1);
		return CO_PASSTHROUGH;
	}
	co__sync_mark(ctx, fd, f);
	if (d->msgs >= ctx->cfg.max_msgs || pending_len(&f->q) >= ctx->cfg.max_bytes)
		co__flush_deferred(ctx, fd, f, CO_ST_flush_size, flags & MSG_DONTWAIT);
	return (ssize_t)total;
}

/* How co__dgram_keep lays a datagram out in co__signal_writes.buf: this
 * header, the destination (name_len bytes), the payload; unaligned. */
struct co_kept {
	uint16_t len;
	uint16_t name_len;
};

ssize_t co__dgram_keep(struct co_ctx *ctx, int fd, const struct iovec *iov, int iovcnt,
		       int flags, unsigned how, const struct sockaddr *addr, socklen_t addrlen)
{
	struct co_fd *f = co_fd_find(&ctx->fds, fd);
	struct co_kept k = { .name_len = addr ? (uint16_t)addrlen : 0 };
	size_t total = 0, room = CO_SIGNAL_WRITES_MAX - co__signal_writes.len;
	struct co_dgram *d;
	char *p;
	int i;

	if (iovcnt < 0 || ((co__signal_writes.len || co__signal_writes.stop) &&
			   co__signal_writes.fd != fd) ||
	    (co__signal_writes.len && !co__signal_writes.dgram))
		return -1;
	for (i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > room)
			return -1;
		total += iov[i].iov_len;
	}
	/* What the kernel would refuse at once goes to libc, as it does
	 * outside a handler. d is read, never written: the interrupted
	 * operation may be using it. */
	d = f ? f->dg : NULL;
	if (!d || dgram_unsupported(d, flags, how, iovcnt, total, addr, addrlen) != CO_ST_COUNT ||
	    sizeof(k) + k.name_len + total > room)
		return -1;
	k.len = (uint16_t)total;
	p = co__signal_writes.buf + co__signal_writes.len;
	memcpy(p, &k, sizeof(k));
	if (k.name_len)
		memcpy(p + sizeof(k), addr, k.name_len);
	copy_in(p + sizeof(k) + k.name_len, iov, iovcnt, total);
	co__signal_writes.ctx = ctx;
	co__signal_writes.fd = fd;
	co__signal_writes.dgram = 1;
	co__signal_writes.len += sizeof(k) + k.name_len + total;
	co_stat_add(&ctx->stats, CO_ST_writes_from_signal_handlers, 1);
	return (ssize_t)total;
}

/* Sends a kept datagram that cannot join f's queue, after that queue, as the
 * handler's own blocking send would have gone: on a socket that stays full,
 * waiting at most the linger time. What cannot go is dropped and counted. */
static void send_kept_dgram(struct co_ctx *ctx, int fd, struct co_fd *f, struct iovec *iov,
			    void *name, socklen_t name_len)
{
	uint64_t deadline = ctx->sys.now_ns() + ctx->cfg.linger_ns;
	struct msghdr msg = { .msg_name = name, .msg_namelen = name_len, .msg_iov = iov,
			      .msg_iovlen = 1 };
	ssize_t r;

	if (f->dg)
		co__drain_locked(ctx, fd, f, CO_ST_flush_order, deadline);
	do {
		r = ctx->sys.sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (r >= 0)
			return;
	} while (co__wait_room(ctx, fd, r, deadline));
	co_stat_add(&ctx->stats, CO_ST_dgrams_dropped, 1);
	co_stat_add(&ctx->stats, CO_ST_bytes_dropped, iov->iov_len);
	co_log(ctx, CO_LOG_ERROR, "fd %d: a datagram a signal handler sent could not be sent "
	       "(error %d)", fd, (int)-r);
}

void co__dgram_queue_kept(struct co_ctx *ctx, int fd, struct co_fd *f)
{
	struct co_kept k;
	struct iovec iov;
	size_t off = 0;
	char *name;

	while (off + sizeof(k) <= co__signal_writes.len) {
		memcpy(&k, co__signal_writes.buf + off, sizeof(k));
		if (off + sizeof(k) + k.name_len + k.len > co__signal_writes.len)
			break;
		name = k.name_len ? co__signal_writes.buf + off + sizeof(k) : NULL;
		iov.iov_base = co__signal_writes.buf + off + sizeof(k) + k.name_len;
		iov.iov_len = k.len;
		off += sizeof(k) + k.name_len + k.len;
		if (atomic_load(&f->kind) == CO_FD_DGRAM &&
		    dgram_append(ctx, f, &iov, 1, k.len, (struct sockaddr *)name, k.name_len) == 0)
			continue;
		send_kept_dgram(ctx, fd, f, &iov, name, k.name_len);
	}
	co__signal_writes.len = 0;
	co__signal_writes.dgram = 0;
	if (!f->dg)
		return;
	co__sync_mark(ctx, fd, f);
	if (f->dg->msgs >= ctx->cfg.max_msgs || pending_len(&f->q) >= ctx->cfg.max_bytes)
		co__flush_deferred(ctx, fd, f, CO_ST_flush_size, 0);
}

/* Removes the first n datagrams from the queue. */
static void consume(struct co_fd *f, unsigned n)
{
	struct co_rec *r;
	unsigned left;

	while (n) {
		r = rec_at(f, 0);
		left = (unsigned)(r->count - r->sent);
		if (n < left) {
			r->sent = (uint16_t)(r->sent + n);
			f->dg->msgs -= n;
			return;
		}
		n -= left;
		f->dg->msgs -= left;
		pending_consume(&f->q, rec_size(r));
	}
	if (!pending_len(&f->q))
		f->dg->last = 0;
}

/* Returns 1 if the rest of record r can go as one GSO send: two datagrams
 * or more (its appends kept it within the kernel's other limits), each
 * within one packet. */
static int gso_worth(const struct co_dgram *d, const struct co_rec *r)
{
	return d->gso && r->count - r->sent >= 2 && r->len <= d->seg_max;
}

/* Returns how many datagrams at the head of the queue one GSO send takes
 * (the rest of the first record, as far as the kernel takes), or 0 if it
 * is not to be used: not worth it, or a corked datagram must be completed
 * by the next one alone. */
static unsigned gso_run(struct co_ctx *ctx, struct co_fd *f)
{
	struct co_rec *r = rec_at(f, 0);
	unsigned left = (unsigned)(r->count - r->sent);

	if (f->dg->corked || !gso_worth(f->dg, r))
		return 0;
	if (left > CO_GSO_SEGMENTS_OLD &&
	    (f->dg->gso_fewer || atomic_load_explicit(&ctx->gso_segments_low, memory_order_relaxed)))
		return CO_GSO_SEGMENTS_OLD;
	return left;
}

/* Sends the first n datagrams, all from the first record, as one GSO send.
 * Returns n, 0 if the kernel refused and they are to go another way (GSO
 * no longer used on this socket, or fewer segments per send from now on),
 * or -errno. */
static ssize_t send_gso(struct co_ctx *ctx, int fd, struct co_fd *f, unsigned n, int flags)
{
	union {
		char buf[CMSG_SPACE(sizeof(uint16_t))];
		struct cmsghdr align;
	} ctrl;
	struct co_rec *r = rec_at(f, 0);
	struct iovec iov = { .iov_base = rec_data(r) + (size_t)r->sent * r->len,
			     .iov_len = (size_t)(n - 1) * r->len + rec_len(r, r->sent + n - 1u) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cm;
	uint16_t seg = (uint16_t)r->len;
	ssize_t s;

	msg.msg_name = rec_name(r);
	msg.msg_namelen = r->name_len;
	memset(&ctrl, 0, sizeof(ctrl));
	msg.msg_control = ctrl.buf;
	msg.msg_controllen = sizeof(ctrl.buf);
	cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_UDP;
	cm->cmsg_type = UDP_SEGMENT;
	cm->cmsg_len = CMSG_LEN(sizeof(seg));
	memcpy(CMSG_DATA(cm), &seg, sizeof(seg));
	s = ctx->sys.sendmsg(fd, &msg, flags | MSG_NOSIGNAL);
	co_stat_add(&ctx->stats, CO_ST_flush_syscalls, 1);
	if (s >= 0) {
		co_stat_add(&ctx->stats, CO_ST_dgram_flush_gso, 1);
		co_stat_add(&ctx->stats, CO_ST_flush_bytes, (uint64_t)s);
		/* The kernel refused more segments, and takes this many: an
		 * older kernel, for every socket of the process. */
		if (f->dg->gso_fewer && !atomic_exchange(&ctx->gso_segments_low, 1))
			co_log(ctx, CO_LOG_INFO, "UDP GSO takes %d segments per send at most",
			       CO_GSO_SEGMENTS_OLD);
		f->dg->gso_fewer = 0;
		return n;
	}
	if (s == -EINVAL && n > CO_GSO_SEGMENTS_OLD) {
		/* Perhaps an older kernel: the same datagrams go again, 64
		 * segments per send; if the kernel refuses those too, it is not
		 * the count, and GSO stops on this socket (below). */
		f->dg->gso_fewer = 1;
		return 0;
	}
	if (s == -EIO || s == -EINVAL || s == -ENOPROTOOPT || s == -EOPNOTSUPP) {
		/* No checksum offload on the way out, or the kernel will not:
		 * these datagrams go again one by one, and GSO no more. */
		f->dg->gso = 0;
		co_stat_add(&ctx->stats, CO_ST_dgram_gso_fallbacks, 1);
		co_log(ctx, CO_LOG_INFO, "fd %d: UDP GSO refused (error %d): not used on it",
		       fd, (int)-s);
		return 0;
	}
	return s;
}

/* Sends up to CO_DGRAM_BATCH datagrams from the head with one sendmmsg,
 * stopping before a record GSO can send that is long enough to pay for
 * its own system call; only the first datagram if the kernel holds a
 * corked one open, which it completes. Returns how many went, or -errno. */
static ssize_t send_batch(struct co_ctx *ctx, int fd, struct co_fd *f, int flags)
{
	struct mmsghdr msgs[CO_DGRAM_BATCH];
	struct iovec iov[CO_DGRAM_BATCH];
	struct co_rec *r;
	size_t off = 0;
	unsigned n = 0, max = f->dg->corked ? 1 : CO_DGRAM_BATCH, i;
	ssize_t s;

	memset(msgs, 0, sizeof(msgs));
	while (n < max && off < pending_len(&f->q)) {
		r = rec_at(f, off);
		if (n && gso_worth(f->dg, r) && r->count - r->sent >= CO_GSO_SPLIT_MIN)
			break;
		for (i = r->sent; i < r->count && n < max; i++, n++) {
			iov[n].iov_base = rec_data(r) + (size_t)i * r->len;
			iov[n].iov_len = rec_len(r, i);
			msgs[n].msg_hdr.msg_iov = &iov[n];
			msgs[n].msg_hdr.msg_iovlen = 1;
			msgs[n].msg_hdr.msg_name = rec_name(r);
			msgs[n].msg_hdr.msg_namelen = r->name_len;
		}
		off += rec_size(r);
	}
	s = ctx->sys.sendmmsg(fd, msgs, n, flags | MSG_NOSIGNAL);
	co_stat_add(&ctx->stats, CO_ST_flush_syscalls, 1);
	if (s <= 0)
		return s < 0 ? s : -EAGAIN;
	co_stat_add(&ctx->stats, CO_ST_dgram_flush_sendmmsg, 1);
	for (i = 0; i < (unsigned)s; i++)
		co_stat_add(&ctx->stats, CO_ST_flush_bytes, msgs[i].msg_len);
	return s;
}

int co__dgram_send_queue(struct co_ctx *ctx, int fd, struct co_fd *f, int flags)
{
	struct co_rec *r;
	unsigned run;
	ssize_t s;

	if (f->writes)
		co__fold_writes(ctx, f, 0);
	while (f->dg->msgs) {
		run = gso_run(ctx, f);
		s = run ? send_gso(ctx, fd, f, run, flags) : send_batch(ctx, fd, f, flags);
		if (s > 0) {
			consume(f, (unsigned)s);
			f->dg->corked = 0;
			continue;
		}
		if (s == 0)
			continue;
		if (s == -EINTR && (flags & MSG_DONTWAIT))
			continue;
		if (co__keeps_queue(s)) {
			if (s == -EAGAIN)
				co_stat_add(&ctx->stats, CO_ST_flush_eagain, 1);
			else if (s != -EINTR)
				co_stat_add(&ctx->stats, CO_ST_flush_nobufs, 1);
			return (int)s;
		}
		/* The first datagram was refused: it alone is lost, as it
		 * would have been; its error is the application's. */
		r = rec_at(f, 0);
		co_stat_add(&ctx->stats, CO_ST_dgrams_dropped, 1);
		co_stat_add(&ctx->stats, CO_ST_bytes_dropped, rec_len(r, r->sent));
		co_stat_add(&ctx->stats, CO_ST_deferred_errors, 1);
		co__keep_error(ctx, f, (int)-s);
		co_log(ctx, CO_LOG_INFO, "fd %d: a queued datagram was refused: error %d", fd,
		       (int)-s);
		consume(f, 1);
	}
	return 0;
}

size_t co__dgram_discard(struct co_ctx *ctx, struct co_fd *f)
{
	struct co_rec *r;
	size_t bytes = 0, off = 0;

	while (off < pending_len(&f->q)) {
		r = rec_at(f, off);
		bytes += rec_payload(r) - (size_t)r->sent * r->len;
		off += rec_size(r);
	}
	pending_discard(&f->q);
	co_stat_add(&ctx->stats, CO_ST_dgrams_dropped, f->dg->msgs);
	co__dgram_forget(f);
	return bytes;
}

// SPDX-License-Identifier: GPL-2.0
//
// Patronus traffic classifier: a tcx ingress program that matches packets
// against a priority-ordered policy table, caches the decision per flow (an
// LRU flow table, with a per-CPU cache of recent flows in front of it) and
// steers (skb->mark), drops or passes the packet.

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_RULES 1024 /* power of two: indexes are masked with MAX_RULES-1 */
#define MAX_PATHS 1024
#define MAX_FLOWS 65536
/* Slots of the flow cache, per CPU and family: a power of two, at most
 * 1 << (64 - CACHE_SHIFT) (see cache_shift). */
#define CACHE_SLOTS 1024
#define CACHE_SHIFT 54

#define MARK_BASE 0x50A70000u
#define MARK_MASK 0x0000FFFFu

#define NO_RULE 0xFFFFFFFFu
#define NO_RULE16 0xFFFF /* NO_RULE in a cache slot */
#define NO_DSCP 0xFF

#define TCX_NEXT (-1)
#define TCX_DROP 2

enum action {
	ACTION_PASS = 0,
	ACTION_STEER = 1,
	ACTION_DROP = 2,
};

/* Rules are split by address family in user space: a rule without a prefix
 * is in both lists, a rule with prefixes only in its family's. Every test
 * of a rule is a masked compare, so a rule is tested without branches but
 * the one that ends the test:
 *  - addresses: (addr & mask) ^ want, mask 0 for any;
 *  - protocol and DSCP: pd is proto | dscp << 8 of the packet, compared
 *    under pd_mask (0xff for each field that must match);
 *  - ports: (__u16)(port - lo) <= span, span 0xffff for any. */
struct rule4 {
	__be32 src; /* network order, read as a native-endian word */
	__be32 src_mask;
	__be32 dst;
	__be32 dst_mask;
	__u16 pd;
	__u16 pd_mask;
	__u16 sport_lo;
	__u16 sport_span;
	__u16 dport_lo;
	__u16 dport_span;
	__u32 id;
	__u8 action;
	__u8 set_dscp; /* NO_DSCP: leave it */
	__u8 _pad[2];
};

/* IPv6 addresses are 16 bytes in network order read as two native-endian
 * u64, so a prefix test is two AND/XOR pairs. */
struct rule6 {
	__u64 src[2];
	__u64 src_mask[2];
	__u64 dst[2];
	__u64 dst_mask[2];
	__u16 pd;
	__u16 pd_mask;
	__u16 sport_lo;
	__u16 sport_span;
	__u16 dport_lo;
	__u16 dport_span;
	__u32 id;
	__u8 action;
	__u8 set_dscp;
	__u8 _pad[6];
};

struct ruleset {
	__u32 generation;
	__u32 count4;
	__u32 count6;
	__u32 _pad;
	struct rule4 rules4[MAX_RULES];
	struct rule6 rules6[MAX_RULES];
};

/* Flow keys, one table per family so that an IPv4 flow hashes and compares
 * 16 bytes rather than 40. Ports are in host order, 0 when the packet has
 * none (other protocols, IPv4 fragments after the first). Both are read as
 * 64-bit words (cache hash and compare), hence the alignment. */
struct flow4_key {
	__be32 saddr;
	__be32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 _pad[3];
} __attribute__((aligned(8)));

struct flow6_key {
	__u64 src[2];
	__u64 dst[2];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 _pad[3];
};

struct flow_val {
	__u64 packets;
	__u64 bytes;
	__u64 first_seen; /* jiffies */
	__u64 last_seen;  /* jiffies */
	__u64 id;         /* unique to this entry: cached counts name it */
	__u32 rule_id;
	__u32 mark;
	__u32 generation;
	__u8 action;
	__u8 set_dscp;
	__u8 _pad[2];
};

/* A slot of the per-CPU flow cache: a flow's decision as its entry in the
 * flow table had it, and the packets counted since, which are the entry's
 * but not yet added to it. The flow key follows (struct cached4, cached6).
 *
 * A packet is a hit when the slot holds its key, the slot's epoch is the
 * current one and its last_seen is the current jiffy: the first packet of
 * every tick takes the slow path, which looks up the flow table entry (so
 * the entry's last_seen and LRU position stay those of the flow) and
 * re-resolves the decision.
 *
 * Whenever the slot changes flow (key and id) or gives its counts away,
 * seq is odd: user space, which adds the pending counts to the entries it
 * reads, reads the slot again when seq moved meanwhile. */
struct slot {
	__u32 epoch;     /* the decision holds while this is the global epoch */
	__u32 seq;
	__u32 mark;
	__u16 rule;      /* rule id, NO_RULE16 for none */
	__u8 action;
	__u8 set_dscp;
	__u64 last_seen; /* jiffies */
	__u64 packets;   /* pending: counted here, not in the entry */
	__u64 bytes;
	__u64 id;        /* of the flow table entry the counts belong to; 0: none */
};

struct cached4 {
	struct slot s;
	struct flow4_key key;
};

struct cached6 {
	struct slot s;
	struct flow6_key key;
};

/* Per-CPU state of the cache: serial numbers flow ids from this CPU, and
 * orphan_* counts packets that belong to no flow table entry: pending
 * packets whose entry was gone (expired, or evicted from a full table) when
 * their slot gave them back, and first packets of a flow the table could
 * not take. */
struct cache_counts {
	__u64 serial;
	__u64 orphan_packets;
	__u64 orphan_bytes;
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

/* The rule set lives in a one-element inner map that user space replaces
 * whole: swapping the outer slot is a single pointer exchange, so a packet
 * sees either the old or the new set, never a mix. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__uint(max_entries, 1);
		__type(key, __u32);
		__type(value, struct ruleset);
	});
} rulesets SEC(".maps");

/* The generation of the installed rule set, written (through the
 * memory-mapped .bss) after the swap, so a packet of a known flow needs no
 * rule-set lookup to see that its cached decision is current. 0 until the
 * first rule set. */
volatile __u32 generation;

/* The epoch of cached decisions: a flow cache slot is used only while its
 * epoch is this one. User space moves it on (never to 0) after anything
 * that may change what a flow's next packet gets: a rule set (written after
 * generation), a rule's mark, a path's eligibility, the deletion of flows.
 * 0 until the first rule set. */
volatile __u32 epoch;

/* Non-zero while user space rereads flows whose slots moved during its
 * read: slots then keep their flows and counts, and a packet whose flow is
 * not in its slot is counted in its flow table entry (atomically), so the
 * reread is stable even where flows take each other's slot at every
 * packet. */
volatile __u32 cache_hold;

/* Current path mark per rule id; 0 means no eligible path. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_RULES);
	__type(key, __u32);
	__type(value, __u32);
} steer SEC(".maps");

/* Non-zero when a path index may keep the flows already on it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_PATHS);
	__type(key, __u32);
	__type(value, __u32);
} eligible SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_RULES);
	__type(key, __u32);
	__type(value, struct counter);
} rule_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_PATHS);
	__type(key, __u32);
	__type(value, struct counter);
} path_stats SEC(".maps");

/* One LRU table per family, each of MAX_FLOWS entries. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow4_key);
	__type(value, struct flow_val);
} flows4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow6_key);
	__type(value, struct flow_val);
} flows6 SEC(".maps");

/* The flow cache: per CPU and family, a direct-mapped cache of recent flows
 * in front of the flow tables. Its lookup is inlined by the verifier (no
 * call); a slot is chosen by a multiply-shift hash of the key. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct cached4);
} cache4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct cached6);
} cache6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cache_counts);
} cache_stats SEC(".maps");

/* clang 14 emits the value type of an inner map definition as a forward
 * declaration; this anchor makes it emit struct ruleset in full. */
const struct ruleset *const ruleset_btf_anchor = 0;

/* Set at load time only by benchmarks, to measure the rule walk: no flow
 * table, no cache. */
volatile const __u32 no_flow_cache = 0;
/* Set at load time only by tests and benchmarks: the flow tables without
 * the cache in front (every packet looks up its entry and counts in it), to
 * compare the two. */
volatile const __u32 no_cache = 0;
/* 64 - log2(slots used), 54 to 63: tests use fewer slots to force
 * evictions. */
volatile const __u32 cache_shift = CACHE_SHIFT;
/* Set at load time only by tests: a slot stays valid across ticks (its
 * flow's last_seen is then not kept up), so that they see what the epoch
 * alone does however slow the changes they make. */
volatile const __u32 no_tick = 0;

/* Rules tested per bpf_loop step: a step is a call and a return, which
 * (with return-thunk mitigations) cost about as much as the 8 rules. */
#define BATCH 8

struct match4_ctx {
	struct ruleset *rs;
	__be32 saddr;
	__be32 daddr;
	__u16 sport;
	__u16 dport;
	__u16 pd;
	__u32 n;
	__s32 found;
};

struct match6_ctx {
	struct ruleset *rs;
	__u64 src[2];
	__u64 dst[2];
	__u16 sport;
	__u16 dport;
	__u16 pd;
	__u32 n;
	__s32 found;
};

static long match4(__u32 step, struct match4_ctx *c)
{
#pragma unroll
	for (__u32 j = 0; j < BATCH; j++) {
		__u32 i = step * BATCH + j;
		if (i >= c->n)
			return 1;
		/* n <= MAX_RULES: the mask only tells the verifier so. */
		struct rule4 *r = &c->rs->rules4[i & (MAX_RULES - 1)];
		if (((c->saddr & r->src_mask) ^ r->src) |
		    ((c->daddr & r->dst_mask) ^ r->dst) |
		    ((c->pd ^ r->pd) & r->pd_mask))
			continue;
		if ((__u16)(c->sport - r->sport_lo) > r->sport_span ||
		    (__u16)(c->dport - r->dport_lo) > r->dport_span)
			continue;
		c->found = i;
		return 1;
	}
	return 0;
}

static long match6(__u32 step, struct match6_ctx *c)
{
#pragma unroll
	for (__u32 j = 0; j < BATCH; j++) {
		__u32 i = step * BATCH + j;
		if (i >= c->n)
			return 1;
		/* n <= MAX_RULES: the mask only tells the verifier so. */
		struct rule6 *r = &c->rs->rules6[i & (MAX_RULES - 1)];
		if (((c->src[0] & r->src_mask[0]) ^ r->src[0]) |
		    ((c->src[1] & r->src_mask[1]) ^ r->src[1]) |
		    ((c->dst[0] & r->dst_mask[0]) ^ r->dst[0]) |
		    ((c->dst[1] & r->dst_mask[1]) ^ r->dst[1]) |
		    ((c->pd ^ r->pd) & r->pd_mask))
			continue;
		if ((__u16)(c->sport - r->sport_lo) > r->sport_span ||
		    (__u16)(c->dport - r->dport_lo) > r->dport_span)
			continue;
		c->found = i;
		return 1;
	}
	return 0;
}

static __always_inline __u32 clamp_rules(__u32 n)
{
	return n < MAX_RULES ? n : MAX_RULES;
}

/* What a rule set decides for a flow. */
struct decision {
	__u32 rule_id; /* NO_RULE: no rule matched */
	__u32 gen;     /* of the rule set that decided */
	__u8 action;
	__u8 set_dscp;
};

static __always_inline struct ruleset *current_ruleset(void)
{
	__u32 zero = 0;
	void *inner = bpf_map_lookup_elem(&rulesets, &zero);
	if (!inner)
		return 0;
	return bpf_map_lookup_elem(inner, &zero);
}

/* decide4 and decide6 fill d from the first rule of the current set that
 * matches; they return -1 when there is no rule set. */
static __always_inline int decide4(const struct flow4_key *k, __u16 pd, struct decision *d)
{
	struct ruleset *rs = current_ruleset();
	if (!rs)
		return -1;
	struct match4_ctx mc = {
		.rs = rs,
		.saddr = k->saddr,
		.daddr = k->daddr,
		.sport = k->sport,
		.dport = k->dport,
		.pd = pd,
		.n = clamp_rules(rs->count4),
		.found = -1,
	};
	bpf_loop((mc.n + BATCH - 1) / BATCH, match4, &mc, 0);
	/* The set evaluated, which may already be newer than the published
	 * generation. */
	d->gen = rs->generation;
	if (mc.found >= 0 && mc.found < MAX_RULES) {
		struct rule4 *r = &rs->rules4[mc.found];
		d->rule_id = r->id;
		d->action = r->action;
		d->set_dscp = r->set_dscp;
	}
	return 0;
}

static __always_inline int decide6(const struct flow6_key *k, __u16 pd, struct decision *d)
{
	struct ruleset *rs = current_ruleset();
	if (!rs)
		return -1;
	struct match6_ctx mc = {
		.rs = rs,
		.src = {k->src[0], k->src[1]},
		.dst = {k->dst[0], k->dst[1]},
		.sport = k->sport,
		.dport = k->dport,
		.pd = pd,
		.n = clamp_rules(rs->count6),
		.found = -1,
	};
	bpf_loop((mc.n + BATCH - 1) / BATCH, match6, &mc, 0);
	d->gen = rs->generation;
	if (mc.found >= 0 && mc.found < MAX_RULES) {
		struct rule6 *r = &rs->rules6[mc.found];
		d->rule_id = r->id;
		d->action = r->action;
		d->set_dscp = r->set_dscp;
	}
	return 0;
}

static __always_inline int mark_valid(__u32 mark)
{
	return (mark & ~MARK_MASK) == MARK_BASE && (mark & MARK_MASK) < MAX_PATHS;
}

/* resolve returns the mark a flow of rule_id goes on: it keeps mark while
 * that path is eligible, otherwise it takes the rule's current mark. */
static __always_inline __u32 resolve(__u32 mark, __u32 rule_id)
{
	__u32 *cur = bpf_map_lookup_elem(&steer, &rule_id);
	__u32 want = cur ? *cur : 0;

	if (mark == want)
		return want;
	if (mark_valid(mark)) {
		__u32 idx = mark & MARK_MASK;
		__u32 *ok = bpf_map_lookup_elem(&eligible, &idx);
		if (ok && *ok)
			return mark;
	}
	return want;
}

static __always_inline void count(void *map, __u32 key, __u64 bytes)
{
	struct counter *c = bpf_map_lookup_elem(map, &key);
	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* The header fields a decision and a DSCP rewrite need, packed in a word:
 * dscp and the first two bytes of the IP header (tos_hi, tos_lo). */
#define HDR(dscp, hi, lo) ((__u32)(dscp) | (__u32)(hi) << 8 | (__u32)(lo) << 16)
#define HDR_DSCP(h) ((__u8)(h))
#define HDR_HI(h) ((__u8)((h) >> 8))
#define HDR_LO(h) ((__u8)((h) >> 16))

/* finish applies a decision to the packet: it counts it, drops it or sets
 * its mark, and rewrites its DSCP. rule_id is a rule's id, or NO_RULE (or
 * NO_RULE16) for none. */
static __always_inline int finish(struct __sk_buff *skb, int is4, __u32 h, __u32 rule_id,
				  __u8 action, __u8 set_dscp, __u32 mark, __u64 len)
{
	if (rule_id < MAX_RULES)
		count(&rule_stats, rule_id, len);
	if (action == ACTION_DROP)
		return TCX_DROP;
	if (mark_valid(mark)) {
		skb->mark = mark;
		count(&path_stats, mark & MARK_MASK, len);
	}

	if (set_dscp < 64 && set_dscp != HDR_DSCP(h)) {
		__u8 tos_hi = HDR_HI(h), tos_lo = HDR_LO(h);
		if (is4) {
			__u8 tos = (set_dscp << 2) | (tos_lo & 3);
			__be16 old = bpf_htons(((__u16)tos_hi << 8) | tos_lo);
			__be16 new = bpf_htons(((__u16)tos_hi << 8) | tos);
			bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old, new, 2);
			bpf_skb_store_bytes(skb, ETH_HLEN + 1, &tos, 1, 0);
		} else {
			__u8 tc = (set_dscp << 2) | (((tos_lo >> 4)) & 3);
			__u8 b[2] = {
				(tos_hi & 0xf0) | (tc >> 4),
				(tc << 4) | (tos_lo & 0x0f),
			};
			bpf_skb_store_bytes(skb, ETH_HLEN, b, 2, BPF_F_RECOMPUTE_CSUM);
		}
	}
	return TCX_NEXT;
}

/* The slot of a key: multiply-shift hashing of its 64-bit words, whose top
 * bits depend on every bit of the key. A few multiplies and adds; no call. */
static __always_inline __u32 slot_of4(const struct flow4_key *k)
{
	const __u64 *w = (const __u64 *)k;
	return (w[0] * 0x9E3779B97F4A7C15ull + w[1] * 0xC2B2AE3D27D4EB4Full) >> cache_shift;
}

static __always_inline __u32 slot_of6(const struct flow6_key *k)
{
	const __u64 *w = (const __u64 *)k;
	return (w[0] * 0x9E3779B97F4A7C15ull + w[1] * 0xC2B2AE3D27D4EB4Full +
		w[2] * 0x165667B19E3779F9ull + w[3] * 0xD6E8FEB86659FD93ull +
		w[4] * 0xFF51AFD7ED558CCDull) >> cache_shift;
}

/* key_eq compares two flow keys of a family as 64-bit words. */
static __always_inline int key_eq(const void *a, const void *b, const int is4)
{
	const __u64 *x = a, *y = b;
	__u64 d = (x[0] ^ y[0]) | (x[1] ^ y[1]);
	if (!is4)
		d |= (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4]);
	return d == 0;
}

#define barrier() asm volatile("" ::: "memory")

/* seq_begin and seq_end bracket a change of a slot's flow or pending
 * counts: user space sees seq odd, or moved, and reads again. The stores are
 * ordered by the compiler barriers and, on x86, by the CPU. */
static __always_inline void seq_begin(struct slot *s)
{
	*(volatile __u32 *)&s->seq = s->seq + 1;
	barrier();
}

static __always_inline void seq_end(struct slot *s)
{
	barrier();
	*(volatile __u32 *)&s->seq = s->seq + 1;
}

/* orphan counts packets that belong to no flow table entry. */
static __always_inline void orphan(__u64 packets, __u64 bytes)
{
	__u32 zero = 0;
	struct cache_counts *cs = bpf_map_lookup_elem(&cache_stats, &zero);
	if (cs) {
		cs->orphan_packets += packets;
		cs->orphan_bytes += bytes;
	}
}

/* give_back adds a slot's pending counts to the flow table entry they
 * belong to, the entry of key sk with the slot's id. If that entry is gone
 * (expired by user space, evicted from a full table, or replaced by a new
 * entry of the same key) the counts went with it: they are added to the
 * orphan counters. The add is atomic: another CPU may give back counts of
 * the same flow. Called between seq_begin and seq_end. */
static __always_inline void give_back(void *flows, const void *sk, struct slot *s)
{
	__u64 packets = s->packets, bytes = s->bytes;

	if (!packets)
		return;
	struct flow_val *f = bpf_map_lookup_elem(flows, sk);
	if (f && f->id == s->id) {
		__sync_fetch_and_add(&f->packets, packets);
		__sync_fetch_and_add(&f->bytes, bytes);
	} else {
		orphan(packets, bytes);
	}
	s->packets = 0;
	s->bytes = 0;
}

/* new_id returns an id no other flow table entry has had: a per-CPU serial
 * number and the CPU. */
static __always_inline __u64 new_id(void)
{
	__u32 zero = 0;
	struct cache_counts *cs = bpf_map_lookup_elem(&cache_stats, &zero);
	if (!cs)
		return 0;
	return ++cs->serial << 16 | (bpf_get_smp_processor_id() & 0xffff);
}

/* slow handles a packet that is not a cache hit: its flow is new, or not in
 * this CPU's cache (another flow took its slot, or it never came to this
 * CPU), or its slot's decision is of an older epoch or tick. It looks up
 * the flow table, decides the flow if it is new or was decided by an older
 * rule set, resolves its mark as the hit path of a table without cache
 * would, and puts the flow in the slot c (nil without the cache). */
static __always_inline int slow(struct __sk_buff *skb, const int is4, __u32 h, const void *k,
				void *c, __u32 e)
{
	void *flows = is4 ? (void *)&flows4 : (void *)&flows6;
	struct decision d = {.rule_id = NO_RULE, .action = ACTION_PASS, .set_dscp = NO_DSCP};
	struct flow_val *f = 0;
	__u32 gen = generation;
	__u16 pd;
	int fresh;

	if (!gen)
		return TCX_NEXT; /* no rule set yet */
	if (is4)
		pd = ((const struct flow4_key *)k)->proto | (__u16)HDR_DSCP(h) << 8;
	else
		pd = ((const struct flow6_key *)k)->proto | (__u16)HDR_DSCP(h) << 8;
	__u64 len = skb->len;
	__u64 now = bpf_jiffies64();

	if (!no_flow_cache)
		f = bpf_map_lookup_elem(flows, k);
	fresh = f && f->generation == gen;
	if (!fresh) {
		int err = is4 ? decide4(k, pd, &d) : decide6(k, pd, &d);
		if (err < 0)
			return TCX_NEXT;
	}
	__u32 rule_id = fresh ? f->rule_id : d.rule_id;
	__u8 action = fresh ? f->action : d.action;
	__u8 set_dscp = fresh ? f->set_dscp : d.set_dscp;
	__u32 mark = 0;

	/* A flow keeps its mark while the decision stands, and after a
	 * rule-set change that gives it the same rule, as long as its path is
	 * eligible. */
	if (f && f->rule_id == rule_id)
		mark = f->mark;
	if (action == ACTION_STEER && rule_id != NO_RULE)
		mark = resolve(mark, rule_id);
	else
		mark = 0;
	if (no_flow_cache)
		return finish(skb, is4, h, rule_id, action, set_dscp, mark, len);

	__u64 id;
	if (f) {
		if (!fresh) {
			f->rule_id = rule_id;
			f->action = action;
			f->set_dscp = set_dscp;
			f->generation = d.gen;
		}
		if (f->mark != mark)
			f->mark = mark;
		if (f->last_seen != now)
			f->last_seen = now;
		if (no_cache || !c) {
			/* Plain adds: a flow's packets are nearly always
			 * handled on one CPU, and an atomic add costs more
			 * than the rest of a hit. */
			f->packets++;
			f->bytes += len;
			return finish(skb, is4, h, rule_id, action, set_dscp, mark, len);
		}
		id = f->id;
	} else {
		struct flow_val v = {
			.packets = 1,
			.bytes = len,
			.first_seen = now,
			.last_seen = now,
			.id = new_id(),
			.rule_id = rule_id,
			.mark = mark,
			.generation = d.gen,
			.action = action,
			.set_dscp = set_dscp,
		};
		if (bpf_map_update_elem(flows, k, &v, BPF_NOEXIST)) {
			/* Another CPU inserted the flow meanwhile: count the
			 * packet in its entry, leave the slot alone. (Or the
			 * table could not take it: the packet is counted as
			 * an orphan.) */
			struct flow_val *g = bpf_map_lookup_elem(flows, k);
			if (g) {
				__sync_fetch_and_add(&g->packets, 1);
				__sync_fetch_and_add(&g->bytes, len);
			}
			else
				orphan(1, len);
			return finish(skb, is4, h, rule_id, action, set_dscp, mark, len);
		}
		if (no_cache || !c)
			return finish(skb, is4, h, rule_id, action, set_dscp, mark, len);
		id = v.id;
	}

	/* Into the slot: the packet of a flow that has an entry is counted
	 * there (a new flow's first packet is in its new entry). */
	struct slot *s = c;
	void *sk = c + sizeof(struct slot);
	if (!key_eq(sk, k, is4) || s->id != id) {
		if (cache_hold) {
			if (f) {
				__sync_fetch_and_add(&f->packets, 1);
				__sync_fetch_and_add(&f->bytes, len);
			}
			return finish(skb, is4, h, rule_id, action, set_dscp, mark, len);
		}
		seq_begin(s);
		give_back(flows, sk, s);
		if (is4)
			*(struct flow4_key *)sk = *(const struct flow4_key *)k;
		else
			*(struct flow6_key *)sk = *(const struct flow6_key *)k;
		s->id = id;
		seq_end(s);
	}
	s->epoch = e;
	s->last_seen = now;
	s->mark = mark;
	s->rule = rule_id < MAX_RULES ? rule_id : NO_RULE16;
	s->action = action;
	s->set_dscp = set_dscp;
	if (f) {
		s->packets++;
		s->bytes += len;
	}
	return finish(skb, is4, h, rule_id, action, set_dscp, mark, len);
}

/* The slow path is inlined in each family's branch of classify: each copy
 * has its own lookups of its own family's table, which the verifier turns
 * into direct calls into the hash table as it knows their map. (As a
 * function of its own it would cost a call and a return, about 20 ns on
 * the dev VM, on every first packet.) c is the flow's cache slot, nil
 * without the cache. */
static __always_inline int slow4(struct __sk_buff *skb, __u32 h, const struct flow4_key *k,
			    struct cached4 *c, __u32 e)
{
	return slow(skb, 1, h, k, c, e);
}

static __always_inline int slow6(struct __sk_buff *skb, __u32 h, const struct flow6_key *k,
			    struct cached6 *c, __u32 e)
{
	return slow(skb, 0, h, k, c, e);
}

/* ports reads the ports of a TCP or UDP header at l4 (nil: none) in host
 * order; it returns -1 if the header is cut short. */
static __always_inline int ports(void *l4, void *data_end, __u8 proto, __u16 *sport, __u16 *dport)
{
	*sport = 0;
	*dport = 0;
	if (l4 && (proto == IPPROTO_TCP || proto == IPPROTO_UDP)) {
		__be16 *p = l4;
		if ((void *)(p + 2) > data_end)
			return -1;
		*sport = bpf_ntohs(p[0]);
		*dport = bpf_ntohs(p[1]);
	}
	return 0;
}

/* cache_hit handles a packet whose slot holds its flow with a decision of
 * the current epoch, and has seen a packet this tick: the packet is counted
 * in the slot; the flow table is not touched. */
static __always_inline int cache_hit(struct __sk_buff *skb, int is4, __u32 h, struct slot *s)
{
	__u64 len = skb->len;
	s->packets++;
	s->bytes += len;
	return finish(skb, is4, h, s->rule, s->action, s->set_dscp, s->mark, len);
}

SEC("tc")
int classify(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u16 sport, dport;
	__u32 e, idx;

	if (data + ETH_HLEN > data_end)
		return TCX_NEXT;
	/* Read as one 16-bit word: struct ethhdr is packed, through which
	 * the field would be read a byte at a time. */
	__be16 h_proto = *(__be16 *)(data + offsetof(struct ethhdr, h_proto));

	if (h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + ETH_HLEN;
		if ((void *)(ip + 1) > data_end)
			return TCX_NEXT;
		__u32 ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return TCX_NEXT;
		__u8 proto = ip->protocol;
		__u8 tos_hi = ((__u8 *)ip)[0];
		__u8 tos_lo = ip->tos;
		__u32 h = HDR(tos_lo >> 2, tos_hi, tos_lo);
		/* Only the first fragment carries ports. */
		void *l4 = 0;
		if (!(ip->frag_off & bpf_htons(0x1fff)))
			l4 = (void *)ip + ihl;
		if (ports(l4, data_end, proto, &sport, &dport) < 0)
			return TCX_NEXT;
		struct flow4_key k = {
			.saddr = ip->saddr,
			.daddr = ip->daddr,
			.sport = sport,
			.dport = dport,
			.proto = proto,
		};
		if (!(e = epoch))
			return TCX_NEXT; /* no rule set yet */
		if (no_flow_cache || no_cache)
			return slow4(skb, h, &k, 0, e);
		/* The flow cache: a hit reads and counts in this CPU's slot
		 * of the flow and touches no hash table (see struct slot). */
		idx = slot_of4(&k);
		struct cached4 *c = bpf_map_lookup_elem(&cache4, &idx);
		if (!c) /* cannot be: idx < CACHE_SLOTS */
			return slow4(skb, h, &k, 0, e);
		if (key_eq(&c->key, &k, 1) && c->s.epoch == e &&
		    (no_tick || c->s.last_seen == bpf_jiffies64()))
			return cache_hit(skb, 1, h, &c->s);
		return slow4(skb, h, &k, c, e);
	}
	if (h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + ETH_HLEN;
		if ((void *)(ip6 + 1) > data_end)
			return TCX_NEXT;
		__u8 proto = ip6->nexthdr;
		__u8 tos_hi = ((__u8 *)ip6)[0];
		__u8 tos_lo = ((__u8 *)ip6)[1];
		__u32 h = HDR((((tos_hi & 0x0f) << 4) | (tos_lo >> 4)) >> 2, tos_hi, tos_lo);
		if (ports(ip6 + 1, data_end, proto, &sport, &dport) < 0)
			return TCX_NEXT;
		/* The addresses as two 64-bit words each, read as such: through
		 * struct in6_addr they would be read 32 bits at a time. */
		__u64 *a = (__u64 *)&ip6->saddr;
		struct flow6_key k = {
			.src = {a[0], a[1]},
			.dst = {a[2], a[3]},
			.sport = sport,
			.dport = dport,
			.proto = proto,
		};
		if (!(e = epoch))
			return TCX_NEXT;
		if (no_flow_cache || no_cache)
			return slow6(skb, h, &k, 0, e);
		idx = slot_of6(&k);
		struct cached6 *c = bpf_map_lookup_elem(&cache6, &idx);
		if (!c) /* cannot be: idx < CACHE_SLOTS */
			return slow6(skb, h, &k, 0, e);
		if (key_eq(&c->key, &k, 0) && c->s.epoch == e &&
		    (no_tick || c->s.last_seen == bpf_jiffies64()))
			return cache_hit(skb, 0, h, &c->s);
		return slow6(skb, h, &k, c, e);
	}
	return TCX_NEXT;
}

struct clock_sample {
	__u64 jiffies;
	__u64 mono_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct clock_sample);
} clock SEC(".maps");

/* Run by user space with BPF_PROG_TEST_RUN to relate jiffies to
 * CLOCK_MONOTONIC; never attached. */
SEC("tc")
int sample_clock(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct clock_sample *s = bpf_map_lookup_elem(&clock, &zero);
	if (s) {
		s->jiffies = bpf_jiffies64();
		s->mono_ns = bpf_ktime_get_ns();
	}
	return TCX_NEXT;
}

char __license[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
//
// Patronus traffic classifier: a tcx ingress program that matches packets
// against a priority-ordered policy table, caches the decision per flow and
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

#define MARK_BASE 0x50A70000u
#define MARK_MASK 0x0000FFFFu

#define NO_RULE 0xFFFFFFFFu
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
 * none (other protocols, IPv4 fragments after the first). */
struct flow4_key {
	__be32 saddr;
	__be32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 _pad[3];
};

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
	__u32 rule_id;
	__u32 mark;
	__u32 generation;
	__u8 action;
	__u8 set_dscp;
	__u8 _pad[2];
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

/* clang 14 emits the value type of an inner map definition as a forward
 * declaration; this anchor makes it emit struct ruleset in full. */
const struct ruleset *const ruleset_btf_anchor = 0;

/* Set at load time only by benchmarks, to measure the rule walk. */
volatile const __u32 no_flow_cache = 0;

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

/* New flows are inserted by functions of their own: inlined, the two
 * updates would be merged into one on a chosen map, which the verifier
 * cannot turn into a direct call. */
static __noinline void insert4(const struct flow4_key *k, const struct flow_val *v)
{
	bpf_map_update_elem(&flows4, k, v, BPF_NOEXIST);
}

static __noinline void insert6(const struct flow6_key *k, const struct flow_val *v)
{
	bpf_map_update_elem(&flows6, k, v, BPF_NOEXIST);
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

/* The header fields a decision and a DSCP rewrite need: dscp and the first
 * two bytes of the IP header (tos_hi, tos_lo). */
struct hdr {
	__u8 dscp;
	__u8 tos_hi;
	__u8 tos_lo;
};

/* finish applies a decision to the packet: it counts it, drops it or sets
 * its mark, and rewrites its DSCP. */
static __always_inline int finish(struct __sk_buff *skb, int is4, struct hdr h, __u32 rule_id,
				  __u8 action, __u8 set_dscp, __u32 mark, __u64 len)
{
	if (rule_id != NO_RULE)
		count(&rule_stats, rule_id, len);
	if (action == ACTION_DROP)
		return TCX_DROP;
	if (mark_valid(mark)) {
		skb->mark = mark;
		count(&path_stats, mark & MARK_MASK, len);
	}

	if (set_dscp < 64 && set_dscp != h.dscp) {
		if (is4) {
			__u8 tos = (set_dscp << 2) | (h.tos_lo & 3);
			__be16 old = bpf_htons(((__u16)h.tos_hi << 8) | h.tos_lo);
			__be16 new = bpf_htons(((__u16)h.tos_hi << 8) | tos);
			bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old, new, 2);
			bpf_skb_store_bytes(skb, ETH_HLEN + 1, &tos, 1, 0);
		} else {
			__u8 tc = (set_dscp << 2) | (((h.tos_lo >> 4)) & 3);
			__u8 b[2] = {
				(h.tos_hi & 0xf0) | (tc >> 4),
				(tc << 4) | (h.tos_lo & 0x0f),
			};
			bpf_skb_store_bytes(skb, ETH_HLEN, b, 2, BPF_F_RECOMPUTE_CSUM);
		}
	}
	return TCX_NEXT;
}

/* hit handles a packet of a known flow whose decision is current: the
 * common case, kept apart so that it carries nothing of a decision. */
static __always_inline int hit(struct __sk_buff *skb, int is4, struct hdr h, struct flow_val *f)
{
	__u32 rule_id = f->rule_id;
	__u8 action = f->action;
	__u32 mark = 0;

	if (action == ACTION_STEER && rule_id != NO_RULE)
		mark = resolve(f->mark, rule_id);
	if (f->mark != mark)
		f->mark = mark;
	/* Plain adds: a flow's packets are nearly always handled on one CPU,
	 * and an atomic add costs more than the rest of a hit. The rule and
	 * path counters are exact. Flow times are in jiffies: one tick is
	 * plenty for flow ages, and reading it costs nothing next to a clock
	 * read. */
	__u64 len = skb->len;
	__u64 now = bpf_jiffies64();
	f->packets++;
	f->bytes += len;
	if (f->last_seen != now)
		f->last_seen = now;
	return finish(skb, is4, h, rule_id, action, f->set_dscp, mark, len);
}

/* decided handles a packet whose flow is new (f is nil) or was decided by
 * an older rule set: d is the current set's decision. */
static __always_inline int decided(struct __sk_buff *skb, int is4, struct hdr h, struct flow_val *f,
				   const struct decision *d, const void *key)
{
	__u32 rule_id = d->rule_id, mark = 0;
	__u8 action = d->action, set_dscp = d->set_dscp;

	/* The same rule after a rule-set change keeps its path. */
	if (f && f->rule_id == rule_id)
		mark = f->mark;
	if (action == ACTION_STEER && rule_id != NO_RULE)
		mark = resolve(mark, rule_id);
	else
		mark = 0;

	__u64 len = skb->len;
	__u64 now = bpf_jiffies64();
	if (f) {
		f->rule_id = rule_id;
		f->action = action;
		f->set_dscp = set_dscp;
		if (f->mark != mark)
			f->mark = mark;
		f->generation = d->gen;
		f->packets++;
		f->bytes += len;
		if (f->last_seen != now)
			f->last_seen = now;
	} else if (!no_flow_cache) {
		struct flow_val v = {
			.packets = 1,
			.bytes = len,
			.first_seen = now,
			.last_seen = now,
			.rule_id = rule_id,
			.mark = mark,
			.generation = d->gen,
			.action = action,
			.set_dscp = set_dscp,
		};
		if (is4)
			insert4(key, &v);
		else
			insert6(key, &v);
	}
	return finish(skb, is4, h, rule_id, action, set_dscp, mark, len);
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

SEC("tc")
int classify(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct flow_val *f = 0;
	struct decision d = {.rule_id = NO_RULE, .action = ACTION_PASS, .set_dscp = NO_DSCP};
	struct hdr h;
	__u16 sport, dport;
	__u32 gen;

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
		h.tos_hi = ((__u8 *)ip)[0];
		h.tos_lo = ip->tos;
		h.dscp = h.tos_lo >> 2;
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
		if (!(gen = generation))
			return TCX_NEXT; /* no rule set yet */
		/* Each family has its own lookup, followed by its own code: the
		 * verifier inlines a lookup only where the map is known, so the
		 * two calls must not be merged into one on a chosen map. */
		if (!no_flow_cache)
			f = bpf_map_lookup_elem(&flows4, &k);
		if (f && f->generation == gen)
			return hit(skb, 1, h, f);
		if (decide4(&k, proto | (__u16)h.dscp << 8, &d) < 0)
			return TCX_NEXT;
		return decided(skb, 1, h, f, &d, &k);
	}
	if (h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + ETH_HLEN;
		if ((void *)(ip6 + 1) > data_end)
			return TCX_NEXT;
		__u8 proto = ip6->nexthdr;
		h.tos_hi = ((__u8 *)ip6)[0];
		h.tos_lo = ((__u8 *)ip6)[1];
		h.dscp = (((h.tos_hi & 0x0f) << 4) | (h.tos_lo >> 4)) >> 2;
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
		if (!(gen = generation))
			return TCX_NEXT;
		if (!no_flow_cache)
			f = bpf_map_lookup_elem(&flows6, &k);
		if (f && f->generation == gen)
			return hit(skb, 0, h, f);
		if (decide6(&k, proto | (__u16)h.dscp << 8, &d) < 0)
			return TCX_NEXT;
		return decided(skb, 0, h, f, &d, &k);
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
